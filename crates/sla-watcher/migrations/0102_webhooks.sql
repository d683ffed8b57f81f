-- Webhook deliveries of escalations to partners that asked for them: retried
-- with backoff; a delivery that keeps failing ends 'dead', visible to operators.
CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,
    escalation_id   uuid        NOT NULL REFERENCES escalations (id),
    url             text        NOT NULL,
    body            bytea       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending',   -- pending, delivered, dead
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

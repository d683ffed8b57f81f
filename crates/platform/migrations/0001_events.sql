-- The event plumbing every service schema carries (the search_path is the
-- service's schema when this runs). Service migrations use versions >= 100.

-- Transactional outbox: written in the same transaction as the state change,
-- published in `seq` order by the relay, then marked sent.
CREATE TABLE outbox (
    seq          bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    subject      text        NOT NULL,
    ce_type      text        NOT NULL,
    ce_source    text        NOT NULL,
    ce_subject   text        NOT NULL,
    dataschema   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    traceparent  text,
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Idempotent consumers: an event id is applied once per consumer; the row is
-- written in the same transaction as the consumer's effects.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_processed_at ON inbox (processed_at);

-- Events a consumer could not apply after its bounded attempts. An operator
-- sees them here (and as a metric) and sets replay_requested to try again.
CREATE TABLE parked_events (
    id               bigserial   PRIMARY KEY,
    consumer         text        NOT NULL,
    event_id         uuid,
    subject          text        NOT NULL,
    headers          jsonb       NOT NULL,
    payload          bytea       NOT NULL,
    error            text        NOT NULL,
    attempts         integer     NOT NULL,
    parked_at        timestamptz NOT NULL DEFAULT now(),
    replay_requested boolean     NOT NULL DEFAULT false,
    replayed_at      timestamptz,
    UNIQUE (consumer, event_id)
);
CREATE INDEX parked_events_replay ON parked_events (consumer) WHERE replay_requested;

-- request_id idempotency (AIP-155): the first request under a key stores its
-- response in the same transaction as its effects; a retry gets that response.
CREATE TABLE idempotency_keys (
    method     text        NOT NULL,
    request_id text        NOT NULL,
    request    bytea       NOT NULL,   -- SHA-256 of the encoded request (never the request: it may hold personal data)
    response   bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, request_id)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

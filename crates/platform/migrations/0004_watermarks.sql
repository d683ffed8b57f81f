-- Low watermarks (see events/watermark.rs).

-- When the writer recorded an event, where that differs from when it says it
-- happened (an action recorded after the fact, within the producer's bound);
-- NULL means the same instant. The relay compares it with the watermarks it
-- has published to count events that arrive below one.
ALTER TABLE outbox ADD COLUMN recorded_at timestamptz;

-- What a consumer knows of each producer's stream: the latest watermark it
-- applied (`latest_before`, at stream sequence `latest_seq`, both the maxima
-- seen, which is sound: everything recorded before the largest instant is at
-- or below the largest sequence), and the instant it may act on
-- (`effective_before`): a watermark takes effect only once the consumer's
-- acknowledgement floor on the server has passed its sequence, so every event
-- before it was applied, parked or is still being retried.
CREATE TABLE watermarks (
    consumer         text        NOT NULL,
    producer         text        NOT NULL,
    latest_before    timestamptz NOT NULL,
    latest_seq       bigint      NOT NULL,
    effective_before timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, producer)
);

-- Parked events by the aggregate they are about, so a consumer can tell which
-- subjects have an input it could not apply.
CREATE INDEX parked_events_by_subject ON parked_events ((headers ->> 'ce-subject')) WHERE replayed_at IS NULL;

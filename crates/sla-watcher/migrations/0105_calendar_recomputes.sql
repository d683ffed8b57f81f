-- A calendar change recomputes the clocks on it in resumable steps (engine.rs,
-- `recompute_calendars`): the change records a job here, in the transaction
-- that stores the calendar; a background loop recomputes its subjects a batch
-- at a time, each batch in its own transaction that advances the cursor, so a
-- failure midway loses nothing and redoes at most one batch. A newer revision
-- of the same calendar restarts its job from the beginning.
CREATE TABLE calendar_recomputes (
    calendar_id  text        PRIMARY KEY,
    revision     bigint      NOT NULL,
    -- Clocks that ended before this instant are final; NULL: open clocks only.
    ended_since  timestamptz,
    -- The last subject recomputed, in (kind, id) order.
    after_kind   text        NOT NULL DEFAULT '',
    after_id     uuid        NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- Hours overrides now apply only to the weekdays they name, by default the
-- calendar's working weekdays (they used to turn Ramadan weekends into working
-- days): every open clock is recomputed once under that rule.
INSERT INTO calendar_recomputes (calendar_id, revision) SELECT id, revision FROM calendars;

CREATE INDEX clocks_by_calendar_subject ON clocks (calendar_id, subject_kind, subject_id);

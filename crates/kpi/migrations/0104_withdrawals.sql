-- Retractions: an SLA breach or escalation the watcher withdrew (it turned
-- out wrong) counts as never having happened. Its facts are deleted, and its
-- event id is kept here so that, in whatever order the two events are
-- applied (live or in a rebuild), the withdrawn event's facts are never
-- written afterwards.
CREATE TABLE withdrawn_events (
    event_id     uuid        PRIMARY KEY,
    withdrawn_by uuid        NOT NULL,
    withdrawn_at timestamptz NOT NULL
);

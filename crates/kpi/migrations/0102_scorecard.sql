-- A scorecard reads one municipality's (or one partner's) facts of a period,
-- and the backlog at the period's end. Both used to search every fact of the
-- municipality; with ten million facts that took seconds.
--
-- State facts (case_status, resolve_overdue) hold until the subject's next
-- fact of the same kind. `states` keeps them beside `facts` with that next
-- instant in `until` (NULL while a state is the latest), maintained by the
-- projection as facts arrive in any order; `facts` stays insert-only. The
-- backlog at an instant is then the open states whose span contains it, read
-- through a GiST index that holds open states only (and what a count of them
-- reads, so the table is not visited).
CREATE TABLE states (
    event_id     uuid             NOT NULL,
    kind         text             NOT NULL,
    subject      text             NOT NULL,
    occurred_at  timestamptz      NOT NULL,
    until        timestamptz,
    municipality text             NOT NULL,
    partner      text             NOT NULL,
    category     text             NOT NULL,
    value        double precision NOT NULL,
    PRIMARY KEY (event_id, kind)
);
CREATE INDEX states_by_subject ON states (subject, kind, occurred_at, event_id);

INSERT INTO states (event_id, kind, subject, occurred_at, until, municipality, partner,
                    category, value)
SELECT event_id, kind, subject, occurred_at,
       lead(occurred_at) OVER (PARTITION BY subject, kind ORDER BY occurred_at, event_id),
       municipality, partner, category, value
  FROM facts
 WHERE kind IN ('case_status', 'resolve_overdue');

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE INDEX states_open
    ON states USING gist (kind, municipality, partner, tstzrange(occurred_at, until, '[)'))
       INCLUDE (occurred_at, until, subject)
 WHERE value = 1;

-- A period's facts of a kind for one municipality, or one partner, read from
-- the index alone (the value, and what the scorecard groups or joins by).
DROP INDEX facts_latest_by_municipality;
CREATE INDEX facts_by_municipality
    ON facts (municipality, kind, occurred_at) INCLUDE (value, license_type, subject);
CREATE INDEX facts_by_partner
    ON facts (partner, kind, occurred_at) INCLUDE (value);

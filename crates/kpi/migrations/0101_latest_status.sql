-- The backlog indicators ask, for every case of a municipality, for its latest
-- status fact before the end of a period. Read in this order, that is one
-- pass over an index (no sort of every status fact ever recorded).
CREATE INDEX facts_latest_by_municipality
    ON facts (kind, municipality, subject, occurred_at DESC, event_id DESC) INCLUDE (value);

-- The audit log: one row per state-changing call, written in the same
-- transaction as the change, so a change without its row (or a row without
-- its change) cannot exist. Append-only: a trigger refuses UPDATE, DELETE and
-- TRUNCATE, whoever asks.
CREATE TABLE audit_events (
    id           uuid        PRIMARY KEY,
    at           timestamptz NOT NULL,
    actor        text        NOT NULL,
    role         text        NOT NULL,
    partner      text        NOT NULL DEFAULT '',
    municipality text        NOT NULL DEFAULT '',
    channel      text        NOT NULL DEFAULT '',
    rpc          text        NOT NULL,
    target       text        NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events (at DESC, id DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

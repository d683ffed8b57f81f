-- Every change to a stored report announces the report's id with its commit,
-- so the intake replicas that keep recently read reports in memory
-- (crate::cache) forget it. A trigger, not the code paths that write, so a
-- change made anywhere (a consumer, an RPC, an operator's SQL) is heard.
CREATE FUNCTION announce_report_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('intake_reports_changed', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER reports_announce_change AFTER UPDATE OR DELETE ON reports
    FOR EACH ROW EXECUTE FUNCTION announce_report_change();

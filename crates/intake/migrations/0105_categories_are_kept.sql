-- A report's category must exist. The foreign key of 0100 checked it per
-- inserted report by locking the category's row (FOR KEY SHARE): every
-- concurrent submit batch locked the same few rows, which PostgreSQL records
-- as multixacts, and the check cost a twentieth of a submit. Intake only
-- writes a category it found in its catalogue, read from this table, so the
-- rule holds as long as a category, once there, stays: it is deactivated
-- (`active`), never deleted or renamed. The trigger enforces that instead.
ALTER TABLE reports DROP CONSTRAINT IF EXISTS reports_category_code_fkey;

CREATE FUNCTION categories_are_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.code IS DISTINCT FROM NEW.code THEN
        RAISE EXCEPTION 'category % is kept: deactivate it (active = false) instead', OLD.code
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER categories_are_kept BEFORE DELETE OR UPDATE OF code ON categories
    FOR EACH ROW EXECUTE FUNCTION categories_are_kept();

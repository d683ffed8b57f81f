-- The SLA deadline a citizen is told (Open311's expected_datetime), kept
-- current from the resolve clock's events; the instant of the event that
-- last set it keeps a late event from overwriting a newer deadline.
ALTER TABLE reports ADD COLUMN expected_resolution_event_at timestamptz;

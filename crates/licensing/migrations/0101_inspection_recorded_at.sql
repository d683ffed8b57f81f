-- When a facility inspection was recorded, beside when it happened
-- (`inspected_at`, which a caller may back-date within
-- `licensing.max_backdate_secs`). NULL, for inspections recorded before this
-- column existed, means recorded when it happened.
ALTER TABLE facility_inspections ADD COLUMN recorded_at timestamptz;

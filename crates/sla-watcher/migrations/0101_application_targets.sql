-- Applications carry their license type's target (working days) in their events.
ALTER TABLE subject_events ADD COLUMN target_days integer NOT NULL DEFAULT 0;

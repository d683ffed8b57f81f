-- The subject's own order of its steps (a case's version after each event):
-- what decides between steps stamped with the same instant. 0 for events
-- recorded before producers sent it; those fall back to the order of kinds.
ALTER TABLE subject_events ADD COLUMN seq bigint NOT NULL DEFAULT 0;

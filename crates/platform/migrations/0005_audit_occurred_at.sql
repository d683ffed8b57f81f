-- When the action an audit row records happened, where the caller said it
-- happened earlier than it was recorded (`at`): an acknowledgement synced from a
-- partner system minutes later, within the service's back-dating bound. NULL
-- means it happened when it was recorded, as for every row written before.
ALTER TABLE audit_events ADD COLUMN occurred_at timestamptz;

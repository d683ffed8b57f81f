-- Firing on complete knowledge, and corrections (engine.rs).

-- A timer fired past sla.max_hold without its producer's watermark is
-- provisional; the event it fired is kept so a withdrawal can name it. A
-- withdrawn firing counts as not fired: the timer is scheduled again at its
-- corrected instant (or dropped), and the clock counts its withdrawals.
ALTER TABLE timers ADD COLUMN provisional boolean NOT NULL DEFAULT false;
ALTER TABLE timers ADD COLUMN event_id uuid;
ALTER TABLE clocks ADD COLUMN withdrawals integer NOT NULL DEFAULT 0;

-- An escalation withdrawn stays, marked, so ListEscalations shows it; a level
-- raised again after a withdrawal is a new row.
ALTER TABLE escalations ADD COLUMN provisional boolean NOT NULL DEFAULT false;
ALTER TABLE escalations ADD COLUMN withdrawn_at timestamptz;
ALTER TABLE escalations ADD COLUMN withdrawal_reason text;
ALTER TABLE escalations DROP CONSTRAINT escalations_clock_id_level_key;
CREATE UNIQUE INDEX escalations_live_level ON escalations (clock_id, level) WHERE withdrawn_at IS NULL;

-- A withdrawal is delivered like the escalation it withdraws; a delivery is
-- claimed under a lease token, so a slow replica's outcome never overwrites
-- a later one; a pending delivery of a withdrawn escalation is cancelled.
ALTER TABLE webhook_deliveries ADD COLUMN kind text NOT NULL DEFAULT 'raised';  -- raised, withdrawn
ALTER TABLE webhook_deliveries ADD COLUMN lease uuid;
CREATE UNIQUE INDEX webhook_deliveries_one_per_kind ON webhook_deliveries (escalation_id, kind);

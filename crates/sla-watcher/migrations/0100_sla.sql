-- The SLA watcher: a replica of partner terms, the subjects' event logs that
-- clocks derive from, the clocks, their durable timers, and escalations.

-- Replica of agreements and calendars, fed by partner events, so clocks keep
-- running while the partners service is down.
CREATE TABLE agreements (
    partner_code   text        NOT NULL,
    version        bigint      NOT NULL,
    effective_from timestamptz NOT NULL,
    body           jsonb       NOT NULL,
    PRIMARY KEY (partner_code, version)
);
CREATE TABLE calendars (
    id       text   PRIMARY KEY,
    spec     jsonb  NOT NULL,
    revision bigint NOT NULL
);

-- Every lifecycle event of a subject (a case), each once: clocks are derived
-- from the whole log sorted by the instants the events carry.
CREATE TABLE subject_events (
    event_id           uuid        PRIMARY KEY,
    subject_kind       text        NOT NULL,
    subject_id         uuid        NOT NULL,
    kind               text        NOT NULL,
    at                 timestamptz NOT NULL,
    assignee_code      text        NOT NULL,
    tracking_number    text        NOT NULL,
    municipality_code  text        NOT NULL,
    category_code      text        NOT NULL,
    priority           integer     NOT NULL,
    report_received_at timestamptz
);
CREATE INDEX subject_events_by_subject ON subject_events (subject_kind, subject_id);

CREATE TABLE clocks (
    id                uuid        PRIMARY KEY,
    key               text        NOT NULL UNIQUE,
    subject_kind      text        NOT NULL,
    subject_id        uuid        NOT NULL,
    metric            text        NOT NULL,
    partner_code      text        NOT NULL,
    agreement_version bigint      NOT NULL,
    calendar_id       text        NOT NULL,
    target_secs       bigint      NOT NULL,
    warn_at           jsonb       NOT NULL,
    ladder            jsonb       NOT NULL,
    tracking_number   text        NOT NULL,
    municipality_code text        NOT NULL,
    category_code     text        NOT NULL,
    inputs            jsonb       NOT NULL,
    state             text        NOT NULL,
    elapsed_secs      bigint      NOT NULL,
    deadline          timestamptz,
    original_deadline timestamptz,
    breached_at       timestamptz,
    started_at        timestamptz,
    ended_at          timestamptz,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX clocks_by_subject ON clocks (subject_kind, subject_id);
CREATE INDEX clocks_breached ON clocks (partner_code, breached_at DESC) WHERE breached_at IS NOT NULL;
CREATE INDEX clocks_open_by_calendar ON clocks (calendar_id) WHERE ended_at IS NULL;

-- Durable timers: one per warning, breach and escalation level of a clock.
-- Claimed with FOR UPDATE SKIP LOCKED; firing marks fired_at in the same
-- transaction as the outbox event, so each fires exactly once.
CREATE TABLE timers (
    clock_id uuid        NOT NULL REFERENCES clocks (id),
    kind     text        NOT NULL,   -- warning:<i>, breach, escalation:<level>
    seq      integer     NOT NULL,   -- order among timers due at the same instant
    due_at   timestamptz NOT NULL,
    fired_at timestamptz,
    PRIMARY KEY (clock_id, kind)
);
CREATE INDEX timers_due ON timers (due_at, seq) WHERE fired_at IS NULL;

CREATE TABLE escalations (
    id                   uuid        PRIMARY KEY,
    clock_id             uuid        NOT NULL REFERENCES clocks (id),
    level                integer     NOT NULL,
    partner_code         text        NOT NULL,
    subject_kind         text        NOT NULL,
    subject_id           uuid        NOT NULL,
    tracking_number      text        NOT NULL,
    metric               text        NOT NULL,
    contact              text        NOT NULL,
    agreement_version    bigint      NOT NULL,
    raised_at            timestamptz NOT NULL,
    overdue_working_secs bigint      NOT NULL,
    overdue_wall_secs    bigint      NOT NULL,
    acknowledged_at      timestamptz,
    acknowledged_by      text,
    note                 text,
    UNIQUE (clock_id, level)
);
CREATE INDEX escalations_by_partner ON escalations (partner_code, raised_at DESC, id DESC);

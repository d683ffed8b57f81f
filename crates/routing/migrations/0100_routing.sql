-- Routing rules (versioned), cases, their history and supporters.

CREATE TABLE rules (
    id                uuid        PRIMARY KEY,
    seed_key          text        UNIQUE,
    category_code     text,
    category_group    text,
    municipality_code text,
    area              jsonb,      -- [[latitude, longitude], ...] or NULL
    priority          integer,    -- baladiya.common.v1.Priority, NULL for any
    assignee_code     text        NOT NULL,
    description       text        NOT NULL,
    version           bigint      NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    updated_by        text        NOT NULL,
    deleted           boolean     NOT NULL DEFAULT false
);

-- Every version of every rule: who changed what and when.
CREATE TABLE rule_versions (
    rule_id    uuid        NOT NULL,
    version    bigint      NOT NULL,
    action     text        NOT NULL,   -- created, changed, deleted
    snapshot   jsonb       NOT NULL,
    changed_at timestamptz NOT NULL,
    changed_by text        NOT NULL,
    PRIMARY KEY (rule_id, version)
);

CREATE TABLE cases (
    id                 uuid        PRIMARY KEY,
    report_id          uuid        NOT NULL UNIQUE,
    tracking_number    text        NOT NULL,
    municipality_code  text        NOT NULL,
    category_code      text        NOT NULL,
    category_group     text        NOT NULL,
    priority           integer     NOT NULL,
    latitude           double precision,
    longitude          double precision,
    assignee_code      text        NOT NULL,
    status             text        NOT NULL,
    version            bigint      NOT NULL,
    rule_id            uuid,
    report_received_at timestamptz NOT NULL,
    last_step_at       timestamptz NOT NULL,
    resolved_at        timestamptz,
    resolution         text,
    proof_uris         jsonb       NOT NULL DEFAULT '[]',
    supporters         integer     NOT NULL DEFAULT 0,
    overdue_since      timestamptz,
    created_at         timestamptz NOT NULL
);
CREATE INDEX cases_by_assignee ON cases (assignee_code, created_at DESC, id DESC);
CREATE INDEX cases_by_municipality ON cases (municipality_code, created_at DESC, id DESC);
CREATE INDEX cases_by_time ON cases (created_at DESC, id DESC);
CREATE INDEX cases_resolved ON cases (resolved_at) WHERE status = 'resolved';

CREATE TABLE case_history (
    id            bigserial   PRIMARY KEY,
    case_id       uuid        NOT NULL REFERENCES cases (id),
    action        text        NOT NULL,
    from_status   text,
    to_status     text        NOT NULL,
    assignee_code text        NOT NULL,
    actor         text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL,
    note          text        NOT NULL DEFAULT ''
);
CREATE INDEX case_history_by_case ON case_history (case_id, id);

-- Reports linked to a case's report as duplicates (each counted once).
CREATE TABLE case_supporters (
    case_id   uuid NOT NULL REFERENCES cases (id),
    report_id uuid NOT NULL,
    PRIMARY KEY (case_id, report_id)
);

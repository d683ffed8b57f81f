-- Partners, their calendars and their append-only agreement versions.

CREATE TABLE calendars (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    spec       jsonb       NOT NULL,   -- worktime::CalendarSpec
    revision   bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE partners (
    code        text        PRIMARY KEY,
    name_ar     text        NOT NULL,
    name_en     text        NOT NULL,
    kind        text        NOT NULL,
    contacts    jsonb       NOT NULL,
    calendar_id text        NOT NULL REFERENCES calendars (id),
    active      boolean     NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE agreements (
    partner_code   text        NOT NULL REFERENCES partners (code),
    version        bigint      NOT NULL,
    effective_from timestamptz NOT NULL,
    body           jsonb       NOT NULL,   -- terms, escalation ladder, clearances
    published_at   timestamptz NOT NULL,
    published_by   text        NOT NULL,
    PRIMARY KEY (partner_code, version),
    UNIQUE (partner_code, effective_from)
);

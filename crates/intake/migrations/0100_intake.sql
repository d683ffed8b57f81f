-- Intake: the category catalogue, service areas, reports, and reporters'
-- personal data (encrypted, in its own table, never in events).

CREATE TABLE categories (
    code                    text        PRIMARY KEY,
    name_ar                 text        NOT NULL,
    name_en                 text        NOT NULL,
    category_group          text        NOT NULL,
    default_priority        text        NOT NULL,
    urgent_capable          boolean     NOT NULL,
    duplicate_radius_meters integer     NOT NULL,
    duplicate_window_hours  integer     NOT NULL,
    active                  boolean     NOT NULL,
    updated_at              timestamptz NOT NULL
);

-- Words in a description that make an urgent-capable category urgent.
CREATE TABLE urgent_keywords (
    keyword text PRIMARY KEY
);

-- Where each municipality serves: a polygon of [latitude, longitude] points.
CREATE TABLE service_areas (
    municipality_code text  PRIMARY KEY,
    name_ar           text  NOT NULL,
    name_en           text  NOT NULL,
    tracking_prefix   text  NOT NULL UNIQUE,
    time_zone         text  NOT NULL,
    polygon           jsonb NOT NULL
);

-- Tracking numbers come from this sequence in blocks of 100 per process
-- (never reused; gaps after a restart are fine).
CREATE SEQUENCE tracking_seq INCREMENT BY 100 MINVALUE 1 START WITH 1;

CREATE TABLE reports (
    id                     uuid             PRIMARY KEY,
    tracking_number        text             NOT NULL UNIQUE,
    request_id             text             NOT NULL,
    status                 text             NOT NULL,
    status_changed_at      timestamptz      NOT NULL,
    municipality_code      text             NOT NULL,
    category_code          text             NOT NULL REFERENCES categories (code),
    priority               text             NOT NULL,
    priority_reason        text             NOT NULL,
    duplicate_of           uuid             REFERENCES reports (id),
    channel                text             NOT NULL,
    description            text             NOT NULL,
    latitude               double precision,
    longitude              double precision,
    national_address_short text,
    observed_at            timestamptz,
    created_at             timestamptz      NOT NULL,
    assignee_code          text,
    case_id                uuid,
    expected_resolution_at timestamptz,
    supporters             integer          NOT NULL DEFAULT 0,
    attachments            jsonb            NOT NULL DEFAULT '[]',
    reporter_key           text,
    rating_score           smallint,
    rating_comment         text,
    rated_at               timestamptz
);
-- Open masters of a category, for duplicate search.
CREATE INDEX reports_open_masters ON reports (category_code, created_at)
    WHERE duplicate_of IS NULL AND status NOT IN ('resolved', 'closed');
CREATE INDEX reports_by_time ON reports (created_at DESC, id DESC);
CREATE INDEX reports_by_municipality ON reports (municipality_code, created_at DESC, id DESC);
CREATE INDEX reports_duplicates ON reports (duplicate_of) WHERE duplicate_of IS NOT NULL;

-- Personal data, AES-256-GCM per field (nonce || ciphertext), key by id.
CREATE TABLE reporters (
    report_id   uuid  PRIMARY KEY REFERENCES reports (id),
    key_id      text  NOT NULL,
    name        bytea,
    phone       bytea,
    national_id bytea
);

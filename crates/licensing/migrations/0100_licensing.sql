-- License types, applications, licenses and facility compliance inspections.

CREATE TABLE license_types (
    code                 text    PRIMARY KEY,
    name_ar              text    NOT NULL,
    name_en              text    NOT NULL,
    target_days          integer NOT NULL,
    required_documents   jsonb   NOT NULL,
    required_clearances  jsonb   NOT NULL,
    required_inspections jsonb   NOT NULL,
    validity_days        integer NOT NULL,
    renewal_window_days  integer NOT NULL,
    grace_days           integer NOT NULL
);

CREATE SEQUENCE application_seq;
CREATE SEQUENCE license_seq;

CREATE TABLE applications (
    id                uuid        PRIMARY KEY,
    tracking_number   text        NOT NULL UNIQUE,
    license_type_code text        NOT NULL REFERENCES license_types (code),
    applicant_key     text        NOT NULL,
    municipality_code text        NOT NULL,
    facility_name     text        NOT NULL,
    activity          text        NOT NULL,
    documents         jsonb       NOT NULL,
    clearances        jsonb       NOT NULL,
    inspections       jsonb       NOT NULL,
    status            text        NOT NULL,
    reason            text        NOT NULL DEFAULT '',
    submitted_at      timestamptz NOT NULL,
    last_step_at      timestamptz NOT NULL,
    version           bigint      NOT NULL,
    license_number    text
);
CREATE INDEX applications_by_time ON applications (submitted_at DESC, id DESC);

CREATE TABLE licenses (
    number            text        PRIMARY KEY,
    license_type_code text        NOT NULL REFERENCES license_types (code),
    application_id    uuid        NOT NULL,
    municipality_code text        NOT NULL,
    facility_name     text        NOT NULL,
    activity          text        NOT NULL,
    holder_key        text        NOT NULL,
    status            text        NOT NULL,
    valid_from        timestamptz NOT NULL,
    valid_to          timestamptz NOT NULL,
    renews            text        REFERENCES licenses (number),
    suspension_reason text,
    submitted_at      timestamptz NOT NULL
);
CREATE INDEX licenses_expiring ON licenses (valid_to) WHERE status IN ('active', 'suspended');

CREATE TABLE facility_inspections (
    id                uuid        PRIMARY KEY,
    license_number    text        NOT NULL REFERENCES licenses (number),
    activity          text        NOT NULL,
    operator_code     text        NOT NULL,
    private_operator  boolean     NOT NULL,
    compliant         boolean     NOT NULL,
    items             jsonb       NOT NULL,
    inspected_at      timestamptz NOT NULL,
    suspended_license boolean     NOT NULL,
    municipality_code text        NOT NULL
);

-- KPI projections. Every domain event becomes zero or more facts: one row per
-- (event, kind) with the instant it happened, its dimensions and a value.
-- Indicators are computed from facts at query time (exact medians and
-- percentiles, no averages of averages), and because a fact depends only on
-- its own event, applying the same events in any order, or twice, gives the
-- same rows: that is what lets a rebuild from the streams equal the live tables.
CREATE TABLE facts (
    event_id     uuid             NOT NULL,
    kind         text             NOT NULL,
    -- The case, report, application or inspection the fact is about.
    subject      text             NOT NULL,
    occurred_at  timestamptz      NOT NULL,
    municipality text             NOT NULL DEFAULT '',
    partner      text             NOT NULL DEFAULT '',
    -- Empty for case facts: their channel is their report's (report_channels).
    channel      text             NOT NULL DEFAULT '',
    category     text             NOT NULL DEFAULT '',
    license_type text             NOT NULL DEFAULT '',
    activity     text             NOT NULL DEFAULT '',
    operator     text             NOT NULL DEFAULT '',
    level        integer          NOT NULL DEFAULT 0,
    value        double precision NOT NULL,
    PRIMARY KEY (event_id, kind)
);
CREATE INDEX facts_by_kind_time ON facts (kind, occurred_at);
CREATE INDEX facts_by_subject ON facts (subject, kind, occurred_at);

-- Which report a case was opened for (from routing events) and which channel
-- a report came in on (from intake events): a case's channel, whichever of
-- the two streams is read first.
CREATE TABLE case_reports (
    case_id   text PRIMARY KEY,
    report_id text NOT NULL
);
CREATE TABLE report_channels (
    report_id text PRIMARY KEY,
    channel   text NOT NULL
);

-- Each license type's target in working days, as its latest event said.
CREATE TABLE license_type_targets (
    license_type text        PRIMARY KEY,
    target_days  integer     NOT NULL,
    as_of        timestamptz NOT NULL,
    event_id     uuid        NOT NULL
);

-- Facts with their channel resolved. Queries that do not read the channel
-- never pay for the joins (PostgreSQL removes unused left joins on keys).
CREATE VIEW facts_view AS
SELECT f.event_id, f.kind, f.subject, f.occurred_at, f.municipality, f.partner,
       CASE WHEN f.channel <> '' THEN f.channel ELSE COALESCE(rc.channel, '') END AS channel,
       f.category, f.license_type, f.activity, f.operator, f.level, f.value
  FROM facts f
  LEFT JOIN case_reports cr ON cr.case_id = f.subject
  LEFT JOIN report_channels rc ON rc.report_id = cr.report_id;

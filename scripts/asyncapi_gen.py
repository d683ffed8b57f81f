#!/usr/bin/env python3
"""Writes docs/asyncapi.yaml, the AsyncAPI 3.0 description of every domain
event the platform publishes, and the events table of docs/analysts.md.

    .venv/bin/python scripts/asyncapi_gen.py          # write both
    .venv/bin/python scripts/asyncapi_gen.py --check  # exit 1 if either is stale

(`make asyncapi` runs the first.) Two sources:

- `EVENTS` below: each event type, its payload message, the scope tokens after
  its subject and what an analyst needs to know about it. The tests in
  `tests/python` check this list against the `EventType::new` calls in
  `crates/*/src`, both ways, so an event added in code fails `make test` until
  it is described here.
- `proto/`: the payload schemas, field by field with the proto comments, are
  read from a descriptor set that grpcio-tools' protoc compiles.

The events table in docs/analysts.md is rendered from the AsyncAPI document
(`events_table`), so the page cannot say something the document does not.
Needs grpcio-tools and PyYAML (`scripts/devenv.py outside-in-tools` installs
them into .venv).
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
ANALYSTS = ROOT / "docs" / "analysts.md"
TABLE_BEGIN = "<!-- BEGIN events table: rendered from docs/asyncapi.yaml by scripts/asyncapi_gen.py; do not edit -->"
TABLE_END = "<!-- END events table -->"

# ---------------------------------------------------------------- the events


@dataclass(frozen=True)
class Domain:
    stream: str
    service: str  # ce-source is /baladiya/<service>
    package: str  # protobuf package of the payloads
    title: str


DOMAINS = {
    "intake": Domain("INTAKE", "intake", "baladiya.intake.events.v1", "Citizen reports"),
    "routing": Domain("ROUTING", "routing", "baladiya.routing.events.v1", "Cases: who must act, and the case lifecycle"),
    "partners": Domain("PARTNERS", "partners", "baladiya.partners.events.v1", "Partner bodies, agreements and calendars"),
    "sla": Domain("SLA", "sla-watcher", "baladiya.sla.events.v1", "SLA clocks and escalations"),
    "licensing": Domain("LICENSING", "licensing", "baladiya.licensing.events.v1", "License applications, licenses and facility inspections"),
}

# Scope tokens: the subject tokens after `<domain>.<aggregate>.<event>`.
SANITISED = (
    " In the subject, characters other than `A-Z a-z 0-9 - _` become `_`, "
    "and an empty value is `_`."
)
PARAMETERS = {
    "municipality": (
        "Municipality code, as in `deploy/seed/intake/service_areas.toml`." + SANITISED,
        ["RIYADH", "JEDDAH", "MUSCAT"],
    ),
    "category": (
        "Report category code, as in `deploy/seed/intake/categories.toml`." + SANITISED,
        ["POTHOLE", "STREET_LIGHTING", "SEWAGE_OVERFLOW"],
    ),
    "assignee": (
        "Code of the body the case is with: a partner body or a municipal department "
        "(partners' codes, `deploy/seed/partners/partners.toml`)." + SANITISED,
        ["MOTLS", "MUN-ROADS", "MUN-TRIAGE"],
    ),
    "partner": (
        "Partner code: the body the record belongs to or is responsible for "
        "(`deploy/seed/partners/partners.toml`)." + SANITISED,
        ["MOTLS", "MEWA", "MUN-ROADS"],
    ),
    "calendar": (
        "Calendar id (`deploy/seed/partners/calendars.toml`)." + SANITISED,
        ["sa-gov", "om-gov", "24x7"],
    ),
    "licenseType": (
        "License type code (`deploy/seed/licensing/license_types.toml`)." + SANITISED,
        ["BUILDING_PERMIT", "FOOD_ESTABLISHMENT"],
    ),
    "activity": (
        "Inspected activity: `PUBLIC_HEALTH` or `COMMERCIAL_MARKET`." + SANITISED,
        ["PUBLIC_HEALTH", "COMMERCIAL_MARKET"],
    ),
}


@dataclass(frozen=True)
class Event:
    kind: str  # <domain>.<aggregate>.<event>
    message: str  # payload message, in the domain's package
    scope: tuple[str, ...]  # PARAMETERS, in subject order
    title: str
    summary: str
    key_fields: tuple[str, ...]
    notes: str = ""
    package: str = ""  # the payload's package, where not the domain's

    @property
    def payload(self) -> str:
        return f"{self.package or DOMAINS[self.domain].package}.{self.message}"
    @property
    def domain(self) -> str:
        return self.kind.split(".")[0]


CASE = ("municipality", "assignee")
CASE_KEYS = ("case.case_id", "case.tracking_number", "case.assignee_code", "case.municipality_code")
CLOCK_KEYS = ("clock.clock_id", "clock.subject_kind", "clock.metric", "clock.partner_code", "clock.municipality_code")
APPLICATION = ("municipality", "licenseType")
APPLICATION_KEYS = ("application.application_id", "application.license_type_code", "application.municipality_code")
LICENSE_KEYS = ("license_number", "license_type_code", "municipality_code", "valid_to")

EVENTS: tuple[Event, ...] = (
    # intake
    Event("intake.report.received", "ReportReceived", ("municipality", "category"), "Report received",
          "A citizen report was accepted, from any channel.",
          ("report_id", "tracking_number", "municipality_code", "category_code", "channel", "priority", "duplicate_of"),
          "Published for every accepted report, duplicates included: a report linked to an open one "
          "has `duplicate_of` set (and `intake.report.duplicate_linked` follows). `meta.occurred_at` "
          "is the received instant. No personal data: the reporter is a keyed pseudonym "
          "(`reporter_key`) and the description is left out."),
    Event("intake.report.duplicate_linked", "ReportLinkedAsDuplicate", ("municipality", "category"),
          "Report linked as a duplicate",
          "A new report was linked to an open report of the same category nearby; it adds a "
          "supporter to that report's case instead of opening its own.",
          ("report_id", "master_report_id", "municipality_code", "category_code", "distance_meters")),
    Event("intake.report.rated", "ReportRated", ("municipality", "category"), "Report rated",
          "The citizen rated the outcome (1 to 5).",
          ("report_id", "score", "municipality_code", "assignee_code", "channel")),
    # routing
    Event("routing.case.routed", "CaseRouted", CASE, "Case routed",
          "A case was opened for a report and routed to the body that must act.",
          CASE_KEYS + ("case.report_id", "rule_id", "report_received_at"),
          "`meta.occurred_at` (and `ce-time`) is the report's received instant, not the routing instant."),
    Event("routing.case.acknowledged", "CaseAcknowledged", CASE, "Case acknowledged",
          "The assignee acknowledged the case.", CASE_KEYS),
    Event("routing.case.work_started", "CaseWorkStarted", CASE, "Work started",
          "The assignee started work on the case.", CASE_KEYS),
    Event("routing.case.put_on_hold", "CasePutOnHold", CASE, "Case put on hold",
          "The case waits on the citizen (its clocks pause).", CASE_KEYS + ("reason",)),
    Event("routing.case.resumed", "CaseResumed", CASE, "Case resumed",
          "A case on hold resumed.", CASE_KEYS),
    Event("routing.case.resolved", "CaseResolved", CASE, "Case resolved",
          "The assignee resolved the case.", CASE_KEYS + ("resolution",)),
    Event("routing.case.rejected", "CaseRejected", CASE, "Case rejected",
          "The assignee sent the case back as not theirs; it goes to its municipality's triage.",
          CASE_KEYS + ("reason", "suggested_assignee_code"),
          "The `{assignee}` token and `case.assignee_code` name the body that rejected the case, "
          "not triage, where the case now is."),
    Event("routing.case.rerouted", "CaseRerouted", CASE, "Case rerouted",
          "An operator moved the case to another body.",
          CASE_KEYS + ("previous_assignee_code", "reason"),
          "The `{assignee}` token is the new body."),
    Event("routing.case.reopened", "CaseReopened", CASE, "Case reopened",
          "A citizens' channel reopened a resolved case within the reopen period.", CASE_KEYS + ("reason",)),
    Event("routing.case.closed", "CaseClosed", CASE, "Case closed",
          "The case was closed, by an operator or after the quiet period.", CASE_KEYS + ("automatic",)),
    Event("routing.case.supporter_added", "CaseSupporterAdded", CASE, "Supporter added",
          "A duplicate report was linked to the case's report.",
          CASE_KEYS + ("supporter_report_id", "supporters")),
    # partners
    Event("partners.partner.upserted", "PartnerUpserted", ("partner",), "Partner created or changed",
          "A partner body was created or changed (also when the seed adds it at start).",
          ("partner.code", "partner.kind", "partner.calendar_id", "partner.active")),
    Event("partners.agreement.published", "AgreementPublished", ("partner",), "Agreement published",
          "A new version of a partner's SLA agreement was published.",
          ("agreement.partner_code", "agreement.version", "agreement.effective_from")),
    Event("partners.calendar.changed", "CalendarChanged", ("calendar",), "Calendar changed",
          "A business calendar changed; clocks running on it recompute their deadlines.",
          ("calendar.id", "affected_start_date", "affected_end_date", "reason"),
          "The scope token is the calendar id, not a partner code."),
    # sla
    Event("sla.clock.started", "ClockStarted", ("partner",), "Clock started",
          "An SLA clock started (acknowledge, resolve, end-to-end, a decision or a clearance).",
          CLOCK_KEYS + ("deadline",),
          "The `{partner}` token is the responsible party (`clock.partner_code`); `_` when there is none. "
          "SLA subjects carry no municipality: filter on `clock.municipality_code` in the payload."),
    Event("sla.clock.paused", "ClockPaused", ("partner",), "Clock paused",
          "A clock paused (case on hold, application returned).", CLOCK_KEYS),
    Event("sla.clock.resumed", "ClockResumed", ("partner",), "Clock resumed",
          "A paused clock resumed, with its new deadline.", CLOCK_KEYS + ("deadline",)),
    Event("sla.clock.warning", "ClockWarning", ("partner",), "Clock warning",
          "A warning threshold of the target passed.", CLOCK_KEYS + ("fraction", "deadline"),
          "`meta.occurred_at` is the threshold instant."),
    Event("sla.clock.breached", "ClockBreached", ("partner",), "Clock breached",
          "A clock passed its deadline without being stopped.",
          ("clock_id", "subject_kind", "metric", "partner_code", "deadline", "clock.municipality_code"),
          "`meta.occurred_at` is the deadline instant. The clock's fields appear twice: flat "
          "(`clock_id`, `metric`, ...) and in full under `clock`."),
    Event("sla.clock.met", "ClockMet", ("partner",), "Clock met",
          "A clock stopped: the promise was kept, or kept late (`breached`).",
          CLOCK_KEYS + ("breached", "elapsed", "elapsed_working_days")),
    Event("sla.clock.cancelled", "ClockCancelled", ("partner",), "Clock cancelled",
          "A clock was cancelled (its case or application went elsewhere).", CLOCK_KEYS),
    Event("sla.escalation.raised", "EscalationRaised", ("partner",), "Escalation raised",
          "A breached clock escalated to a level of the partner's escalation ladder.",
          ("escalation_id", "level", "contact", "clock.partner_code", "clock.tracking_number", "overdue_working"),
          "`meta.occurred_at` is the breach plus the level's delay. `ce-subject` and "
          "`meta.aggregate_id` are the clock id; the escalation's own id is `escalation_id`."),
    Event("sla.escalation.acknowledged", "EscalationAcknowledged", ("partner",), "Escalation acknowledged",
          "An escalation was acknowledged.",
          ("escalation_id", "level", "acknowledged_by", "clock.partner_code"),
          "`ce-subject` and `meta.aggregate_id` are the clock id; the escalation's own id is `escalation_id`."),
    Event("sla.clock.warning_withdrawn", "ClockWarningWithdrawn", ("partner",), "Clock warning withdrawn",
          "A warning that fired turned out wrong (an event that happened before it arrived after it) and is withdrawn.",
          CLOCK_KEYS + ("warning_event_id", "fraction", "reason"),
          "`meta.occurred_at` is when the watcher withdrew it. Count the warning as never fired."),
    Event("sla.clock.breach_withdrawn", "ClockBreachWithdrawn", ("partner",), "Clock breach withdrawn",
          "A breach that fired turned out wrong and is withdrawn: a late acknowledgement within the "
          "back-dating bound, a provisional breach contradicted once the producer's events arrived, "
          "or a calendar change. If the clock breaches at a corrected deadline, a new `sla.clock.breached` follows.",
          CLOCK_KEYS + ("breach_event_id", "withdrawn_deadline", "deadline", "reason", "other_breaches"),
          "`meta.occurred_at` is when the watcher withdrew it. Net it out: subtract the breach "
          "`breach_event_id` names (the KPI service deletes its facts)."),
    Event("sla.escalation.withdrawn", "EscalationWithdrawn", ("partner",), "Escalation withdrawn",
          "An escalation that was raised turned out wrong and is withdrawn; a partner with a webhook "
          "gets a signed withdrawal.",
          ("escalation_id", "raised_event_id", "level", "reason", "clock.partner_code"),
          "`ce-subject` and `meta.aggregate_id` are the clock id. `ListEscalations` shows it with "
          "`withdrawn_at`; a level raised again later is a new escalation."),
    # watermarks
    *(
        Event(f"{domain}.watermark", "Watermark", (), f"{title} watermark",
              f"How far {title.lower()}'s stream is complete: every event {domain} recorded before "
              "`complete_before` is on the stream, before this message.",
              ("complete_before", "producer"),
              "Published by the producer's outbox relay after the events it covers, and every "
              "`events.watermark_interval_ms` (100 ms) while idle, with `Nats-Rollup: sub`: the stream "
              "keeps only the newest. `complete_before` is the producer's clock less "
              "`events.watermark_margin_ms`. An action recorded after it happened (within the "
              "producer's back-dating bound; the event carries `baladiya-recordedtime`) may still "
              "arrive below it. The SLA watcher fires nothing due after the watermark. Not a domain "
              "event: analysts who count events skip it.",
              package="baladiya.events.v1")
        for domain, title in (("routing", "Routing"), ("licensing", "Licensing"))
    ),
    # licensing: application steps
    *(
        Event(f"licensing.application.{step}", "ApplicationStep", APPLICATION, title, summary,
              APPLICATION_KEYS + extra,
              "One payload message for every step: the event type names the step.")
        for step, title, summary, extra in (
            ("submitted", "Application submitted", "A license application was submitted and is under review.",
             ("application.tracking_number", "application.target_days")),
            ("returned_for_correction", "Application returned", "The application was returned to the applicant for correction (its decision clock pauses).",
             ("note",)),
            ("resubmitted", "Application resubmitted", "A returned application was resubmitted.", ()),
            ("clearance_requested", "Clearance requested", "A partner body's clearance was requested.",
             ("partner_code",)),
            ("clearance_recorded", "Clearance recorded", "A partner body recorded its clearance, granted or refused.",
             ("partner_code", "positive")),
            ("inspection_scheduled", "Inspection scheduled", "A pre-license inspection was scheduled.",
             ("inspection_kind",)),
            ("inspection_recorded", "Inspection recorded", "A pre-license inspection was recorded, passed or failed.",
             ("inspection_kind", "positive")),
            ("approved", "Application approved", "The application was approved.", ()),
            ("rejected", "Application rejected", "The application was rejected.", ("note",)),
        )
    ),
    # licensing: licenses
    *(
        Event(f"licensing.license.{change}", "LicenseChanged", APPLICATION, title, summary, LICENSE_KEYS + extra,
              "One payload message for every change: the event type names it.")
        for change, title, summary, extra in (
            ("issued", "License issued", "A license was issued for an approved application.", ("application_id", "submitted_at")),
            ("renewed", "License renewed", "A renewal license was issued; `renews` names the license it replaces.", ("renews",)),
            ("suspended", "License suspended", "A license was suspended, by an officer or by a critical compliance violation.", ()),
            ("expired", "License expired", "A license expired (published once, by the expiry sweep).", ()),
        )
    ),
    Event("licensing.facility.inspection_recorded", "FacilityInspectionRecorded", ("municipality", "activity"),
          "Facility inspection recorded",
          "A compliance inspection of a licensed facility was recorded.",
          ("inspection_id", "license_number", "activity", "operator_code", "private_operator", "compliant",
           "critical_violations", "municipality_code"),
          "Not the same event as `licensing.application.inspection_recorded` (an inspection before "
          "a license is issued). The second scope token is the activity, not the license type."),
)


def camel(*words: str) -> str:
    parts = [p for w in words for p in w.replace("-", "_").split("_") if p]
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def ids(e: Event) -> tuple[str, str, str]:
    """(channel id, message id, operation id)."""
    channel = camel(*e.kind.split("."))
    return channel, channel, "receive" + channel[:1].upper() + channel[1:]


# ---------------------------------------------------------------- protobuf


def descriptor_set(proto_dir: Path = ROOT / "proto"):
    """Every file under proto/, compiled with grpcio-tools (source info kept)."""
    from google.protobuf import descriptor_pb2

    files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        done = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", "--include_imports",
             "--include_source_info", f"--descriptor_set_out={out}", *files],
            capture_output=True, text=True, cwd=proto_dir,
        )
        if done.returncode != 0:
            sys.exit(f"asyncapi_gen: protoc failed:\n{done.stderr}")
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds


def clean_comment(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines()]
    return " ".join(line for line in lines if line)


@dataclass
class Catalogue:
    """Messages and enums by full name, with their comments."""

    messages: dict = field(default_factory=dict)  # name -> DescriptorProto
    enums: dict = field(default_factory=dict)  # name -> EnumDescriptorProto
    comments: dict = field(default_factory=dict)  # name or name#field or name#VALUE -> text

    @classmethod
    def load(cls, fds) -> "Catalogue":
        cat = cls()
        for f in fds.file:
            where = {tuple(loc.path): loc.leading_comments for loc in f.source_code_info.location}

            def walk(msgs, prefix, path):
                for i, m in enumerate(msgs):
                    name = f"{prefix}.{m.name}"
                    cat.messages[name] = m
                    cat.comments[name] = clean_comment(where.get((*path, i), ""))
                    for j, fld in enumerate(m.field):
                        cat.comments[f"{name}#{fld.name}"] = clean_comment(where.get((*path, i, 2, j), ""))
                    walk(m.nested_type, name, (*path, i, 3))
                    enums(m.enum_type, name, (*path, i, 4))

            def enums(items, prefix, path):
                for i, e in enumerate(items):
                    name = f"{prefix}.{e.name}"
                    cat.enums[name] = e
                    cat.comments[name] = clean_comment(where.get((*path, i), ""))

            walk(f.message_type, f.package, (4,))
            enums(f.enum_type, f.package, (5,))
        return cat


WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time",
                                  "description": "google.protobuf.Timestamp (RFC 3339 in JSON)."},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$",
                                 "description": "google.protobuf.Duration (seconds with an `s` in JSON, e.g. `3600s`)."},
}


def schemas_for(cat: Catalogue, roots: list[str]) -> dict:
    """JSON Schemas of `roots` and every message and enum they use, by full name."""
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

    scalar = {
        F.TYPE_STRING: {"type": "string"},
        F.TYPE_BOOL: {"type": "boolean"},
        F.TYPE_DOUBLE: {"type": "number"},
        F.TYPE_FLOAT: {"type": "number"},
        F.TYPE_INT32: {"type": "integer", "format": "int32"},
        F.TYPE_SINT32: {"type": "integer", "format": "int32"},
        F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
        F.TYPE_UINT32: {"type": "integer", "minimum": 0},
        F.TYPE_FIXED32: {"type": "integer", "minimum": 0},
        F.TYPE_INT64: {"type": "string", "pattern": "^-?[0-9]+$", "x-protobuf-type": "int64"},
        F.TYPE_SINT64: {"type": "string", "pattern": "^-?[0-9]+$", "x-protobuf-type": "sint64"},
        F.TYPE_SFIXED64: {"type": "string", "pattern": "^-?[0-9]+$", "x-protobuf-type": "sfixed64"},
        F.TYPE_UINT64: {"type": "string", "pattern": "^[0-9]+$", "x-protobuf-type": "uint64"},
        F.TYPE_FIXED64: {"type": "string", "pattern": "^[0-9]+$", "x-protobuf-type": "fixed64"},
        F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    }
    out: dict = {}
    todo = list(roots)

    def ref(name: str) -> dict:
        if name not in out and name not in todo:
            todo.append(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def field_schema(owner: str, fld) -> dict:
        note = ""
        repeated = fld.label == F.LABEL_REPEATED
        if fld.type in (F.TYPE_MESSAGE, F.TYPE_ENUM):
            target = fld.type_name.lstrip(".")
            entry = cat.messages.get(target)
            if entry is not None and entry.options.map_entry:
                value = next(f for f in entry.field if f.name == "value")
                schema = {"type": "object", "additionalProperties": field_schema(target, value)}
                repeated = False
            elif target in WELL_KNOWN:
                schema = dict(WELL_KNOWN[target])
                note = schema.pop("description")
            else:
                schema = ref(target)
        else:
            schema = dict(scalar[fld.type])
        if repeated:
            schema = {"type": "array", "items": schema}
        text = " ".join(t for t in (cat.comments.get(f"{owner}#{fld.name}", ""), note) if t)
        if text and "$ref" in schema:
            return {"description": text, "allOf": [schema]}
        if text:
            schema["description"] = text
        return schema

    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        if name in cat.enums:
            e = cat.enums[name]
            out[name] = {
                "title": name.rsplit(".", 1)[1],
                "description": (cat.comments.get(name) or f"Enum {name}.") + " By value name in JSON.",
                "type": "string",
                "enum": [v.name for v in e.value],
                "x-protobuf-enum": name,
            }
            continue
        m = cat.messages[name]
        out[name] = {
            "title": m.name,
            "description": cat.comments.get(name) or f"Message {name}.",
            "type": "object",
            "x-protobuf-message": name,
            "properties": {fld.name: field_schema(name, fld) for fld in m.field},
        }
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- the document

INFO = """\
Every domain event the Baladiya platform publishes on NATS JetStream: one
channel per event type, with its subject, payload and headers. Analysts read
them with ephemeral JetStream consumers; `docs/analysts.md` is the guide
(wildcards, replay from a time, decoding, an example).

**Subjects.** `baladiya.<domain>.<aggregate>.<event>` followed by scope tokens
(municipality, category, assignee, partner, ...), the channel parameters below.
A deployment's `events.namespace` (empty in production) is put in front of
every subject with a dot, and in front of every stream name with an underscore:
with namespace `t42`, `baladiya.intake.>` is `t42.baladiya.intake.>` in stream
`t42_INTAKE`.

**Streams.** One per domain: `INTAKE` (`baladiya.intake.>`), `ROUTING`,
`PARTNERS`, `SLA`, `LICENSING`. Limits retention, 400 days by default
(`events.stream_max_age_hours`), so a year can be replayed.

**Messages.** CloudEvents 1.0 in binary content mode: the attributes are NATS
headers (`ce-*`, values percent-encoded where needed) and the payload is the
protobuf binary encoding of the message `ce-dataschema` names
(`type.googleapis.com/<full message name>`; also `x-protobuf-message` on each
message here). The `.proto` files are in `proto/`. Payload schemas below
describe the decoded message with the proto field names: in JSON (protobuf's
JSON mapping with `preserving_proto_field_name`) 64-bit integers are strings,
enums are value names, `Timestamp` is RFC 3339 and `Duration` is seconds with
an `s`. Field 1 of every payload is `meta` (`baladiya.events.v1.EventMeta`):
event id (= `ce-id`), the instant it happened (= `ce-time`) and the aggregate id
(= `ce-subject`). Payloads carry no raw personal data, only keyed pseudonyms.

**Delivery.** Each event is published once per id (`Nats-Msg-Id` = `ce-id`,
deduplicated by JetStream within the duplicate window); each service publishes
its events in the order it committed them. Consumers must tolerate unknown
fields and new event types.
"""

CE_HEADERS = {
    "title": "CloudEvents headers",
    "description": "CloudEvents 1.0 attributes as NATS headers (binary content mode), "
                   "values percent-encoded (space, `\"`, `%` and non-ASCII), plus the "
                   "JetStream dedupe id and W3C trace context.",
    "type": "object",
    "required": ["ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time", "ce-dataschema",
                 "content-type", "Nats-Msg-Id"],
    "properties": {
        "ce-specversion": {"type": "string", "const": "1.0", "description": "CloudEvents version."},
        "ce-id": {"type": "string", "format": "uuid", "description": "The event id, a UUIDv7; equal to `meta.event_id`."},
        "ce-type": {"type": "string", "pattern": "^sa\\.baladiya\\.[a-z_]+\\.[a-z_]+\\.[a-z_]+\\.v1$",
                    "description": "`sa.baladiya.<domain>.<aggregate>.<event>.v1`."},
        "ce-source": {"type": "string", "pattern": "^/baladiya/[a-z-]+$",
                      "description": "`/baladiya/<service>`: the service that published it."},
        "ce-subject": {"type": "string",
                       "description": "The aggregate id the event is about (percent-encoded); equal to `meta.aggregate_id`."},
        "ce-time": {"type": "string", "format": "date-time",
                    "description": "RFC 3339 instant the thing happened (not when it was published); equal to `meta.occurred_at`."},
        "ce-dataschema": {"type": "string", "pattern": "^type\\.googleapis\\.com/baladiya\\.",
                          "description": "`type.googleapis.com/<full protobuf message name>` of the payload."},
        "content-type": {"type": "string", "const": "application/protobuf",
                         "description": "The payload's encoding."},
        "Nats-Msg-Id": {"type": "string", "format": "uuid",
                        "description": "Equal to `ce-id`: JetStream drops a republished duplicate."},
        "traceparent": {"type": "string", "description": "W3C trace context of the operation that caused the event, when traced."},
    },
}


def build(cat: Catalogue) -> dict:
    payloads = []
    for e in EVENTS:
        full = e.payload
        if full not in cat.messages:
            sys.exit(f"asyncapi_gen: {e.kind}: no message {full} in proto/")
        if full not in payloads:
            payloads.append(full)
    schemas = {"CloudEventsHeaders": CE_HEADERS, **schemas_for(cat, payloads)}

    channels, operations, messages = {}, {}, {}
    for e in EVENTS:
        d = DOMAINS[e.domain]
        full = e.payload
        channel_id, message_id, operation_id = ids(e)
        address = "baladiya." + e.kind + "".join(f".{{{p}}}" for p in e.scope)
        description = f"Stream `{d.stream}`. " + (
            "Scope tokens: " + ", ".join(f"`{{{p}}}`" for p in e.scope) + "." if e.scope else "No scope tokens."
        )
        if e.notes:
            description += "\n\n" + e.notes
        channels[channel_id] = {
            "address": address,
            "title": e.title,
            "summary": e.summary,
            "description": description,
            "parameters": {p: {"$ref": f"#/components/parameters/{p}"} for p in e.scope},
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
            "tags": [{"name": e.domain}],
            "x-jetstream-stream": d.stream,
        }
        operations[operation_id] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "title": f"Receive: {e.title.lower()}",
            "summary": e.summary,
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}],
            "tags": [{"name": e.domain}],
        }
        ce_type = f"sa.baladiya.{e.kind}.v1"
        messages[message_id] = {
            "name": e.kind,
            "title": e.title,
            "summary": e.summary,
            "contentType": "application/protobuf",
            "headers": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEventsHeaders"},
                    {
                        "type": "object",
                        "properties": {
                            "ce-type": {"type": "string", "const": ce_type},
                            "ce-source": {"type": "string", "const": f"/baladiya/{d.service}"},
                            "ce-dataschema": {"type": "string", "const": f"type.googleapis.com/{full}"},
                        },
                    },
                ]
            },
            "payload": {"$ref": f"#/components/schemas/{full}"},
            "tags": [{"name": e.domain}],
            "x-cloudevents-type": ce_type,
            "x-protobuf-message": full,
            "x-key-fields": list(e.key_fields),
        }

    return {
        "asyncapi": "3.0.0",
        "id": "urn:sa:baladiya:events",
        "info": {
            "title": "Baladiya domain events",
            "version": "1.0.0",
            "description": INFO,
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
            "tags": [{"name": name, "description": f"{dom.title}: stream `{dom.stream}`, published by `{dom.service}`."}
                     for name, dom in DOMAINS.items()],
        },
        "defaultContentType": "application/protobuf",
        "servers": {
            "development": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "`make dev` (scripts/devenv.py finds or starts NATS here or on the next free port).",
            },
            "production": {
                "host": "nats.nats.svc:4222",
                "protocol": "nats",
                "description": "The JetStream cluster in Kubernetes (`deploy/nats/`); users and permissions in `deploy/nats/accounts.conf`.",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "parameters": {
                name: {"description": text, "examples": examples} for name, (text, examples) in PARAMETERS.items()
            },
        },
    }


# ---------------------------------------------------------------- output


class Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # noqa: D102 - every node written out in full
        return True


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)

HEADER = """\
# Baladiya domain events, AsyncAPI 3.0. Generated by scripts/asyncapi_gen.py
# (`make asyncapi`) from its event list and proto/: edit those, not this file.
# Guide: docs/analysts.md.
"""


def render_yaml(doc: dict) -> str:
    return HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)


def events_table(doc: dict) -> str:
    """The events table of docs/analysts.md, from an AsyncAPI document."""
    rows = [
        "| Event | Subject (after the namespace) | Event type (`ce-type`) | Payload message | Stream | Key fields |",
        "|---|---|---|---|---|---|",
    ]
    for channel in doc["channels"].values():
        (ref,) = channel["messages"].values()
        message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        keys = ", ".join(f"`{k}`" for k in message.get("x-key-fields", []))
        rows.append(
            f"| {channel['title']} | `{channel['address']}` | `{message['x-cloudevents-type']}` | "
            f"`{message['x-protobuf-message']}` | {channel['x-jetstream-stream']} | {keys} |"
        )
    return "\n".join(rows)


def with_table(page: str, table: str) -> str:
    if TABLE_BEGIN not in page or TABLE_END not in page:
        sys.exit(f"asyncapi_gen: {ANALYSTS.relative_to(ROOT)} lacks the table markers")
    head, rest = page.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from what would be written")
    args = parser.parse_args()
    doc = build(Catalogue.load(descriptor_set()))
    text = render_yaml(doc)
    page = with_table(ANALYSTS.read_text(), events_table(yaml.safe_load(text)))
    stale = []
    for path, new in ((ASYNCAPI, text), (ANALYSTS, page)):
        old = path.read_text() if path.exists() else ""
        if old == new:
            continue
        if args.check:
            stale.append(path)
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), str(path.relative_to(ROOT)), "generated", n=1))
        else:
            path.write_text(new)
            print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    if stale:
        sys.exit("asyncapi_gen: stale, run `make asyncapi`: " + ", ".join(str(p.relative_to(ROOT)) for p in stale))


if __name__ == "__main__":
    main()

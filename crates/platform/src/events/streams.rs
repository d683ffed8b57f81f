//! The platform's streams, one per producing domain. Producers provision
//! theirs at start; a consumer provisions the stream it reads too, so start
//! order never matters.
//!
//! Routing and licensing carry low watermarks because their events move SLA
//! clocks; intake's do not (a case's clocks start from routing's event, which
//! carries the report's receipt) and partners' changes of terms and calendars
//! are corrections by nature (a holiday announced after the fact changes the
//! past), so the SLA watcher corrects for them instead of waiting on them.

use super::StreamSpec;

/// Citizen reports: `baladiya.intake.report.<event>.<MUNICIPALITY>.<CATEGORY>`.
pub const INTAKE: StreamSpec = StreamSpec {
    name: "INTAKE",
    subjects: &["baladiya.intake.>"],
    watermark: None,
};

/// Cases: `baladiya.routing.case.<event>.<MUNICIPALITY>.<ASSIGNEE>`.
pub const ROUTING: StreamSpec = StreamSpec {
    name: "ROUTING",
    subjects: &["baladiya.routing.>"],
    watermark: Some("baladiya.routing.watermark"),
};

/// Partners, agreements, calendars: `baladiya.partners.<aggregate>.<event>.<CODE>`.
pub const PARTNERS: StreamSpec = StreamSpec {
    name: "PARTNERS",
    subjects: &["baladiya.partners.>"],
    watermark: None,
};

/// SLA clocks and escalations: `baladiya.sla.clock.<event>.<PARTNER>`,
/// `baladiya.sla.escalation.raised.<PARTNER>`.
pub const SLA: StreamSpec = StreamSpec {
    name: "SLA",
    subjects: &["baladiya.sla.>"],
    watermark: None,
};

/// Applications, licenses, inspections:
/// `baladiya.licensing.<aggregate>.<event>.<MUNICIPALITY>.<TYPE>`.
pub const LICENSING: StreamSpec = StreamSpec {
    name: "LICENSING",
    subjects: &["baladiya.licensing.>"],
    watermark: Some("baladiya.licensing.watermark"),
};

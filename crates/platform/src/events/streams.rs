//! The platform's streams, one per producing domain. Producers provision
//! theirs at start; a consumer provisions the stream it reads too, so start
//! order never matters.

use super::StreamSpec;

/// Citizen reports: `baladiya.intake.report.<event>.<MUNICIPALITY>.<CATEGORY>`.
pub const INTAKE: StreamSpec = StreamSpec {
    name: "INTAKE",
    subjects: &["baladiya.intake.>"],
};

/// Cases: `baladiya.routing.case.<event>.<MUNICIPALITY>.<ASSIGNEE>`.
pub const ROUTING: StreamSpec = StreamSpec {
    name: "ROUTING",
    subjects: &["baladiya.routing.>"],
};

/// Partners, agreements, calendars: `baladiya.partners.<aggregate>.<event>.<CODE>`.
pub const PARTNERS: StreamSpec = StreamSpec {
    name: "PARTNERS",
    subjects: &["baladiya.partners.>"],
};

/// SLA clocks and escalations: `baladiya.sla.clock.<event>.<PARTNER>`,
/// `baladiya.sla.escalation.raised.<PARTNER>`.
pub const SLA: StreamSpec = StreamSpec {
    name: "SLA",
    subjects: &["baladiya.sla.>"],
};

/// Applications, licenses, inspections:
/// `baladiya.licensing.<aggregate>.<event>.<MUNICIPALITY>.<TYPE>`.
pub const LICENSING: StreamSpec = StreamSpec {
    name: "LICENSING",
    subjects: &["baladiya.licensing.>"],
};

//! Proto <-> domain: the stored names of proto enums, requests as the
//! domain's values and stored reports as the API shows them. Pure.

use baladiya_platform::auth::CallerIdentity;
use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::intake::v1 as pb;
use chrono::{DateTime, Utc};

use crate::domain::{AttachmentRef, Category, ChannelName, Priority, Submission};
use crate::store::{ReportFilter, ReportRow};

/// Channels as stored, in proto order.
const CHANNELS: [(pb::Channel, &str); 10] = [
    (pb::Channel::CallCenter940, "call_center_940"),
    (pb::Channel::BaladyPortal, "balady_portal"),
    (pb::Channel::MobileApp, "mobile_app"),
    (pb::Channel::Kiosk, "kiosk"),
    (pb::Channel::SocialMedia, "social_media"),
    (pb::Channel::MunicipalityOffice, "municipality_office"),
    (pb::Channel::MobileServiceCenter, "mobile_service_center"),
    (pb::Channel::MunicipalAdvisor, "municipal_advisor"),
    (pb::Channel::PartnerSystem, "partner_system"),
    (pb::Channel::Open311, "open311"),
];

/// Statuses as stored.
const STATUSES: [(pb::ReportStatus, &str); 8] = [
    (pb::ReportStatus::Received, "received"),
    (pb::ReportStatus::Routed, "routed"),
    (pb::ReportStatus::Acknowledged, "acknowledged"),
    (pb::ReportStatus::InProgress, "in_progress"),
    (pb::ReportStatus::OnHold, "on_hold"),
    (pb::ReportStatus::Resolved, "resolved"),
    (pb::ReportStatus::Closed, "closed"),
    (pb::ReportStatus::Reopened, "reopened"),
];

/// The stored name of a proto enum value, from a table of pairs.
fn name_of<E: Copy + Into<i32>>(table: &[(E, &'static str)], value: i32) -> Option<&'static str> {
    table
        .iter()
        .find(|(e, _)| (*e).into() == value)
        .map(|(_, n)| *n)
}

/// The proto enum value of a stored name (0, unspecified, if unknown).
fn value_of<E: Copy + Into<i32>>(table: &[(E, &'static str)], name: &str) -> i32 {
    table
        .iter()
        .find(|(_, n)| *n == name)
        .map_or(0, |(e, _)| (*e).into())
}

/// The stored name of a proto channel.
pub fn channel_name(c: i32) -> Option<&'static str> {
    name_of(&CHANNELS, c)
}

/// The proto channel of a stored name.
pub fn channel_proto(name: &str) -> i32 {
    value_of(&CHANNELS, name)
}

/// The stored name of a proto report status.
pub fn status_name(s: i32) -> Option<&'static str> {
    name_of(&STATUSES, s)
}

/// The proto report status of a stored name.
pub fn status_proto(name: &str) -> i32 {
    value_of(&STATUSES, name)
}

/// A proto priority (none when unspecified).
pub fn priority_from_proto(p: i32) -> Option<Priority> {
    match common::Priority::try_from(p).ok()? {
        common::Priority::Low => Some(Priority::Low),
        common::Priority::Normal => Some(Priority::Normal),
        common::Priority::High => Some(Priority::High),
        common::Priority::Urgent => Some(Priority::Urgent),
        common::Priority::Unspecified => None,
    }
}

/// A priority as proto.
pub fn priority_proto(p: Priority) -> i32 {
    (match p {
        Priority::Low => common::Priority::Low,
        Priority::Normal => common::Priority::Normal,
        Priority::High => common::Priority::High,
        Priority::Urgent => common::Priority::Urgent,
    }) as i32
}

/// A category as the API shows it.
pub fn category_proto(c: &Category) -> pb::Category {
    pb::Category {
        code: c.code.clone(),
        name: Some(common::LocalizedText {
            ar: c.name_ar.clone(),
            en: c.name_en.clone(),
        }),
        group: c.group.clone(),
        default_priority: priority_proto(c.default_priority),
        urgent_capable: c.urgent_capable,
        duplicate_radius_meters: c.duplicate_radius_meters,
        duplicate_window_hours: c.duplicate_window_hours,
        active: c.active,
    }
}

/// Attachment references as proto.
pub fn attachments_proto(a: &[AttachmentRef]) -> Vec<pb::Attachment> {
    a.iter()
        .map(|a| pb::Attachment {
            uri: a.uri.clone(),
            content_type: a.content_type.clone(),
            size_bytes: a.size_bytes,
        })
        .collect()
}

/// A stored report as the API shows it.
pub fn report_proto(r: &ReportRow) -> pb::Report {
    pb::Report {
        id: r.id.to_string(),
        tracking_number: r.tracking_number.clone(),
        status: status_proto(&r.status),
        municipality_code: r.municipality_code.clone(),
        category_code: r.category_code.clone(),
        priority: Priority::parse(&r.priority).map_or(0, priority_proto),
        priority_reason: r.priority_reason.clone(),
        duplicate_of: r.duplicate_of.map(|d| d.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(r.created_at)),
        channel: channel_proto(&r.channel),
        description: r.description.clone(),
        location: Some(common::Location {
            latitude: r.latitude.unwrap_or_default(),
            longitude: r.longitude.unwrap_or_default(),
            national_address_short: r.national_address_short.clone().unwrap_or_default(),
            municipality_code: r.municipality_code.clone(),
        }),
        observed_at: r.observed_at.map(timestamp),
        assignee_code: r.assignee_code.clone().unwrap_or_default(),
        expected_resolution_at: r.expected_resolution_at.map(timestamp),
        supporters: r.supporters.max(0) as u32,
        rating: r.rating_score.map(|score| pb::Rating {
            score: score.max(0) as u32,
            comment: r.rating_comment.clone().unwrap_or_default(),
            rated_at: r.rated_at.map(timestamp),
        }),
        attachments: attachments_proto(&r.attachments),
        status_changed_at: Some(timestamp(r.status_changed_at)),
    }
}

/// The attachment references of a submit request.
pub fn attachments_from_proto(attachments: &[pb::Attachment]) -> Vec<AttachmentRef> {
    attachments
        .iter()
        .map(|a| AttachmentRef {
            uri: a.uri.clone(),
            content_type: a.content_type.clone(),
            size_bytes: a.size_bytes,
        })
        .collect()
}

/// The raw fields of a submit request, for the domain's rules;
/// `attachments` are the request's, from [`attachments_from_proto`].
pub fn submission<'a>(
    req: &'a pb::SubmitReportRequest,
    attachments: &'a [AttachmentRef],
) -> Submission<'a> {
    let location = req.location.as_ref();
    let reporter = req.reporter.as_ref();
    Submission {
        request_id: &req.request_id,
        channel: channel_name(req.channel),
        category_code: &req.category_code,
        description: &req.description,
        latitude: location.map_or(0.0, |l| l.latitude),
        longitude: location.map_or(0.0, |l| l.longitude),
        national_address_short: location.map_or("", |l| &l.national_address_short),
        municipality_code: location.map_or("", |l| &l.municipality_code),
        has_location: location.is_some(),
        reporter_name: reporter.map_or("", |r| &r.name),
        reporter_phone: reporter.map_or("", |r| &r.phone),
        reporter_national_id: reporter.map_or("", |r| &r.national_id),
        attachments,
        observed_at: req.observed_at.as_ref().map(instant),
        priority_hint: priority_from_proto(req.priority_hint),
    }
}

/// The stored channel the caller's token names, if it names one.
pub fn caller_channel(who: &CallerIdentity) -> Option<ChannelName> {
    who.channel
        .as_deref()
        .and_then(pb::Channel::from_str_name)
        .and_then(|c| channel_name(c as i32))
}

/// A category edit, and whether its default priority was given (the rest
/// is checked by [`Category::check`]).
pub fn category_from_proto(c: pb::Category) -> (Category, bool) {
    let default_priority = priority_from_proto(c.default_priority);
    let name = c.name.unwrap_or_default();
    let category = Category {
        code: c.code.trim().to_string(),
        name_ar: name.ar,
        name_en: name.en,
        group: c.group,
        default_priority: default_priority.unwrap_or(Priority::Normal),
        urgent_capable: c.urgent_capable,
        duplicate_radius_meters: c.duplicate_radius_meters,
        duplicate_window_hours: c.duplicate_window_hours,
        active: c.active,
    };
    (category, default_priority.is_some())
}

/// The store's filter for a checked `ListReports` request whose creation
/// window is `from`..`to`.
pub fn report_filter(
    req: &pb::ListReportsRequest,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> ReportFilter {
    ReportFilter {
        municipality_code: Some(req.municipality_code.clone()).filter(|x| !x.is_empty()),
        category_codes: Some(req.category_code.clone())
            .into_iter()
            .chain(req.category_codes.iter().cloned())
            .filter(|x| !x.is_empty())
            .collect(),
        statuses: Some(req.status)
            .into_iter()
            .chain(req.statuses.iter().copied())
            .filter_map(status_name)
            .map(String::from)
            .collect(),
        channel: channel_name(req.channel).map(String::from),
        created_from: from,
        created_to: to,
    }
}

/// What a `ListReports` page token is bound to: every filter of the request.
pub fn list_page_key(req: &pb::ListReportsRequest) -> String {
    let created = req.created.unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}",
        req.municipality_code,
        req.category_code,
        req.status,
        req.channel,
        created.start_time.map(|t| (t.seconds, t.nanos)),
        created.end_time.map(|t| (t.seconds, t.nanos)),
        req.statuses,
        req.category_codes,
    )
}

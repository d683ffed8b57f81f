//! Proto messages to partner values and back. Parsing problems become field
//! violations with the proto field paths callers sent. Calendars and
//! agreements convert in `baladiya_agreements::convert`, re-exported.

use baladiya_platform::error::Violations;
use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::timestamp;
use baladiya_proto::partners::v1 as pb;
use chrono::{DateTime, Utc};

use crate::domain::{Contact, Partner, PartnerKind};

pub use baladiya_agreements::convert::{
    agreement_to_proto, api_path, body_from_proto, calendar_from_proto, calendar_to_proto,
    clearance_to_proto, holiday_from_proto, ladder_to_proto, override_from_proto,
    priority_from_proto, terms_to_proto,
};

pub fn kind_from_proto(kind: i32) -> Option<PartnerKind> {
    match pb::PartnerKind::try_from(kind).ok()? {
        pb::PartnerKind::Ministry => Some(PartnerKind::Ministry),
        pb::PartnerKind::MunicipalDepartment => Some(PartnerKind::MunicipalDepartment),
        pb::PartnerKind::Utility => Some(PartnerKind::Utility),
        pb::PartnerKind::PrivateOperator => Some(PartnerKind::PrivateOperator),
        pb::PartnerKind::Unspecified => None,
    }
}

fn kind_to_proto(kind: PartnerKind) -> pb::PartnerKind {
    match kind {
        PartnerKind::Ministry => pb::PartnerKind::Ministry,
        PartnerKind::MunicipalDepartment => pb::PartnerKind::MunicipalDepartment,
        PartnerKind::Utility => pb::PartnerKind::Utility,
        PartnerKind::PrivateOperator => pb::PartnerKind::PrivateOperator,
    }
}

/// A partner from an upsert request.
pub fn partner_from_proto(p: &pb::Partner, v: &mut Violations) -> Partner {
    let kind = kind_from_proto(p.kind);
    v.check(kind.is_some(), "partner.kind", "is required");
    let name = p.name.clone().unwrap_or_default();
    Partner {
        code: p.code.trim().to_string(),
        name_ar: name.ar,
        name_en: name.en,
        kind: kind.unwrap_or(PartnerKind::MunicipalDepartment),
        contacts: p
            .contacts
            .iter()
            .map(|c| Contact {
                level: c.level,
                name: c.name.clone(),
                email: c.email.clone(),
                phone: c.phone.clone(),
            })
            .collect(),
        calendar_id: p.calendar_id.clone(),
        active: p.active,
    }
}

/// A partner for a response.
pub fn partner_to_proto(p: &Partner, updated_at: DateTime<Utc>) -> pb::Partner {
    pb::Partner {
        code: p.code.clone(),
        name: Some(common::LocalizedText {
            ar: p.name_ar.clone(),
            en: p.name_en.clone(),
        }),
        kind: kind_to_proto(p.kind) as i32,
        contacts: p
            .contacts
            .iter()
            .map(|c| pb::Contact {
                level: c.level,
                name: c.name.clone(),
                email: c.email.clone(),
                phone: c.phone.clone(),
            })
            .collect(),
        calendar_id: p.calendar_id.clone(),
        active: p.active,
        update_time: Some(timestamp(updated_at)),
    }
}

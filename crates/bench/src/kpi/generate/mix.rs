//! What the generated stories are made of: the seeded municipalities,
//! channels, priorities, categories, license types and scores with their
//! weights, the targets, the working-hours clock, and the small seeded
//! random source that picks among them. Tables only, so the stories read as
//! stories.

use baladiya_proto::common::v1::Priority;
use baladiya_proto::intake::v1::Channel;
use chrono::{DateTime, Utc};

/// Seconds in the year the stories start in.
pub(super) const YEAR_SECS: u64 = 365 * 86_400;
/// Wall-clock seconds per working hour: a 40-hour week in a 168-hour one.
pub(super) const WALL_PER_WORKING_HOUR: f64 = 4.2 * 3600.0;
/// Working hours in a working day, as the decision clocks count them.
pub(super) const WORKING_DAY_HOURS: i64 = 8;
/// The acknowledge target of every case, in working hours.
pub(super) const ACK_TARGET_HOURS: i64 = 4;
/// The end-to-end target of every case, in working hours.
pub(super) const E2E_TARGET_HOURS: i64 = 80;
/// Where a case goes when its assignee sends it back (the seeded fallback).
pub(super) const TRIAGE: &str = "MUN-TRIAGE";

/// The six seeded municipalities and four more (the projection takes any
/// code), weighted roughly by population.
pub(super) const MUNICIPALITIES: [(&str, u32); 10] = [
    ("RIYADH", 30),
    ("JEDDAH", 18),
    ("EASTERN", 12),
    ("MAKKAH", 10),
    ("MADINAH", 8),
    ("QASSIM", 5),
    ("ASIR", 5),
    ("MUSCAT", 4),
    ("TABUK", 4),
    ("HAIL", 4),
];

pub(super) const CHANNELS: [(Channel, u32); 6] = [
    (Channel::CallCenter940, 35),
    (Channel::MobileApp, 30),
    (Channel::BaladyPortal, 20),
    (Channel::SocialMedia, 7),
    (Channel::MunicipalityOffice, 5),
    (Channel::Kiosk, 3),
];

pub(super) const PRIORITIES: [(Priority, u32); 4] = [
    (Priority::Low, 15),
    (Priority::Normal, 60),
    (Priority::High, 20),
    (Priority::Urgent, 5),
];

/// A seeded category, with the assignee the seeded routing rules give it.
pub(super) struct Category {
    pub(super) code: &'static str,
    pub(super) group: &'static str,
    pub(super) assignee: &'static str,
    pub(super) weight: u32,
    /// The resolve target, in working hours.
    pub(super) resolve_hours: i64,
}

const fn category(
    code: &'static str,
    group: &'static str,
    assignee: &'static str,
    weight: u32,
    resolve_hours: i64,
) -> Category {
    Category {
        code,
        group,
        assignee,
        weight,
        resolve_hours,
    }
}

#[rustfmt::skip]
pub(super) const CATEGORIES: [Category; 17] = [
    category("POTHOLE", "roads", "MUN-ROADS", 18, 48),
    category("STREET_LIGHTING", "lighting", "MUN-LIGHTING", 12, 24),
    category("WASTE_COLLECTION", "cleaning", "MUN-CLEANING", 20, 24),
    category("GRAFFITI", "visual_pollution", "MUN-VISUAL", 4, 72),
    category("ABANDONED_CAR", "visual_pollution", "MUN-VISUAL", 4, 120),
    category("CONSTRUCTION_DEBRIS", "visual_pollution", "MUN-VISUAL", 6, 72),
    category("ILLEGAL_SIGN", "visual_pollution", "MUN-VISUAL", 3, 72),
    category("STRAY_ANIMALS", "public_health", "MUN-HEALTH", 5, 48),
    category("FOOD_SAFETY", "public_health", "MUN-HEALTH", 4, 24),
    category("ILLEGAL_CONSTRUCTION", "building", "MUN-BUILDING", 4, 120),
    category("WATER_LEAK", "water", "MEWA", 6, 24),
    category("SEWAGE_OVERFLOW", "water", "MEWA", 4, 24),
    category("ROAD_WORKS_DAMAGE", "roads", "MOTLS", 3, 72),
    category("TRAFFIC_SIGNAL", "traffic", "MOTLS", 3, 24),
    category("HIGHWAY_DEFECT", "roads", "MOTLS", 2, 120),
    category("LIVESTOCK_MARKET", "agriculture", "MEWA", 1, 72),
    category("DEED_ISSUE", "real_estate", "MOJ", 1, 120),
];

/// A seeded license type.
pub(super) struct LicenseType {
    pub(super) code: &'static str,
    pub(super) target_days: u32,
    pub(super) weight: u32,
    /// Needs the Ministry of Justice's clearance.
    pub(super) clearance: bool,
    /// Needs a site inspection.
    pub(super) inspection: bool,
}

pub(super) const LICENSE_TYPES: [LicenseType; 4] = [
    LicenseType {
        code: "PROFESSIONAL_LICENSE",
        target_days: 5,
        weight: 45,
        clearance: false,
        inspection: false,
    },
    LicenseType {
        code: "FOOD_ESTABLISHMENT",
        target_days: 5,
        weight: 30,
        clearance: false,
        inspection: true,
    },
    LicenseType {
        code: "BUILDING_PERMIT",
        target_days: 15,
        weight: 20,
        clearance: true,
        inspection: true,
    },
    LicenseType {
        code: "LAND_SUBDIVISION",
        target_days: 60,
        weight: 5,
        clearance: true,
        inspection: false,
    },
];

pub(super) const ACTIVITIES: [(&str, u32); 2] = [("PUBLIC_HEALTH", 60), ("COMMERCIAL_MARKET", 40)];

pub(super) const SCORES: [(u32, u32); 5] = [(5, 40), (4, 25), (3, 13), (2, 8), (1, 14)];

/// SplitMix64: a small, fast, seeded generator, so the mix is the same on
/// every run without a dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [0, n).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One of `items`, in proportion to `weight`.
    pub(super) fn pick<'a, T>(&mut self, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
        let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
        let mut at = self.below(total);
        for item in items {
            let w = u64::from(weight(item));
            if at < w {
                return item;
            }
            at -= w;
        }
        &items[items.len() - 1]
    }

    /// An instant in the year before `now`, to the second.
    pub(super) fn within_year(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - secs(self.below(YEAR_SECS))
    }
}

pub(super) fn secs(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The wall-clock time `working_hours` take.
pub(super) fn wall(working_hours: f64) -> chrono::Duration {
    chrono::Duration::seconds((working_hours * WALL_PER_WORKING_HOUR) as i64)
}

/// The working hours in `elapsed` wall-clock time.
pub(super) fn working_hours(elapsed: chrono::Duration) -> f64 {
    elapsed.num_seconds() as f64 / WALL_PER_WORKING_HOUR
}

/// `n` hours as a proto duration.
pub(super) fn hours(n: f64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (n * 3600.0) as i64,
        nanos: 0,
    }
}

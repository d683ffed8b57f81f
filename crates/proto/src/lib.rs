//! Generated protobuf and gRPC code for every Baladiya package, plus the encoded
//! descriptor set that server reflection serves and that event consumers use to
//! decode any payload named by its `ce-dataschema`.
//!
//! Module paths follow proto packages: `baladiya.admin.v1` is [`admin::v1`].

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

/// The encoded `FileDescriptorSet` of every Baladiya proto, with imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/baladiya_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("baladiya.common.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("baladiya.events.v1");
    }
}

pub mod intake {
    pub mod v1 {
        tonic::include_proto!("baladiya.intake.v1");
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("baladiya.intake.events.v1");
        }
    }
}

pub mod routing {
    pub mod v1 {
        tonic::include_proto!("baladiya.routing.v1");
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("baladiya.routing.events.v1");
        }
    }
}

pub mod licensing {
    pub mod v1 {
        tonic::include_proto!("baladiya.licensing.v1");
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("baladiya.licensing.events.v1");
        }
    }
}

pub mod sla {
    pub mod v1 {
        tonic::include_proto!("baladiya.sla.v1");
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("baladiya.sla.events.v1");
        }
    }
}

pub mod partners {
    pub mod v1 {
        tonic::include_proto!("baladiya.partners.v1");
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("baladiya.partners.events.v1");
        }
    }
}

pub mod kpi {
    pub mod v1 {
        tonic::include_proto!("baladiya.kpi.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("baladiya.admin.v1");
    }
}

/// Conversions between protobuf well-known types and chrono.
pub mod convert {
    use chrono::{DateTime, Utc};

    /// A `google.protobuf.Timestamp` for an instant.
    pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }
    }

    /// The instant a `google.protobuf.Timestamp` names, if it is valid.
    pub fn instant(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn timestamps_round_trip_and_reject_bad_nanos() {
            let t = DateTime::parse_from_rfc3339("2026-03-01T07:30:00.25+03:00")
                .expect("time")
                .with_timezone(&Utc);
            assert_eq!(instant(&timestamp(t)), Some(t));
            let bad = prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            };
            assert_eq!(instant(&bad), None);
        }
    }
}

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

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("baladiya.admin.v1");
    }
}

/// A message type's CloudEvents `dataschema` / `Any` type URL.
pub fn type_url<M: prost::Name>() -> String {
    M::type_url()
}

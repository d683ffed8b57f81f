//! What a refused gRPC call says.

use tonic_types::StatusExt;

/// The fields a refusal's `BadRequest` details name, in order (none where it
/// has no such details).
pub fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

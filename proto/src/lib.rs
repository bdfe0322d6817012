//! The gRPC contract, `notify.v1` (`notify/v1/notify.proto` beside this crate): the generated
//! server and client, the file descriptor set for reflection, and the conversions between
//! its messages and the REST bodies of the `api` crate — a gRPC call is carried out as its
//! REST twin, so these conversions are the only gRPC-specific code on the request path.

pub mod convert;
pub mod wkt;

/// The generated messages, server (`notifications_server`) and client
/// (`notifications_client`).
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("notify.v1");
}

/// The encoded `FileDescriptorSet` of `notify.proto` and the well-known types it imports,
/// for the reflection service (`grpcurl list`, `grpcurl describe`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/notify_descriptor.bin"));

/// The service's full name, as it appears in paths (`/notify.v1.Notifications/Send`).
pub const SERVICE: &str = "notify.v1.Notifications";

//! Wire and disk formats of the trigger runtime, and nothing else.
//!
//! These prost messages cross process boundaries (the sidecar's gRPC service) or sit on
//! disk (the shard's RocksDB store), so they are a contract: every change is additive,
//! and `tests/snapshots.rs` pins their encoded bytes. The crate depends on no other part of
//! the project.
//!
//! Key types: [`Checkpoint`] (a Gazette consumer checkpoint), [`TransactionStats`] and
//! [`BindingStats`] (what a transaction read, per binding), [`TriggerParams`] (the
//! persisted trigger variables of a committed transaction), and the [`sidecar`] gRPC
//! service's messages, through which a consumer in another language drives a shard.
//!
//! Feature `grpc` adds the service itself (tonic server and client, and [`codec`]); the
//! sidecar enables it. Without it the crate is the prost messages alone, so a crate that
//! only reads or writes them (`triggers`, the fuzz targets) does not compile tonic.

#![allow(missing_docs)] // Generated code; the .proto file carries the documentation.

include!(concat!(env!("OUT_DIR"), "/triggers.rs"));

/// The shard sidecar's messages, and with feature `grpc` its gRPC service (server and
/// client).
pub mod sidecar {
    include!(concat!(env!("OUT_DIR"), "/triggers.sidecar.rs"));
    #[cfg(feature = "grpc")]
    include!(concat!(env!("OUT_DIR"), "/server/triggers.sidecar.rs"));
    #[cfg(feature = "grpc")]
    include!(concat!(env!("OUT_DIR"), "/client/triggers.sidecar.rs"));
}

#[cfg(feature = "grpc")]
pub mod codec;

impl DeliveryState {
    /// The state's name, as errors, logs and status print it: `PENDING`, `RUNNING`,
    /// `SUCCESS`, `FAILED` or `CANCELLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "PENDING",
            DeliveryState::Running => "RUNNING",
            DeliveryState::Success => "SUCCESS",
            DeliveryState::Failed => "FAILED",
            DeliveryState::Cancelled => "CANCELLED",
        }
    }
}

pub use prost::Message;
pub use prost_types::Timestamp;

/// The newest [`TriggerParams::version`] this build writes and understands.
pub const TRIGGER_PARAMS_VERSION: u32 = 3;

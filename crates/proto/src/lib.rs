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
//! service through which a consumer in another language drives a shard.

#![allow(missing_docs)] // Generated code; the .proto file carries the documentation.

include!(concat!(env!("OUT_DIR"), "/triggers.rs"));

/// The shard sidecar's gRPC service (server and client) and its messages.
pub mod sidecar {
    include!(concat!(env!("OUT_DIR"), "/triggers.sidecar.rs"));
    include!(concat!(env!("OUT_DIR"), "/client/triggers.sidecar.rs"));
}

pub mod codec;

pub use prost::Message;
pub use prost_types::Timestamp;

/// The newest [`TriggerParams::version`] this build writes and understands.
pub const TRIGGER_PARAMS_VERSION: u32 = 2;

//! The triggers crate's integration tests, one binary: delivery, dedupe and verification,
//! test-fire and token authentication against real receivers on 127.0.0.1, the JSON
//! Schema, SOPS compatibility with the real `sops`, and every README config.
//!
//! Run one group with a filter: `cargo test -p triggers --test integration token_auth::`.

mod dedupe_and_verify;
mod delivery;
mod flow_format;
mod readme;
mod schema;
mod sops_compat;
mod support;
mod test_fire;
mod token_auth;

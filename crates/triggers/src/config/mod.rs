//! Stage 1, configure: a config document in, the compiled [`Triggers`](crate::Triggers) out.
//!
//! Everything that reads or checks what an operator wrote lives here, and nothing here
//! sends or renders at delivery time (validation compiles the templates and token
//! endpoints once, through the other stages' checks).

/// A trigger's `collections`: which collections it fires for.
pub(crate) mod collections;
/// The config as written (serde, strict), its bounds and the document parser.
pub(crate) mod document;
/// How a trigger's backlog drains in decoupled delivery (`drain`).
pub(crate) mod drain;
/// Durations as Flow writes them (`timeout: 30s`, `interval: 30m`).
pub(crate) mod duration;
/// The nesting scan (JSON, YAML flow) run before any parser.
mod nesting;
/// The response policy (`responses`): "already delivered" and extra retry statuses.
pub(crate) mod responses;
/// The config's JSON Schema, generated from the types.
pub(crate) mod schema;
/// [`Secret`](crate::Secret): a string that never prints.
pub(crate) mod secret;
/// Configs encrypted at rest: the adapter to `triggers-sops`.
pub(crate) mod sops;
/// Publish-time validation into compiled [`Triggers`](crate::Triggers); every error at once.
pub(crate) mod validate;

//! Stage 2, render: a transaction's stats become [`Variables`](crate::Variables), and a
//! trigger's template renders against them into a payload.
//!
//! Pure and synchronous: no I/O, no clock but the documents' own.

/// Gazette v1 UUID clocks decoded into publish times.
pub(crate) mod clock;
/// Estuary Flow's persisted trigger variables, read into ours.
pub(crate) mod flow_params;
/// A payload rendered unsent, against given or placeholder variables.
pub(crate) mod preview;
/// Strict Handlebars templates, their helpers, bounds and output budget.
pub(crate) mod template;
/// The variables of a transaction: from stats, to and from `TriggerParams`.
pub(crate) mod variables;

//! The sidecar crate's integration tests, one binary (each test binary links RocksDB, and
//! linking is most of a rebuild): the gRPC service in-process, the `triggers` tool and the
//! binaries as real processes, the SIGKILL crash tests and the soak (feature
//! `failpoints`), and a real Apache Airflow 2 and 3.
//!
//! Run one group with a filter: `cargo test -p triggers-sidecar --all-features --test
//! integration crash::`.

mod airflow;
mod cli;
mod console;
#[cfg(feature = "failpoints")]
mod crash;
mod shards;
mod sidecar;
mod support;

//! The gateway daemon and CLI as a library, so tests and benchmarks reuse its parts.
//!
//! Five rooms, each importing only those after it (docs/architecture.md, "Rooms"):
//! `daemon` (the tokio program) -> `control` (the operator's vocabulary, socket and views) ->
//! `datapath` (everything that talks to the kernel) -> `config` (the file) -> `cluster` (the
//! sans-IO protocol).
pub mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;

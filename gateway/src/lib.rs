//! The gateway daemon and CLI as a library, so tests and benchmarks reuse its parts.
pub mod ebpf_object;

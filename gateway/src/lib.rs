//! The gateway daemon and CLI as a library, so tests and benchmarks reuse its parts.
pub mod batch;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod ebpf_object;
pub mod faults;
pub mod garp;
pub mod health;
pub mod maglev;
pub mod netlink;
pub mod stats;
pub mod tables;
pub mod views;

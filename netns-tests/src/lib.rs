//! A testbed of network namespaces for the gateway: hosts, bridges and veth links built from a
//! description, processes started inside them, and everything removed on drop (even on panic).
//! The end-to-end tests, the demo and the end-to-end benchmark all stand on it. Its command
//! runner and namespace type are `testbed-kit`'s (which the gateway's own tests share),
//! re-exported here as [`cmd`] and [`netns`].
pub mod arp;
pub mod binaries;
pub mod capture;
pub mod chaos;
pub mod client;
pub mod cluster;
pub mod cluster_topology;
pub mod cpu;
pub mod daemon;
pub mod failover;
pub mod forge;
pub mod hog;
pub mod host_death;
pub mod keepalived;
pub mod nft_baseline;
pub mod packet;
pub mod process;
pub mod scenario;
pub mod testbed;
pub mod topology;
pub mod wrk;
pub mod xdp_pass;

pub use testbed_kit::{cmd, netns};

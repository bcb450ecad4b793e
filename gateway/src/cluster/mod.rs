//! The cluster: membership ring, VIP ownership and the message transport between nodes.
//!
//! Everything here is sans-IO: no sockets, clocks, maps, threads or async. Time comes in as
//! `now: Instant`, timers go out as deadlines, packets go out as values the daemon sends.
pub mod config_change;
pub mod copies;
pub mod driver;
pub mod envelope;
pub mod events;
pub mod handoff;
pub mod keys;
pub mod message;
pub mod quorum;
pub mod replay;
pub mod sim;
pub mod token_ring;
pub mod transport;
pub mod types;

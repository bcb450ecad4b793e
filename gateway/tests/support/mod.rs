//! Shared by the XDP fixtures and the XDP benchmark: a private network namespace with the
//! gateway's NICs, the loaded object, and a packet builder.
#![allow(dead_code)] // Each user (test, example) needs a different part.

pub mod netns;
pub mod packets;
pub mod testbed;

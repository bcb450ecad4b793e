//! Shared by the XDP fixtures and the XDP benchmark: a private network namespace (testbed-kit's)
//! with the gateway's NICs, the loaded object, and a packet builder.
#![allow(dead_code)] // Each user (test, example) needs a different part.

pub mod packets;
pub mod testbed;

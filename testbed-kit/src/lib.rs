//! What every test that builds networks needs, and nothing of the gateway: helper programs run
//! with errors that explain themselves ([`cmd`]) and network namespaces removed on drop, even
//! on panic ([`netns`]). The gateway's own tests use it as a dev-dependency; the testbed library
//! (`netns-tests`) builds on it and re-exports both modules.
pub mod cmd;
pub mod netns;

pub use netns::Netns;

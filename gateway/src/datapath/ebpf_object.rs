//! The XDP object built by `build.rs`, embedded in the binary.

/// The ELF object holding the `gateway` and `xdp_pass` programs and their maps.
pub static BYTES: &[u8] = aya::include_bytes_aligned!(env!("GATEWAY_EBPF_OBJECT"));

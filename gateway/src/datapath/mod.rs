//! Everything that touches the kernel: loading and attaching the XDP object, the maps and how
//! a configuration is written into them (Maglev tables included), the connection tables, batch syscalls,
//! rtnetlink, gratuitous ARP, and the worker thread that owns the big tables.
pub mod batch;
pub mod conntrack;
pub mod ebpf_object;
pub mod garp;
pub mod loader;
pub mod maps;
pub mod netlink;
pub mod pin_dir;
pub mod worker;

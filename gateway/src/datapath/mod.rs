//! Everything that touches the kernel: loading and attaching the XDP object, the maps and how
//! a configuration is written into them, the connection tables, batch syscalls, Maglev tables,
//! rtnetlink, gratuitous ARP and the data path's counters.
pub mod batch;
pub mod conntrack;
pub mod ebpf_object;
pub mod garp;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod netlink;
pub mod worker;

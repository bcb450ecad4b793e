//! The gateway's surroundings inside a private namespace: an external NIC (clients, VIPs) and an
//! internal NIC (backends), each a veth whose peer stays in the namespace, with static
//! neighbours so `bpf_fib_lookup` answers deterministically, and the XDP object loaded with its
//! maps filled for one node that owns one VIP.
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunOptions, Xdp},
    util::nr_cpus,
    Ebpf,
};
use gateway_common::{
    maps, proto, role, vip_flags, Backend, Counter, HomeHop, HomeKey, Iface, RateWindow, Service,
    ServiceKey, Settings, Vip, MAGLEV_MAX,
};

use testbed_kit::Netns;

pub const EXT_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];
pub const INT_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 1];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x64];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0xfe];
pub const BACKEND_MACS: [[u8; 6]; 2] = [[0x02, 0, 0, 0, 2, 10], [0x02, 0, 0, 0, 2, 11]];
pub const EXT_ADDR: [u8; 4] = [10, 0, 1, 1];
pub const INT_ADDR: [u8; 4] = [10, 0, 2, 1];
pub const CLIENT: [u8; 4] = [10, 0, 1, 100];
/// A client behind the router (its address is not on the external subnet).
pub const REMOTE_CLIENT: [u8; 4] = [192, 168, 7, 7];
pub const VIP: [u8; 4] = [10, 0, 1, 50];
/// A VIP another node owns.
pub const FOREIGN_VIP: [u8; 4] = [10, 0, 1, 51];
/// Backends 0 and 1 have static neighbours; backend 2's neighbour is unresolved.
pub const BACKENDS: [[u8; 4]; 3] = [[10, 0, 2, 10], [10, 0, 2, 11], [10, 0, 2, 12]];
pub const BACKEND_PORT: u16 = 8080;
/// TCP service on backend 0; UDP service on backend 1; TCP service on unresolved backend 2;
/// TCP service with no healthy backend.
pub const PORT_TCP: u16 = 80;
pub const PORT_UDP: u16 = 53;
pub const PORT_UNRESOLVED: u16 = 81;
pub const PORT_NO_BACKEND: u16 = 82;
/// The cluster protocol's UDP port, and another node's primary address (a peer).
pub const CLUSTER_PORT: u16 = 7400;
pub const PEER: [u8; 4] = [10, 0, 1, 2];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 2];
pub const NAT_MIN: u16 = 20000;
pub const NAT_MAX: u16 = 20999;
/// Another node on the internal subnet whose NAT block is 30000-30999 (a static neighbour),
/// and one whose block is 31000-31999 but whose MAC is unresolved.
pub const HOME: [u8; 4] = [10, 0, 2, 2];
pub const HOME_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 2];
pub const HOME_PORT: u16 = 30005;
pub const HOME_UNRESOLVED: [u8; 4] = [10, 0, 2, 3];
pub const HOME_UNRESOLVED_PORT: u16 = 31005;
/// Maglev table size of the test services (prime).
const TABLE: u32 = 7;

/// The settings a testbed starts with; fixtures that change them start from these.
pub fn settings() -> Settings {
    Settings {
        nat_port_min: NAT_MIN,
        nat_port_max: NAT_MAX,
        cluster_port: CLUSTER_PORT,
        ..Settings::default()
    }
}

/// Which NIC a packet arrives on.
#[derive(Clone, Copy, Debug)]
pub enum Nic {
    External,
    Internal,
}

/// A namespace with the gateway's NICs and the XDP object loaded in it.
pub struct Testbed {
    pub ebpf: Ebpf,
    pub ext_ifindex: u32,
    pub int_ifindex: u32,
    // Last, so the maps and programs are closed before the namespace goes.
    pub netns: Netns,
}

/// An address as the maps hold it (network order in a native `u32`).
pub fn be(addr: [u8; 4]) -> u32 {
    u32::from_ne_bytes(addr)
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()).context(format!("ifindex of {name}")),
        i => Ok(i),
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Pins the calling thread to CPU 0, so per-CPU state (rate window) is one CPU's.
fn pin_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

impl Testbed {
    /// Builds the namespace and loads the object with `programs` loaded into the kernel.
    pub fn new(prefix: &str, programs: &[&str]) -> Result<Self> {
        pin_cpu0();
        let netns = Netns::enter(prefix)?;
        netns.sysctl("net.ipv4.conf.all.forwarding=1")?;
        netns.sysctl("net.ipv4.conf.default.forwarding=1")?;
        for (nic, peer, m, addr) in [
            ("ext0", "ext0p", EXT_MAC, EXT_ADDR),
            ("int0", "int0p", INT_MAC, INT_ADDR),
        ] {
            netns.ip(&format!(
                "link add {nic} address {} type veth peer name {peer}",
                mac(m)
            ))?;
            netns.ip(&format!("addr add {}/24 dev {nic}", Ipv4Addr::from(addr)))?;
            netns.ip(&format!("link set {nic} up"))?;
            netns.ip(&format!("link set {peer} up"))?;
        }
        netns.ip("route add 192.168.7.0/24 via 10.0.1.254")?;
        for (addr, m, dev) in [
            (CLIENT, CLIENT_MAC, "ext0"),
            ([10, 0, 1, 254], ROUTER_MAC, "ext0"),
            (BACKENDS[0], BACKEND_MACS[0], "int0"),
            (BACKENDS[1], BACKEND_MACS[1], "int0"),
            (HOME, HOME_MAC, "int0"),
            (PEER, PEER_MAC, "ext0"),
        ] {
            netns.ip(&format!(
                "neigh add {} lladdr {} dev {dev} nud permanent",
                Ipv4Addr::from(addr),
                mac(m)
            ))?;
        }
        let mut ebpf = Ebpf::load(gateway::datapath::ebpf_object::BYTES)?;
        for name in programs {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        let mut bed = Self {
            ebpf,
            ext_ifindex: ifindex("ext0")?,
            int_ifindex: ifindex("int0")?,
            netns,
        };
        bed.configure()?;
        Ok(bed)
    }

    fn configure(&mut self) -> Result<()> {
        let (ext, int) = (self.ext_ifindex, self.int_ifindex);
        let mut ifaces: HashMap<_, u32, Iface> = HashMap::try_from(self.map(maps::IFACES))?;
        ifaces.insert(
            ext,
            Iface {
                mac: EXT_MAC,
                role: role::EXTERNAL,
                flags: 0,
                addr: be(EXT_ADDR),
            },
            0,
        )?;
        ifaces.insert(
            int,
            Iface {
                mac: INT_MAC,
                role: role::INTERNAL,
                flags: 0,
                addr: be(INT_ADDR),
            },
            0,
        )?;
        let mut vips: HashMap<_, u32, Vip> = HashMap::try_from(self.map(maps::VIPS))?;
        vips.insert(
            be(VIP),
            Vip {
                flags: vip_flags::OWNED,
                ifindex: ext,
                ..Vip::default()
            },
            0,
        )?;
        vips.insert(
            be(FOREIGN_VIP),
            Vip {
                ifindex: ext,
                ..Vip::default()
            },
            0,
        )?;
        let mut backends: Array<_, Backend> = Array::try_from(self.map(maps::BACKENDS))?;
        for (i, addr) in BACKENDS.iter().enumerate() {
            backends.set(
                i as u32,
                Backend {
                    addr: be(*addr),
                    port: BACKEND_PORT.to_be(),
                    _pad: 0,
                },
                0,
            )?;
        }
        let services = [
            (PORT_TCP, proto::TCP, 0, TABLE),
            (PORT_UDP, proto::UDP, 1, TABLE),
            (PORT_UNRESOLVED, proto::TCP, 2, TABLE),
            (PORT_NO_BACKEND, proto::TCP, 3, 0),
        ];
        let mut maglev: Array<_, u32> = Array::try_from(self.map(maps::MAGLEV))?;
        for (_, _, id, size) in services {
            for slot in 0..size {
                // Service `id` sends everything to backend `id` (half 1, to exercise `half`).
                maglev.set((id * 2 + 1) * MAGLEV_MAX + slot, id, 0)?;
            }
        }
        let mut table: HashMap<_, ServiceKey, Service> =
            HashMap::try_from(self.map(maps::SERVICES))?;
        for (port, proto, id, size) in services {
            let key = ServiceKey {
                vip: be(VIP),
                port: port.to_be(),
                proto,
                _pad: 0,
            };
            table.insert(
                key,
                Service {
                    id,
                    table_size: size,
                    half: 1,
                    _pad: 0,
                },
                0,
            )?;
        }
        self.set_settings(settings())?;
        let mut peers: HashMap<_, u32, u32> = HashMap::try_from(self.map(maps::PEERS))?;
        peers.insert(be(PEER), 1, 0)?;
        let homes = [(2, 30000, HOME), (3, 31000, HOME_UNRESOLVED)];
        let mut ports: Array<_, u32> = Array::try_from(self.map(maps::NAT_HOMES))?;
        for (node, first, _) in homes {
            for port in first..first + 1000 {
                ports.set(port, node, 0)?;
            }
        }
        let mut hops: HashMap<_, HomeKey, HomeHop> = HashMap::try_from(self.map(maps::HOME_HOPS))?;
        // Node 2 is `HOME` on the internal subnet and `PEER` on the external one.
        let ext_hops = [(2, PEER, ext)];
        for (node, addr, ifindex) in homes
            .map(|(n, _, a)| (n, a, int))
            .into_iter()
            .chain(ext_hops)
        {
            let key = HomeKey { node, ifindex };
            let hop = HomeHop {
                addr: be(addr),
                ..HomeHop::default()
            };
            hops.insert(key, hop, 0)?;
        }
        self.set_lease(u64::MAX)
    }

    /// Rewrites `VIP`'s entry: this node's ownership and who holds its connections, with no
    /// time it was taken (no own entry counts as stale).
    pub fn set_vip(&mut self, flags: u32, owner: u32, previous: u32) -> Result<()> {
        self.write_vip(Vip {
            flags,
            owner,
            previous,
            ..Vip::default()
        })
    }

    /// Rewrites `VIP`'s entry as [`Testbed::set_vip`] does, with the block (first and last
    /// port) of a dead node this node rebuilds uncopied connections of.
    pub fn set_vip_rebuilding(
        &mut self,
        flags: u32,
        owner: u32,
        previous: u32,
        (rebuild_min, rebuild_max): (u16, u16),
    ) -> Result<()> {
        self.write_vip(Vip {
            flags,
            owner,
            previous,
            rebuild_min,
            rebuild_max,
            ..Vip::default()
        })
    }

    /// Rewrites `VIP`'s entry as [`Testbed::set_vip`] does, owned (and `flags`) since
    /// `owned_since_ns` (`CLOCK_MONOTONIC_COARSE`, the clock XDP reads).
    pub fn set_vip_taken(&mut self, flags: u32, previous: u32, owned_since_ns: u64) -> Result<()> {
        self.write_vip(Vip {
            flags: flags | gateway_common::vip_flags::OWNED,
            owner: 1,
            previous,
            owned_since_ns,
            ..Vip::default()
        })
    }

    fn write_vip(&mut self, vip: Vip) -> Result<()> {
        let vip = Vip {
            ifindex: self.ext_ifindex,
            ..vip
        };
        let mut vips: HashMap<_, u32, Vip> = HashMap::try_from(self.map(maps::VIPS))?;
        vips.insert(be(VIP), vip, 0)?;
        Ok(())
    }

    /// Sets the daemon's lease (`CLOCK_MONOTONIC` ns; 0 = expired).
    pub fn set_lease(&mut self, until_ns: u64) -> Result<()> {
        let mut lease: Array<_, u64> = Array::try_from(self.map(maps::LEASE))?;
        lease.set(0, until_ns, 0)?;
        Ok(())
    }

    fn map(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("no map {name}"))
    }

    /// Replaces `SETTINGS[0]`.
    pub fn set_settings(&mut self, settings: Settings) -> Result<()> {
        let mut map: Array<_, Settings> = Array::try_from(self.map(maps::SETTINGS))?;
        map.set(0, settings, 0)?;
        Ok(())
    }

    /// Points every slot of service `id`'s live Maglev half at `backend` (as a health change
    /// or a drain makes the daemon rebuild the table).
    pub fn set_maglev(&mut self, id: u32, backend: u32) -> Result<()> {
        let mut maglev: Array<_, u32> = Array::try_from(self.map(maps::MAGLEV))?;
        for slot in 0..TABLE {
            maglev.set((id * 2 + 1) * MAGLEV_MAX + slot, backend, 0)?;
        }
        Ok(())
    }

    /// Sets every CPU's rate window to "started now with `count` connections" (the data path
    /// reads the coarse monotonic clock).
    pub fn set_rate_window(&mut self, count: u32) -> Result<()> {
        let window = RateWindow {
            window_start_ns: coarse_now(),
            count,
            _pad: 0,
        };
        let mut map: PerCpuArray<_, RateWindow> = PerCpuArray::try_from(self.map(maps::RATE))?;
        map.set(
            0,
            PerCpuValues::try_from(vec![window; nr_cpus().map_err(|(_, e)| e)?])?,
            0,
        )?;
        Ok(())
    }

    /// Packets counted in every slot of a per-CPU counter map, summed over the CPUs.
    pub fn counters(&self, name: &str) -> Result<Vec<u64>> {
        let map: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(self.ebpf.map(name).context("no map")?)?;
        map.iter()
            .map(|values| Ok(values?.iter().map(|c| c.packets).sum()))
            .collect()
    }

    /// The ifindex of `nic`.
    pub fn ifindex(&self, nic: Nic) -> u32 {
        match nic {
            Nic::External => self.ext_ifindex,
            Nic::Internal => self.int_ifindex,
        }
    }

    /// Runs `program` on `packet` arriving on `nic`, `repeat` times: the action and output
    /// packet of the last run, and the kernel's mean time per run.
    pub fn run(
        &self,
        program: &str,
        nic: Nic,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(u32, Vec<u8>, std::time::Duration)> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .context("no program")?
            .try_into()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, packet.len() as u32, 0, self.ifindex(nic), 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = vec![0u8; packet.len() + 256];
        let result = prog.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..Default::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out, result.duration))
    }
}

/// Now on the clock the data path reads (`bpf_ktime_get_coarse_ns`).
pub fn coarse_now() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

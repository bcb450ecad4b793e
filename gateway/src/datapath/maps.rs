//! The daemon's handles on the XDP maps, in three groups with one owner each
//! (docs/architecture.md, "Who writes which map"): the small control maps the ring's shell
//! writes directly (NICs, VIPs, settings, lease, ARP claims, peers, NAT homes), the tables the
//! datapath worker owns (connections, services, Maglev, back-ends), and the per-CPU counters,
//! which anyone may read. Maglev tables are staged in the inactive half and switched in with
//! one `SERVICES` update, so XDP never sees a half-written table.
use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray},
    Ebpf,
};
use gateway_common::{
    self as common, iface_flags, maps, nat_home, role, vip_flags, ArpClaim, Conn, Counter, FlowKey,
    HomeHop, HomeKey, Iface, Reply, ServiceKey, Settings, MAGLEV_MAX, PORTS,
};

use crate::{
    cluster::{handoff::Holders, message::BlockHolder, types::NodeId},
    config::{maglev, Cluster, Config, Role, Service},
    datapath::{batch, conntrack::coarse_monotonic_ns, netlink::Nic},
};

/// Backend identity within the config: service name, address, port.
pub type BackendKey = (String, Ipv4Addr, u16);

/// How the maps name a node: its id + 1, so that 0 means none (or, in `NAT_HOMES` and a
/// connection's `home`, this node).
pub fn node_slot(node: Option<NodeId>) -> u32 {
    node.map_or(0, |n| u32::from(n.0) + 1)
}

/// The node a map's slot names (see [`node_slot`]).
pub fn slot_node(slot: u32) -> Option<NodeId> {
    slot.checked_sub(1).map(|n| NodeId(n as u8))
}

/// Every map of the loaded object, taken apart into its three owners' groups.
pub struct Maps {
    /// Written by the ring's shell (or, alone, the daemon's main task).
    pub control: ControlMaps,
    /// Owned by the datapath worker thread.
    pub tables: Tables,
    /// Read by anyone.
    pub counters: Counters,
}

/// The small maps that say what this node is and owns: one owner writes them directly.
pub struct ControlMaps {
    ifaces: BpfHashMap<MapData, u32, Iface>,
    vips: BpfHashMap<MapData, u32, common::Vip>,
    settings: Array<MapData, Settings>,
    lease: Array<MapData, u64>,
    /// Other stations' ARP claims on VIPs this node owns.
    pub arp_claims: BpfHashMap<MapData, u32, ArpClaim>,
    /// Primary addresses of the configured cluster nodes.
    pub peers: BpfHashMap<MapData, u32, u32>,
    /// Which node's NAT block holds each port ([`node_slot`]; 0 = none or this node).
    nat_homes: Array<MapData, u32>,
    /// What `nat_homes` holds, as last written (`None` before the first write, at start: a
    /// pinned map adopted from the previous daemon may hold anything), so a change writes
    /// only the ports whose home changed.
    homes_written: Option<Vec<u32>>,
    /// The other nodes' primary addresses, per NIC of this node.
    home_hops: BpfHashMap<MapData, HomeKey, HomeHop>,
}

/// The big tables: connections both ways, and the services with their Maglev tables.
pub struct Tables {
    /// Connections by client 5-tuple.
    pub conns: BpfHashMap<MapData, FlowKey, Conn>,
    /// Connections by reply 5-tuple.
    pub replies: BpfHashMap<MapData, FlowKey, Reply>,
    services: BpfHashMap<MapData, ServiceKey, common::Service>,
    maglev: Array<MapData, u32>,
    backends: Array<MapData, common::Backend>,
}

/// The per-CPU counters XDP bumps; reading them is a syscall per index and needs no owner.
pub struct Counters {
    /// Per-action counters.
    pub actions: PerCpuArray<MapData, Counter>,
    /// Per-path counters.
    pub paths: PerCpuArray<MapData, Counter>,
    /// Per-reason counters.
    pub reasons: PerCpuArray<MapData, Counter>,
    /// Per-service counters.
    pub service_stats: PerCpuArray<MapData, Counter>,
    /// Per-backend counters.
    pub backend_stats: PerCpuArray<MapData, Counter>,
}

impl Counters {
    /// The sum over CPUs of one counter of `map` (zero when the index is out of range).
    pub fn sum(map: &PerCpuArray<MapData, Counter>, index: u32) -> Counter {
        map.get(&index, 0).map_or(Counter::default(), |values| {
            values.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            })
        })
    }
}

macro_rules! take {
    ($ebpf:expr, $name:expr) => {
        $ebpf
            .take_map($name)
            .with_context(|| format!("map `{}` missing from the XDP object", $name))?
            .try_into()
            .with_context(|| format!("map `{}` has an unexpected type", $name))?
    };
}

/// The key of a service in `SERVICES`.
pub fn service_key(s: &Service) -> ServiceKey {
    ServiceKey {
        vip: u32::from(s.vip).to_be(),
        port: s.port.to_be(),
        proto: s.protocol.number(),
        _pad: 0,
    }
}

impl Maps {
    /// Takes every map out of the loaded object.
    pub fn take(dp: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            control: ControlMaps {
                ifaces: take!(dp, maps::IFACES),
                vips: take!(dp, maps::VIPS),
                settings: take!(dp, maps::SETTINGS),
                lease: take!(dp, maps::LEASE),
                arp_claims: take!(dp, maps::ARP_CLAIMS),
                peers: take!(dp, maps::PEERS),
                nat_homes: take!(dp, maps::NAT_HOMES),
                homes_written: None,
                home_hops: take!(dp, maps::HOME_HOPS),
            },
            tables: Tables {
                conns: take!(dp, maps::CONNS),
                replies: take!(dp, maps::REPLIES),
                services: take!(dp, maps::SERVICES),
                maglev: take!(dp, maps::MAGLEV),
                backends: take!(dp, maps::BACKENDS),
            },
            counters: Counters {
                actions: take!(dp, maps::ACTIONS),
                paths: take!(dp, maps::PATHS),
                reasons: take!(dp, maps::REASONS),
                service_stats: take!(dp, maps::SERVICE_STATS),
                backend_stats: take!(dp, maps::BACKEND_STATS),
            },
        })
    }
}

impl ControlMaps {
    /// Writes the NICs and VIPs. Without a cluster this node owns every VIP and its lease never
    /// runs out; in a cluster it starts owning none, and the ring's VIP table and the shell's
    /// lease renewals take over from there.
    pub fn write_nics_and_vips(&mut self, config: &Config, nics: &[Nic]) -> Result<()> {
        let stale: Vec<u32> = self.ifaces.keys().filter_map(Result::ok).collect();
        for k in stale
            .iter()
            .filter(|k| !nics.iter().any(|n| n.ifindex == **k))
        {
            self.ifaces.remove(k)?;
        }
        for (nic, iface) in nics.iter().zip(&config.interfaces) {
            let value = Iface {
                mac: nic.mac,
                role: match iface.role {
                    Role::External => role::EXTERNAL,
                    Role::Internal => role::INTERNAL,
                },
                flags: 0,
                addr: nic.address.map_or(0, |a| u32::from(a).to_be()),
            };
            self.ifaces
                .insert(nic.ifindex, value, 0)
                .context("writing IFACES")?;
        }
        let wanted: HashSet<u32> = config
            .vips
            .iter()
            .map(|v| u32::from(v.address).to_be())
            .collect();
        let stale: Vec<u32> = self.vips.keys().filter_map(Result::ok).collect();
        for k in stale.iter().filter(|k| !wanted.contains(k)) {
            self.vips.remove(k)?;
        }
        for vip in &config.vips {
            let ifindex = nics
                .iter()
                .find(|n| n.name == vip.interface)
                .map_or(0, |n| n.ifindex);
            let value = common::Vip {
                flags: if config.cluster.is_none() {
                    vip_flags::OWNED
                } else {
                    0
                },
                ifindex,
                ..common::Vip::default()
            };
            self.vips
                .insert(u32::from(vip.address).to_be(), value, 0)
                .context("writing VIPS")?;
        }
        self.mark_nics_owning_vips()?;
        match &config.cluster {
            // Alone, nobody could take the VIPs over, so the dead-man switch never trips.
            None => self.renew_lease(u64::MAX),
            Some(cluster) => {
                self.write_peers(cluster)?;
                self.write_homes(cluster, nics, &[])
            }
        }
    }

    /// Sets which VIPs this node owns (answers ARP for and serves); every other configured VIP
    /// is cleared, so XDP drops ARP for it and nothing else of this node answers. A VIP
    /// taken now is stamped (`Vip::owned_since_ns`), so XDP offers the previous holder the
    /// first packet of each own connection it has not seen since.
    pub fn set_owned(&mut self, owned: &HashSet<Ipv4Addr>) -> Result<()> {
        let entries: Vec<(u32, common::Vip)> = self.vips.iter().filter_map(Result::ok).collect();
        for (key, mut vip) in entries {
            let was = vip;
            if owned.contains(&Ipv4Addr::from(u32::from_be(key))) {
                if vip.flags & vip_flags::OWNED == 0 {
                    vip.owned_since_ns = coarse_monotonic_ns();
                }
                vip.flags |= vip_flags::OWNED;
            } else {
                vip.flags &= !vip_flags::OWNED;
                vip.owned_since_ns = 0;
            }
            if vip != was {
                self.vips.insert(key, vip, 0).context("writing VIPS")?;
            }
        }
        self.mark_nics_owning_vips()
    }

    /// Sets `OWNS_VIP` on the NICs whose subnet has a VIP this node owns, and clears it on
    /// the others.
    fn mark_nics_owning_vips(&mut self) -> Result<()> {
        let owning: HashSet<u32> = self
            .vips
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.flags & vip_flags::OWNED != 0)
            .map(|(_, v)| v.ifindex)
            .collect();
        let nics: Vec<(u32, Iface)> = self.ifaces.iter().filter_map(Result::ok).collect();
        for (ifindex, mut iface) in nics {
            let flags = if owning.contains(&ifindex) {
                iface.flags | iface_flags::OWNS_VIP
            } else {
                iface.flags & !iface_flags::OWNS_VIP
            };
            if flags != iface.flags {
                iface.flags = flags;
                self.ifaces
                    .insert(ifindex, iface, 0)
                    .context("writing IFACES")?;
            }
        }
        Ok(())
    }

    /// Tells XDP who holds `vip`'s connections: its owner and previous holder (connection
    /// hand-off), and, where this node is the previous holder in a dead node's place, that
    /// node's block to rebuild its uncopied connections from; leaves this node's ownership
    /// alone.
    pub fn set_holders(
        &mut self,
        vip: Ipv4Addr,
        holders: &Holders,
        cluster: &Cluster,
    ) -> Result<()> {
        let key = u32::from(vip).to_be();
        let Ok(mut entry) = self.vips.get(&key, 0) else {
            return Ok(());
        };
        entry.owner = node_slot(holders.owner);
        entry.previous = node_slot(holders.previous);
        let me = NodeId(cluster.me as u8);
        let rebuild = holders
            .rebuilds_for
            .filter(|_| holders.previous == Some(me))
            .and_then(|dead| cluster.nodes.get(usize::from(dead.0))?.nat_ports);
        (entry.rebuild_min, entry.rebuild_max) = rebuild.unwrap_or((0, 0));
        entry.flags = if holders.previous_live {
            entry.flags | vip_flags::PREVIOUS_LIVE
        } else {
            entry.flags & !vip_flags::PREVIOUS_LIVE
        };
        self.vips.insert(key, entry, 0).context("writing VIPS")
    }

    /// The VIPs this node owns according to the map (what XDP acts on).
    pub fn owned(&self) -> HashSet<Ipv4Addr> {
        self.vips
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.flags & vip_flags::OWNED != 0)
            .map(|(k, _)| Ipv4Addr::from(u32::from_be(k)))
            .collect()
    }

    /// Writes every node's primary addresses into `PEERS`, so XDP accepts cluster-protocol
    /// datagrams only from configured nodes; addresses no longer configured are removed.
    pub fn write_peers(&mut self, cluster: &Cluster) -> Result<()> {
        let wanted: HashMap<u32, u32> = cluster
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                n.addresses
                    .iter()
                    .map(move |a| (u32::from(*a).to_be(), i as u32))
            })
            .collect();
        let stale: Vec<u32> = self.peers.keys().filter_map(Result::ok).collect();
        for k in stale.iter().filter(|k| !wanted.contains_key(k)) {
            self.peers.remove(k)?;
        }
        for (addr, index) in wanted {
            self.peers.insert(addr, index, 0).context("writing PEERS")?;
        }
        Ok(())
    }

    /// Writes the distributed NAT: for every port of another node's NAT block, the node that
    /// serves it (`NAT_HOMES`: the block's node, or the node that took it over while that one
    /// is gone; where this node serves leftovers of the block, or holds it with another
    /// node's leftovers, the ports are marked `LEFTOVERS` and name where a miss goes), and for every other node
    /// and NIC of this node, the node's primary address on that NIC's subnet (`HOME_HOPS`), so
    /// a back-end's reply that reaches this node (it owns the back-ends' gateway VIP) goes on
    /// to the node that translates it. `nics` are in `[[interface]]` order, as the node map's
    /// addresses are; `blocks` is the ring's list of blocks away from their node.
    pub fn write_homes(
        &mut self,
        cluster: &Cluster,
        nics: &[Nic],
        blocks: &[BlockHolder],
    ) -> Result<()> {
        let me = NodeId(cluster.me as u8);
        let index = |n: NodeId| node_slot(Some(n));
        let mut homes = vec![0u32; PORTS as usize];
        let mut hops = HashMap::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let id = NodeId(i as u8);
            let away = blocks.iter().find(|b| b.block == id);
            let home = match away {
                // The holder looks a reply up and sends what it does not know on to the
                // node that held the block before (it still serves what it took then), and
                // that node the other way round.
                Some(b) if !b.returned => match b.leftovers {
                    Some(earlier) if b.holder == me => index(earlier) | nat_home::LEFTOVERS,
                    Some(earlier) if earlier == me => index(b.holder) | nat_home::LEFTOVERS,
                    _ => index(b.holder),
                },
                Some(b) if b.holder == me || b.leftovers == Some(me) => {
                    index(id) | nat_home::LEFTOVERS
                }
                _ => index(id),
            };
            if let (Some((first, last)), true) = (node.nat_ports, id != me) {
                homes[first as usize..=last as usize].fill(home);
            }
            if id == me {
                continue;
            }
            for (nic, addr) in nics.iter().zip(&node.addresses) {
                let key = HomeKey {
                    node: index(id),
                    ifindex: nic.ifindex,
                };
                let hop = HomeHop {
                    addr: u32::from(*addr).to_be(),
                    ..HomeHop::default()
                };
                hops.insert(key, hop);
            }
        }
        let (ports, changed): (Vec<u32>, Vec<u32>) = match &self.homes_written {
            Some(before) => (0..PORTS)
                .zip(homes.iter().zip(before))
                .filter(|(_, (now, was))| now != was)
                .map(|(port, (now, _))| (port, *now))
                .unzip(),
            None => ((0..PORTS).collect(), homes.clone()),
        };
        batch::update(&self.nat_homes, &ports, &changed).context("writing NAT_HOMES")?;
        self.homes_written = Some(homes);
        let stale: Vec<HomeKey> = self.home_hops.keys().filter_map(Result::ok).collect();
        for k in stale.iter().filter(|k| !hops.contains_key(k)) {
            self.home_hops.remove(k)?;
        }
        for (key, hop) in hops {
            self.home_hops
                .insert(key, hop, 0)
                .context("writing HOME_HOPS")?;
        }
        let mut settings = self.settings.get(&0, 0).context("reading SETTINGS")?;
        settings.node = index(me) as u16;
        settings.block_previous = blocks
            .iter()
            .find(|b| b.block == me && b.returned)
            .map_or(0, |b| index(b.holder) as u16);
        self.settings
            .set(0, settings, 0)
            .context("writing SETTINGS")
    }

    /// Reads and clears the ARP claims XDP recorded: other stations announcing or answering
    /// for a VIP this node owns (split brain), as (VIP, claim).
    pub fn take_claims(&mut self) -> Vec<(Ipv4Addr, ArpClaim)> {
        let claims: Vec<(u32, ArpClaim)> = self.arp_claims.iter().filter_map(Result::ok).collect();
        for (key, _) in &claims {
            // Gone already when XDP's LRU evicted it meanwhile: nothing to clear.
            let _ = self.arp_claims.remove(key);
        }
        claims
            .into_iter()
            .map(|(k, c)| (Ipv4Addr::from(u32::from_be(k)), c))
            .collect()
    }

    /// Sets the dead-man switch: XDP answers ARP for owned VIPs and opens connections on them
    /// until `until_ns` (`CLOCK_MONOTONIC`).
    pub fn renew_lease(&mut self, until_ns: u64) -> Result<()> {
        self.lease.set(0, until_ns, 0).context("writing LEASE")
    }

    /// Writes the configuration's part of `SETTINGS` (NAT block, new-connection limit, cluster
    /// port), keeping the ring's part (`write_homes`).
    pub fn write_settings(&mut self, config: &Config) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting CPUs")? as u32;
        // Where the cluster's NAT blocks are is the ring's to say (`write_homes`).
        let current = self.settings.get(&0, 0).unwrap_or_default();
        let settings = Settings {
            nat_port_min: config.nat_ports.0,
            nat_port_max: config.nat_ports.1,
            new_conns_per_cpu: config.limits.new_connections_per_second.div_ceil(cpus),
            cluster_port: config.cluster.as_ref().map_or(0, |c| c.port),
            node: current.node,
            block_previous: current.block_previous,
            ..Settings::default()
        };
        self.settings
            .set(0, settings, 0)
            .context("writing SETTINGS")
    }
}

impl Tables {
    /// Writes the backends and every service's Maglev table; removes services no longer
    /// configured. `healthy` says which backends may take new connections.
    pub fn write_services(
        &mut self,
        config: &Config,
        healthy: &HashMap<BackendKey, bool>,
    ) -> Result<()> {
        let mut next_backend = 0u32;
        for s in &config.services {
            for b in &s.backends {
                let value = common::Backend {
                    addr: u32::from(b.address).to_be(),
                    port: b.port.to_be(),
                    _pad: 0,
                };
                self.backends
                    .set(next_backend, value, 0)
                    .context("writing BACKENDS")?;
                next_backend += 1;
            }
        }
        for (id, s) in config.services.iter().enumerate() {
            self.write_service(config, id as u32, s, healthy)?;
        }
        let wanted: HashSet<ServiceKey> = config.services.iter().map(service_key).collect();
        let stale: Vec<ServiceKey> = self.services.keys().filter_map(Result::ok).collect();
        for k in stale.iter().filter(|k| !wanted.contains(k)) {
            self.services.remove(k)?;
        }
        Ok(())
    }
    /// Recomputes one service's Maglev table and switches it in.
    pub fn write_service(
        &mut self,
        config: &Config,
        id: u32,
        service: &Service,
        healthy: &HashMap<BackendKey, bool>,
    ) -> Result<()> {
        let first_backend: usize = config.services[..id as usize]
            .iter()
            .map(|s| s.backends.len())
            .sum();
        let entries: Vec<maglev::Entry> = service
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let up = healthy
                    .get(&(service.name.clone(), b.address, b.port))
                    .copied()
                    .unwrap_or(true);
                maglev::Entry {
                    address: b.address,
                    port: b.port,
                    weight: if up { b.weight } else { 0 },
                    id: (first_backend + i) as u32,
                }
            })
            .collect();
        let size = maglev::table_size(service.backends.len());
        let table = maglev::populate(size, &entries);
        let key = service_key(service);
        // Stage in the half no live entry with this id reads. Looking up by id rather than by
        // key keeps a reload that renumbers services from overwriting a table still in use.
        let live_half = self
            .services
            .iter()
            .filter_map(Result::ok)
            .find(|(_, s)| s.id == id)
            .map(|(_, s)| s.half);
        let half = live_half.map_or(0, |h| 1 - h.min(1));
        let base = (id * 2 + half) * MAGLEV_MAX;
        let slots: Vec<u32> = (base..base + table.len() as u32).collect();
        batch::update(&self.maglev, &slots, &table).context("writing MAGLEV")?;
        let value = common::Service {
            id,
            table_size: table.len() as u32,
            half,
            _pad: 0,
        };
        self.services
            .insert(key, value, 0)
            .context("writing SERVICES")?;
        Ok(())
    }

    /// The live table size of a service (0 = no healthy backend).
    pub fn table_size(&self, service: &Service) -> u32 {
        self.services
            .get(&service_key(service), 0)
            .map_or(0, |s| s.table_size)
    }
}

#[cfg(test)]
mod tests {
    //! Against real kernel maps of the loaded (not attached) object.
    use super::*;
    use crate::config;

    /// The maps of a freshly loaded object (small connection tables) and a parsed config.
    fn loaded(file: &str, text: &str) -> (aya::Ebpf, Maps, Config) {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(maps::CONNS, 1024)
            .map_max_entries(maps::REPLIES, 1024)
            .load(crate::datapath::ebpf_object::BYTES)
            .expect("loading the XDP object (needs root)");
        let maps = Maps::take(&mut ebpf).unwrap();
        let config = config::parse(std::path::Path::new(file), text).unwrap();
        (ebpf, maps, config)
    }

    #[test]
    fn maglev_tables_are_staged_then_flipped() {
        let (_ebpf, mut m, config) =
            loaded("example.toml", include_str!("../../examples/gateway.toml"));
        let web = &config.services[0];
        m.control.write_settings(&config).unwrap();
        let cpus = aya::util::nr_cpus().unwrap() as u32;
        let settings = m.control.settings.get(&0, 0).unwrap();
        let m = &mut m.tables;
        m.write_services(&config, &HashMap::new()).unwrap();
        assert_eq!(
            (settings.nat_port_min, settings.nat_port_max),
            (20000, 29999)
        );
        assert_eq!(settings.new_conns_per_cpu, 1_000_000u32.div_ceil(cpus));
        let b1 = m.backends.get(&1, 0).unwrap();
        assert_eq!(
            Ipv4Addr::from(u32::from_be(b1.addr)),
            Ipv4Addr::new(10, 1, 0, 12)
        );
        assert_eq!(u16::from_be(b1.port), 8080);

        let first = m.services.get(&service_key(web), 0).unwrap();
        assert_eq!((first.id, first.table_size, first.half), (0, 211, 0));
        let slots = |m: &Tables, half: u32| -> Vec<u32> {
            (0..211)
                .map(|i| m.maglev.get(&(half * MAGLEV_MAX + i), 0).unwrap())
                .collect()
        };
        let both = slots(m, 0);
        assert!(both.contains(&0) && both.contains(&1));

        // Backend 10.1.0.11 goes down: the new table lands in half 1, half 0 is untouched.
        let down = HashMap::from([((web.name.clone(), web.backends[0].address, 8080), false)]);
        m.write_service(&config, 0, web, &down).unwrap();
        let second = m.services.get(&service_key(web), 0).unwrap();
        assert_eq!((second.table_size, second.half), (211, 1));
        assert!(slots(m, 1).iter().all(|&b| b == 1));
        assert_eq!(slots(m, 0), both);

        // All down: table_size 0 (XDP drops with no_backend).
        let all_down: HashMap<BackendKey, bool> = web
            .backends
            .iter()
            .map(|b| ((web.name.clone(), b.address, b.port), false))
            .collect();
        m.write_service(&config, 0, web, &all_down).unwrap();
        assert_eq!(m.table_size(web), 0);
    }

    #[test]
    fn cluster_ownership_peers_claims_and_port() {
        let (_ebpf, mut m, config) =
            loaded("cluster.toml", include_str!("../../examples/cluster.toml"));
        let m = &mut m.control;
        let nics: Vec<Nic> = ["ext0", "int0"]
            .iter()
            .enumerate()
            .map(|(i, name)| Nic {
                name: name.to_string(),
                ifindex: 100 + i as u32,
                mac: [2, 0, 0, 0, 0, i as u8],
                address: None,
            })
            .collect();
        m.write_nics_and_vips(&config, &nics).unwrap();
        assert!(m.owned().is_empty(), "a cluster node starts owning nothing");
        assert_eq!(m.lease.get(&0, 0).unwrap(), 0, "and with no lease");
        let vip = |i: usize| config.vips[i].address;
        m.set_owned(&HashSet::from([vip(0), vip(2)])).unwrap();
        assert_eq!(m.owned(), HashSet::from([vip(0), vip(2)]));
        let entry = m.vips.get(&u32::from(vip(2)).to_be(), 0).unwrap();
        assert_eq!(entry.ifindex, 101, "ownership keeps the VIP's NIC");
        let taken = entry.owned_since_ns;
        assert!(taken > 0, "a VIP taken is stamped");
        std::thread::sleep(std::time::Duration::from_millis(20));
        m.set_owned(&HashSet::from([vip(1), vip(2)])).unwrap();
        let since = |i: usize| {
            let key = u32::from(vip(i)).to_be();
            m.vips.get(&key, 0).unwrap().owned_since_ns
        };
        assert_eq!(since(2), taken, "a VIP kept keeps its stamp");
        assert!(since(1) > taken, "one taken later is stamped later");
        assert_eq!(since(0), 0, "one given up has none");
        m.set_owned(&HashSet::from([vip(1)])).unwrap();
        assert_eq!(m.owned(), HashSet::from([vip(1)]));

        let peer = |a: [u8; 4]| m.peers.get(&u32::from(Ipv4Addr::from(a)).to_be(), 0).ok();
        assert_eq!(peer([10, 0, 0, 3]), Some(1));
        assert_eq!(peer([10, 1, 0, 4]), Some(2));
        assert_eq!(peer([10, 0, 0, 9]), None);
        let mut smaller = config.cluster.clone().unwrap();
        smaller.nodes.pop();
        m.write_peers(&smaller).unwrap();
        let peer = |a: [u8; 4]| m.peers.get(&u32::from(Ipv4Addr::from(a)).to_be(), 0).ok();
        assert_eq!(peer([10, 1, 0, 4]), None, "a removed node's addresses go");
        assert_eq!(peer([10, 1, 0, 3]), Some(1));

        let home = |port: u32| m.nat_homes.get(&port, 0).unwrap();
        assert_eq!((home(25_000), home(30_000), home(49_999)), (0, 2, 3));
        assert_eq!(home(50_000), 0, "a port of no block");
        let hop = m
            .home_hops
            .get(
                &HomeKey {
                    node: 2,
                    ifindex: 101,
                },
                0,
            )
            .unwrap();
        assert_eq!(hop.addr, u32::from(Ipv4Addr::new(10, 1, 0, 3)).to_be());
        assert!(m
            .home_hops
            .get(
                &HomeKey {
                    node: 1,
                    ifindex: 100
                },
                0
            )
            .is_err());

        let claim = ArpClaim {
            mac: [2, 9, 9, 9, 9, 9],
            ifindex: 100,
            count: 2,
            ..ArpClaim::default()
        };
        m.arp_claims
            .insert(u32::from(vip(1)).to_be(), claim, 0)
            .unwrap();
        assert_eq!(m.take_claims(), [(vip(1), claim)]);
        assert_eq!(m.take_claims(), [], "claims are cleared once read");

        m.write_settings(&config).unwrap();
        assert_eq!(m.settings.get(&0, 0).unwrap().cluster_port, 7400);
    }

    /// Every live service's active half holds only that service's backends.
    fn assert_consistent(m: &Tables, config: &Config) {
        let mut first = 0u32;
        for s in &config.services {
            let live = m.services.get(&service_key(s), 0).unwrap();
            let ids = first..first + s.backends.len() as u32;
            first += s.backends.len() as u32;
            for i in 0..live.table_size {
                let slot = (live.id * 2 + live.half) * MAGLEV_MAX + i;
                let b = m.maglev.get(&slot, 0).unwrap();
                assert!(ids.contains(&b), "{}: slot {i} holds backend {b}", s.name);
            }
        }
    }

    #[test]
    fn reload_that_renumbers_services_keeps_tables_apart() {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(maps::CONNS, 1024)
            .map_max_entries(maps::REPLIES, 1024)
            .load(crate::datapath::ebpf_object::BYTES)
            .expect("loading the XDP object (needs root)");
        let m = &mut Maps::take(&mut ebpf).unwrap().tables;
        let example = include_str!("../../examples/gateway.toml");
        let dns =
            "\n[[service]]\nname = \"dns\"\nvip = \"10.0.0.100\"\nport = 53\nprotocol = \"udp\"\n\
                   [[service.backend]]\naddress = \"10.1.0.53\"\nport = 53\n";
        let path = std::path::Path::new("t.toml");
        let before = config::parse(path, &format!("{example}{dns}")).unwrap();
        m.write_services(&before, &HashMap::new()).unwrap();
        assert_consistent(m, &before);
        // The same services in the other order: ids swap.
        let start = example.find("[[service]]").unwrap();
        let end = example.find("[timeouts]").unwrap();
        let swapped = format!(
            "{}{dns}{}{}",
            &example[..start],
            &example[start..end],
            &example[end..]
        );
        let after = config::parse(path, &swapped).unwrap();
        assert_eq!(after.services[0].name, "dns");
        m.write_services(&after, &HashMap::new()).unwrap();
        assert_consistent(m, &after);
    }
}

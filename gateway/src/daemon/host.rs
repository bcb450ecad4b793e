//! What the ring's decisions do to this host, and what the host tells the ring: VIP ownership
//! written into the XDP maps, gratuitous ARP bursts for VIPs taken, the dead-man lease renewed,
//! and XDP's ARP claims (another station answering for a VIP we own) read back. The host owns
//! the small control maps ([`ControlMaps`]) and writes them directly, so nothing here waits
//! for the datapath worker.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::Instant,
};

use gateway_common::ArpClaim;
use tokio::{sync::watch, task::JoinSet};
use tracing::{info, warn};

use crate::{
    cluster::{handoff::Holders, message::BlockHolder},
    config::{Arp, Cluster, Config},
    datapath::{conntrack::monotonic_ns, garp, maps::ControlMaps, netlink::Nic},
};

/// The host side of the cluster.
pub struct Host {
    maps: ControlMaps,
    /// The VIPs XDP answers for, for the control socket's views.
    published: watch::Sender<BTreeSet<Ipv4Addr>>,
    arp: Arp,
    /// Where each VIP is announced: (ifindex, MAC of the VIP's NIC).
    garp_targets: HashMap<Ipv4Addr, (u32, [u8; 6])>,
    announcer: Arc<garp::Announcer>,
    garps: JoinSet<()>,
    /// The VIPs this node answers for now, which pending announcements check before each
    /// packet.
    owned: Arc<RwLock<HashSet<Ipv4Addr>>>,
    /// Until when (`CLOCK_MONOTONIC` ns) the lease last written lets XDP answer: pending
    /// announcements stop with it, so a burst that was due while the daemon hung is not sent
    /// on waking before the ring has had its say.
    lease_until: Arc<AtomicU64>,
}

impl Host {
    /// The host of `config`, whose VIPs live on `nics`, acting on `maps`; fails without the
    /// raw socket gratuitous ARP needs.
    pub fn new(
        config: &Config,
        nics: &[Nic],
        maps: ControlMaps,
        published: watch::Sender<BTreeSet<Ipv4Addr>>,
    ) -> std::io::Result<Self> {
        let garp_targets = config
            .vips
            .iter()
            .filter_map(|v| {
                let nic = nics.iter().find(|n| n.name == v.interface)?;
                Some((v.address, (nic.ifindex, nic.mac)))
            })
            .collect();
        Ok(Self {
            maps,
            published,
            arp: config.arp,
            garp_targets,
            announcer: Arc::new(garp::Announcer::open()?),
            garps: JoinSet::new(),
            owned: Arc::default(),
            lease_until: Arc::default(),
        })
    }

    /// Takes in a configuration the cluster switched to: its settings and ARP bursts.
    pub fn apply_config(&mut self, config: &Config) {
        self.arp = config.arp;
        if let Err(e) = self.maps.write_settings(config) {
            warn!("writing SETTINGS: {e:#}");
        }
    }

    /// Points the distributed NAT at each block's holder (see [`ControlMaps::write_homes`]).
    pub fn write_homes(&mut self, cluster: &Cluster, nics: &[Nic], blocks: &[BlockHolder]) {
        if let Err(e) = self.maps.write_homes(cluster, nics, blocks) {
            warn!("writing the NAT homes: {e:#}");
        }
    }

    /// Makes XDP answer for exactly `owned` (the ring's VIP table for this node).
    pub fn apply_vips(&mut self, owned: &HashSet<Ipv4Addr>) {
        let before = self.maps.owned();
        if let Err(e) = self.maps.set_owned(owned) {
            warn!("writing VIP ownership: {e:#}");
            return;
        }
        self.owned.write().unwrap().clone_from(owned);
        self.published.send_replace(owned.iter().copied().collect());
        let mut taken: Vec<_> = owned.difference(&before).collect();
        let mut dropped: Vec<_> = before.difference(owned).collect();
        if !taken.is_empty() || !dropped.is_empty() {
            taken.sort();
            dropped.sort();
            info!(?taken, ?dropped, "VIP ownership changed");
        }
    }

    /// Tells XDP who holds each VIP's connections, for the VIPs whose holders changed.
    pub fn set_holders(&mut self, cluster: &Cluster, changed: &[(Ipv4Addr, Holders)]) {
        for (vip, holders) in changed {
            if let Err(e) = self.maps.set_holders(*vip, holders, cluster) {
                warn!(%vip, "writing the VIP's holders: {e:#}");
            }
        }
    }

    /// Announces `vips` with a gratuitous ARP burst now and a second one later (`[arp]`).
    pub fn garp(&mut self, vips: &[Ipv4Addr]) {
        let arp = self.arp;
        let targets: Vec<_> = vips
            .iter()
            .filter_map(|v| self.garp_targets.get(v).map(|(i, m)| (*i, *m, *v)))
            .collect();
        let (owned, lease_until) = (self.owned.clone(), self.lease_until.clone());
        let still_owned = move |vip| {
            monotonic_ns() < lease_until.load(Ordering::Relaxed)
                && owned.read().unwrap().contains(&vip)
        };
        let announcer = self.announcer.clone();
        self.garps
            .spawn(garp::announce(announcer, arp, targets, still_owned));
        // Finished announcements are reaped here, so the set does not grow.
        while self.garps.try_join_next().is_some() {}
    }

    /// Moves the dead-man switch to `until` ([`crate::cluster::driver::Lease`] decides when
    /// and how far): XDP answers for our VIPs until then.
    pub fn renew_lease(&mut self, now: Instant, until: Instant) {
        let lease = until.saturating_duration_since(now);
        let until = monotonic_ns().saturating_add(lease.as_nanos() as u64);
        self.lease_until.store(until, Ordering::Relaxed);
        if let Err(e) = self.maps.renew_lease(until) {
            warn!("renewing the lease: {e:#}");
        }
    }

    /// XDP's ARP claims since the last call: another station announcing or answering for a VIP
    /// this node owns.
    pub fn take_claims(&mut self) -> Vec<(Ipv4Addr, ArpClaim)> {
        self.maps.take_claims()
    }
}

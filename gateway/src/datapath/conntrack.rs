//! The connection table as the daemon sees it: joins `CONNS` with `REPLIES`, lists
//! connections for `conns`, copies them for the successor, takes a dead node's over, and
//! sweeps out the idle ones a chunk at a time, using `CLOCK_MONOTONIC` like
//! `bpf_ktime_get_ns`. The datapath worker, which owns the tables, calls all of it.
use std::{
    collections::{HashMap, HashSet},
    io,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use gateway_common::{proto, tcp_state, Conn, FlowKey, Reply};
use serde_json::{json, Value};
use tracing::debug;

use crate::{
    cluster::{
        copies,
        message::{ConnCopy, ConnId},
        types::NodeId,
    },
    config::Timeouts,
    datapath::{
        batch::{self, Cursor},
        maps::{node_slot, slot_node, Tables},
    },
};

/// Now on the clock XDP stamps entries with (XDP reads it coarse, up to a tick behind).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Now as XDP reads it (`bpf_ktime_get_coarse_ns`): for a time XDP compares its own stamps
/// with, so that what it stamps a tick later is never earlier.
pub fn coarse_monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: clock_gettime writes into the timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One connection, both directions joined.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Client-side 5-tuple (the `CONNS` key).
    pub key: FlowKey,
    /// The `CONNS` value.
    pub conn: Conn,
    /// The reply direction, when present.
    pub reply: Option<(FlowKey, Reply)>,
}

impl Entry {
    /// "rst" if either side reset, else "fin" if either side closed, else "open".
    pub fn state(&self) -> &'static str {
        let states = [Some(self.conn.state), self.reply.map(|(_, r)| r.state)];
        if states.contains(&Some(tcp_state::RST)) {
            "rst"
        } else if states.contains(&Some(tcp_state::FIN)) {
            "fin"
        } else {
            "open"
        }
    }

    /// Last packet in either direction.
    pub fn last_seen_ns(&self) -> u64 {
        self.reply
            .map_or(0, |(_, r)| r.last_seen_ns)
            .max(self.conn.last_seen_ns)
    }

    /// How long it may stay idle.
    pub fn timeout(&self, t: &Timeouts) -> Duration {
        match (self.key.proto, self.state()) {
            (proto::UDP, _) => t.udp,
            (_, "open") => t.tcp_established,
            _ => t.tcp_closing,
        }
    }

    /// The `conns` JSON of this entry.
    pub fn view(&self, now_ns: u64) -> Value {
        let ip = |a: u32| Ipv4Addr::from(u32::from_be(a));
        let port = u16::from_be;
        let secs = |ns: u64| (now_ns.saturating_sub(ns) as f64 / 1e9 * 1000.0).round() / 1000.0;
        json!({
            "client": format!("{}:{}", ip(self.key.src_addr), port(self.key.src_port)),
            "vip": format!("{}:{}", ip(self.key.dst_addr), port(self.key.dst_port)),
            "protocol": if self.key.proto == proto::UDP { "udp" } else { "tcp" },
            "backend": format!("{}:{}", ip(self.conn.backend_addr), port(self.conn.backend_port)),
            "nat_port": port(self.conn.nat_port),
            "state": self.state(),
            "home": slot_node(self.conn.home).map(|n| n.0),
            "age_s": secs(self.conn.created_ns),
            "idle_s": secs(self.last_seen_ns()),
        })
    }
}

/// The `REPLIES` key of the connection `key` translated as `conn` says: the back-end's
/// packet as it arrives, from the back-end to the client's address on the NAT port (what
/// the XDP program's `conntrack::reply_key` builds). The client's address is part of it:
/// connections of two clients can share a back-end and a NAT port.
fn reply_key(key: &FlowKey, conn: &Conn) -> FlowKey {
    FlowKey {
        src_addr: conn.backend_addr,
        dst_addr: key.src_addr,
        src_port: conn.backend_port,
        dst_port: conn.nat_port,
        proto: key.proto,
        _pad: [0; 3],
    }
}

/// Takes the reply entry of the connection `key` translated as `conn` out of `replies`: the
/// one its [`reply_key`] names, if it is that connection's (its client port and VIP). The
/// XDP program gives a port whose back-end closed its connection to another connection of the
/// client's address when every probe finds its port taken; the entry is the new one's then.
fn take_reply(
    replies: &mut foldhash::HashMap<FlowKey, Reply>,
    key: &FlowKey,
    conn: &Conn,
) -> Option<(FlowKey, Reply)> {
    let reply_key = reply_key(key, conn);
    let reply = replies.get(&reply_key)?;
    let ours = (reply.client_port, reply.vip, reply.vip_port)
        == (key.src_port, key.dst_addr, key.dst_port);
    ours.then(|| replies.remove(&reply_key).map(|r| (reply_key, r)))?
}

/// Reply entries whose connection entry is gone (evicted by the LRU, or swept while the
/// back-end's TIME_WAIT keeps the reply).
pub type Orphans = Vec<(FlowKey, Reply)>;

/// Every connection with its reply direction; also returns replies without a connection.
/// Both tables are read in batches (a few syscalls for the whole table).
pub fn walk(maps: &Tables) -> io::Result<(Vec<Entry>, Orphans)> {
    let mut replies: foldhash::HashMap<FlowKey, Reply> =
        batch::entries(&maps.replies)?.into_iter().collect();
    let entries = batch::entries(&maps.conns)?
        .into_iter()
        .map(|(key, conn)| Entry {
            key,
            conn,
            reply: take_reply(&mut replies, &key, &conn),
        })
        .collect();
    Ok((entries, replies.into_iter().collect()))
}

/// The copies of `conns` (the `CONNS` table) this node streams to its successor.
pub fn copies(conns: &[(FlowKey, Conn)]) -> Vec<ConnCopy> {
    let addr = |a: u32, p: u16| SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a)), u16::from_be(p));
    conns
        .iter()
        // A forwarding entry's copy names only its home: the translation one kept is this
        // node's own to take back, no other node's.
        .map(|(key, conn)| match conn.home {
            0 => (key, *conn),
            home => (
                key,
                Conn {
                    home,
                    ..Conn::default()
                },
            ),
        })
        .map(|(key, conn)| ConnCopy {
            id: ConnId {
                client: addr(key.src_addr, key.src_port),
                vip: addr(key.dst_addr, key.dst_port),
                proto: key.proto,
            },
            state: conn.state,
            backend: addr(conn.backend_addr, conn.backend_port),
            nat_port: u16::from_be(conn.nat_port),
            backend_index: conn.backend_id as u16,
            service_index: conn.service_id as u8,
            home: slot_node(conn.home),
        })
        .collect()
}

/// Carries out, in the tables, what this node (`me`) does when `gone` left the ring and
/// `holder` serves its NAT block ([`copies::take_over`]): its forwarding entries to `gone`
/// point at the holder or, on the holder, go, and the holder installs `gone`'s connections
/// from `copies`, both directions of those `gone` translated, a forwarding entry for those
/// another node translates, as if each had just seen a packet.
pub fn take_over(
    maps: &Tables,
    me: NodeId,
    gone: NodeId,
    holder: NodeId,
    copies: &[ConnCopy],
) -> io::Result<TakenOver> {
    let entries = batch::entries(&maps.conns)?;
    let changes = copies::take_over(me, gone, holder, &self::copies(&entries), copies);
    let removed: Vec<FlowKey> = changes.removed.iter().map(flow_key).collect();
    batch::delete(&maps.conns, &removed)?;
    let rehomed: HashSet<FlowKey> = changes.rehomed.iter().map(flow_key).collect();
    let (keys, conns): (Vec<FlowKey>, Vec<Conn>) = entries
        .into_iter()
        .filter(|(k, _)| rehomed.contains(k))
        .map(|(k, c)| {
            let conn = Conn {
                home: node_slot(Some(holder)),
                ..c
            };
            (k, conn)
        })
        .unzip();
    batch::update(&maps.conns, &keys, &conns)?;
    let now = monotonic_ns();
    let be = |a: &SocketAddrV4| u32::from(*a.ip()).to_be();
    let mut conn_keys = Vec::with_capacity(changes.installed.len());
    let mut conns = Vec::with_capacity(changes.installed.len());
    let mut reply_keys = Vec::with_capacity(changes.installed.len());
    let mut replies = Vec::with_capacity(changes.installed.len());
    for c in &changes.installed {
        let key = flow_key(&c.id);
        let conn = Conn {
            backend_addr: be(&c.backend),
            backend_port: c.backend.port().to_be(),
            nat_port: c.nat_port.to_be(),
            backend_id: u32::from(c.backend_index),
            service_id: u32::from(c.service_index),
            state: c.state,
            home: node_slot(c.home),
            created_ns: now,
            last_seen_ns: now,
            ..Conn::default()
        };
        conn_keys.push(key);
        conns.push(conn);
        if c.home.is_some() {
            continue;
        }
        reply_keys.push(reply_key(&key, &conn));
        replies.push(Reply {
            vip: key.dst_addr,
            vip_port: key.dst_port,
            client_port: key.src_port,
            service_id: conn.service_id,
            last_seen_ns: now,
            ..Reply::default()
        });
    }
    batch::update(&maps.replies, &reply_keys, &replies)?;
    batch::update(&maps.conns, &conn_keys, &conns)?;
    Ok(TakenOver {
        removed: removed.len(),
        rehomed: keys.len(),
        installed: conn_keys.len(),
    })
}

/// What [`take_over`] changed: entries dropped, re-pointed and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TakenOver {
    /// Forwarding entries to the node that left, dropped on its holder.
    pub removed: usize,
    /// Forwarding entries to it that now point at its holder.
    pub rehomed: usize,
    /// Connections installed from its copies.
    pub installed: usize,
}

/// The `CONNS` key of a connection.
fn flow_key(id: &ConnId) -> FlowKey {
    FlowKey {
        src_addr: u32::from(*id.client.ip()).to_be(),
        dst_addr: u32::from(*id.vip.ip()).to_be(),
        src_port: id.client.port().to_be(),
        dst_port: id.vip.port().to_be(),
        proto: id.proto,
        _pad: [0; 3],
    }
}

/// What a finished sweep found: the connections left, in all and per back-end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Connections left in `CONNS`.
    pub connections: usize,
    /// Of those, per back-end `(address, port)`.
    pub per_backend: HashMap<(Ipv4Addr, u16), usize>,
    /// Connections removed as idle.
    pub removed: usize,
}

/// Whether the back-end closed the connection of reply entry `reply` (a FIN of its own) within
/// `tcp_time_wait` of `now_ns`: it still holds the 4-tuple, so the entry stays and keeps the
/// NAT port from a new connection of the same client address to it, which it would refuse
/// (the chaos run's failed new connections: a port reused 12-15 s after the last, answered
/// with the old connection's ACK). The XDP program's `conntrack::open` probes past a taken
/// port, and takes such a one only when every probe found its port taken.
fn in_time_wait(reply: &Reply, now_ns: u64, timeouts: &Timeouts) -> bool {
    reply.state == tcp_state::FIN
        && now_ns.saturating_sub(reply.last_seen_ns) <= timeouts.tcp_time_wait.as_nanos() as u64
}

/// One sweep of the idle connections, a chunk of a table per [`Sweep::step`], so the owner of
/// the tables can serve requests between chunks. Both tables are read first (replies, then
/// connections), then what is idle at `now_ns` is deleted, both directions.
#[derive(Debug)]
pub struct Sweep {
    now_ns: u64,
    replies: Cursor,
    conns: Cursor,
    /// Reply entries read so far, by key.
    reply_of: foldhash::HashMap<FlowKey, Reply>,
    doomed_conns: Vec<FlowKey>,
    doomed_replies: Vec<FlowKey>,
    census: Census,
}

impl Sweep {
    /// A sweep of what is idle at `now_ns` (`CLOCK_MONOTONIC`).
    pub fn new(now_ns: u64) -> Self {
        Self {
            now_ns,
            replies: Cursor::default(),
            conns: Cursor::default(),
            reply_of: foldhash::HashMap::default(),
            doomed_conns: Vec::new(),
            doomed_replies: Vec::new(),
            census: Census::default(),
        }
    }

    /// Reads one more chunk, or deletes what is idle once both tables are read; returns the
    /// census when the sweep is over.
    pub fn step(&mut self, maps: &Tables, timeouts: &Timeouts) -> io::Result<Option<Census>> {
        if let Some(chunk) = self.replies.next(&maps.replies)? {
            self.reply_of.extend(chunk);
            return Ok(None);
        }
        if let Some(chunk) = self.conns.next(&maps.conns)? {
            for (key, conn) in chunk {
                let entry = Entry {
                    key,
                    conn,
                    reply: take_reply(&mut self.reply_of, &key, &conn),
                };
                let idle = self.now_ns.saturating_sub(entry.last_seen_ns());
                if idle > entry.timeout(timeouts).as_nanos() as u64 {
                    self.doomed_conns.push(key);
                    let now = self.now_ns;
                    self.doomed_replies.extend(
                        entry
                            .reply
                            .filter(|(_, r)| !in_time_wait(r, now, timeouts))
                            .map(|(k, _)| k),
                    );
                } else {
                    self.census.connections += 1;
                    if conn.home == 0 {
                        let backend = (
                            Ipv4Addr::from(u32::from_be(conn.backend_addr)),
                            u16::from_be(conn.backend_port),
                        );
                        *self.census.per_backend.entry(backend).or_default() += 1;
                    }
                }
            }
            return Ok(None);
        }
        // Replies left over have no connection: those of connections the back-end closed hold
        // their NAT port through its TIME_WAIT; the others (their connection evicted by the
        // LRU) go once idle for the longest timeout.
        let limit = timeouts.tcp_established.max(timeouts.udp).as_nanos() as u64;
        let now = self.now_ns;
        self.doomed_replies.extend(
            self.reply_of
                .drain()
                .filter(|(_, r)| {
                    if r.state == tcp_state::FIN {
                        !in_time_wait(r, now, timeouts)
                    } else {
                        now.saturating_sub(r.last_seen_ns) > limit
                    }
                })
                .map(|(k, _)| k),
        );
        self.census.removed = batch::delete(&maps.conns, &self.doomed_conns)?;
        batch::delete(&maps.replies, &self.doomed_replies)?;
        if self.census.removed > 0 {
            debug!(removed = self.census.removed, "conntrack sweep");
        }
        Ok(Some(std::mem::take(&mut self.census)))
    }
}

#[cfg(test)]
mod tests {
    //! Against real kernel maps: the object is loaded (not attached), entries are written the
    //! way XDP writes them, and the daemon's walk and sweep read them back.
    use super::*;
    use crate::datapath::maps::Maps;
    use aya::EbpfLoader;
    use gateway_common::maps as names;

    fn ip(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a)).to_be()
    }

    /// A TCP connection 192.0.2.7:port -> 10.0.0.100:80 on backend 10.1.0.11:8080.
    fn pair(
        client_port: u16,
        nat_port: u16,
        last_seen_ns: u64,
        state: u8,
    ) -> (FlowKey, Conn, FlowKey, Reply) {
        pair_of([192, 0, 2, 7], client_port, nat_port, last_seen_ns, state)
    }

    /// A TCP connection client:port -> 10.0.0.100:80 on backend 10.1.0.11:8080, both
    /// entries as the XDP program writes them.
    fn pair_of(
        client: [u8; 4],
        client_port: u16,
        nat_port: u16,
        last_seen_ns: u64,
        state: u8,
    ) -> (FlowKey, Conn, FlowKey, Reply) {
        let key = FlowKey {
            src_addr: ip(client),
            dst_addr: ip([10, 0, 0, 100]),
            src_port: client_port.to_be(),
            dst_port: 80u16.to_be(),
            proto: proto::TCP,
            _pad: [0; 3],
        };
        let conn = Conn {
            backend_addr: ip([10, 1, 0, 11]),
            backend_port: 8080u16.to_be(),
            nat_port: nat_port.to_be(),
            state,
            created_ns: last_seen_ns,
            last_seen_ns,
            ..Default::default()
        };
        let rkey = FlowKey {
            src_addr: conn.backend_addr,
            dst_addr: key.src_addr,
            src_port: conn.backend_port,
            dst_port: conn.nat_port,
            proto: proto::TCP,
            _pad: [0; 3],
        };
        let reply = Reply {
            vip: key.dst_addr,
            vip_port: key.dst_port,
            client_port: key.src_port,
            last_seen_ns,
            ..Default::default()
        };
        (key, conn, rkey, reply)
    }

    /// The tables of a freshly loaded XDP object (needs root).
    fn tables() -> Tables {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::CONNS, 1024)
            .map_max_entries(names::REPLIES, 1024)
            .load(crate::datapath::ebpf_object::BYTES)
            .expect("loading the XDP object (needs root)");
        Maps::take(&mut ebpf).unwrap().tables
    }

    const TIMEOUTS: Timeouts = Timeouts {
        tcp_established: Duration::from_secs(300),
        tcp_closing: Duration::from_secs(10),
        tcp_time_wait: Duration::from_secs(60),
        udp: Duration::from_secs(30),
    };

    /// A whole sweep at `now_ns` with [`TIMEOUTS`].
    fn sweep_all(maps: &Tables, now_ns: u64) -> Census {
        let mut sweep = Sweep::new(now_ns);
        loop {
            if let Some(census) = sweep.step(maps, &TIMEOUTS).unwrap() {
                return census;
            }
        }
    }

    #[test]
    fn walk_view_and_sweep_real_maps() {
        let mut maps = tables();
        // The sweep runs at a moment 400 s after the idle entry's last packet, so nothing
        // here subtracts from the clock (it may read less than 400 s on a fresh machine).
        let s = 1_000_000_000u64;
        let start = monotonic_ns();
        let now = start + 400 * s;
        let fresh = pair(40000, 20001, now - s, tcp_state::OPEN);
        let idle = pair(40001, 20002, start, tcp_state::OPEN);
        let closing = pair(40002, 20003, now - 20 * s, tcp_state::FIN);
        for (k, c, rk, r) in [fresh, idle, closing] {
            maps.conns.insert(k, c, 0).unwrap();
            maps.replies.insert(rk, r, 0).unwrap();
        }
        let (entries, orphans) = walk(&maps).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(orphans.is_empty());
        assert!(entries.iter().all(|e| e.reply.is_some()));
        let view = entries
            .iter()
            .find(|e| e.key.src_port == 40000u16.to_be())
            .unwrap()
            .view(now);
        assert_eq!(view["client"], "192.0.2.7:40000");
        assert_eq!(view["vip"], "10.0.0.100:80");
        assert_eq!(view["backend"], "10.1.0.11:8080");
        assert_eq!(view["nat_port"], 20001);
        assert_eq!(view["state"], "open");
        assert!((view["idle_s"].as_f64().unwrap() - 1.0).abs() < 0.01);

        let census = sweep_all(&maps, now);
        assert_eq!((census.removed, census.connections), (2, 1));
        assert_eq!(
            census.per_backend,
            HashMap::from([((Ipv4Addr::new(10, 1, 0, 11), 8080), 1)])
        );
        let left: Vec<FlowKey> = maps.conns.keys().map(Result::unwrap).collect();
        assert_eq!(left, vec![fresh.0]);
        let left: Vec<FlowKey> = maps.replies.keys().map(Result::unwrap).collect();
        assert_eq!(left, vec![fresh.2]);
    }

    /// Two clients' connections to one back-end may share a NAT port (the reply key holds
    /// the client's address). The sweep of one that is over used to take the other's reply
    /// entry for its own and delete it, leaving a live connection whose replies nobody
    /// translated (the chaos run, seed 10: a kept-alive connection broke after a death, on
    /// the node whose own block its NAT port was in).
    #[test]
    fn the_sweep_of_a_connection_leaves_another_clients_on_the_same_nat_port() {
        let mut maps = tables();
        let s = 1_000_000_000u64;
        let start = monotonic_ns();
        let now = start + 400 * s;
        // Many pairs, so that whatever order the tables are read in, a sweep that matched
        // replies by back-end and NAT port alone would have deleted some live one's reply.
        let mut live = Vec::new();
        for i in 0..32u16 {
            let over = pair_of([192, 0, 2, 8], 41000 + i, 20000 + i, start, tcp_state::FIN);
            let open = pair_of(
                [192, 0, 2, 9],
                42000 + i,
                20000 + i,
                now - s,
                tcp_state::OPEN,
            );
            for (k, c, rk, r) in [over, open] {
                maps.conns.insert(k, c, 0).unwrap();
                maps.replies.insert(rk, r, 0).unwrap();
            }
            live.push(open);
        }
        let (entries, orphans) = walk(&maps).unwrap();
        assert!(orphans.is_empty());
        for e in &entries {
            let (reply_key, _) = e.reply.expect("every connection has its reply");
            assert_eq!(reply_key.dst_addr, e.key.src_addr, "its own client's");
        }
        let census = sweep_all(&maps, now);
        assert_eq!((census.removed, census.connections), (32, 32));
        let mut left: Vec<FlowKey> = maps.replies.keys().map(Result::unwrap).collect();
        let mut wanted: Vec<FlowKey> = live.iter().map(|(_, _, rk, _)| *rk).collect();
        left.sort_by_key(|k| (k.dst_addr, k.dst_port));
        wanted.sort_by_key(|k| (k.dst_addr, k.dst_port));
        assert_eq!(left, wanted, "every live connection keeps its reply entry");
    }

    #[test]
    fn the_nat_port_of_a_connection_the_back_end_closed_stays_taken_through_its_time_wait() {
        let mut maps = tables();
        let s = 1_000_000_000u64;
        // A moment late enough that nothing here subtracts from the clock.
        let now = monotonic_ns() + 400 * s;
        let closed_by_backend = |port: u16, idle_s: u64| {
            let (k, c, rk, mut r) = pair(port, port, now - idle_s * s, tcp_state::FIN);
            r.state = tcp_state::FIN;
            (k, c, rk, r)
        };
        // Closed 20 s ago: past tcp_closing, within the back-end's TIME_WAIT.
        let recent = closed_by_backend(40000, 20);
        // Closed 70 s ago: past both.
        let old = closed_by_backend(40001, 70);
        // Reset 20 s ago: nobody holds a TIME_WAIT.
        let (rk, rc, rrk, mut rr) = pair(40002, 40002, now - 20 * s, tcp_state::RST);
        rr.state = tcp_state::RST;
        for (k, c, rk, r) in [recent, old, (rk, rc, rrk, rr)] {
            maps.conns.insert(k, c, 0).unwrap();
            maps.replies.insert(rk, r, 0).unwrap();
        }
        let sweep = |maps: &Tables| sweep_all(maps, now);
        assert_eq!(sweep(&maps).removed, 3, "every connection entry is over");
        let left: Vec<FlowKey> = maps.replies.keys().map(Result::unwrap).collect();
        assert_eq!(
            left,
            vec![recent.2],
            "the port the back-end still holds stays taken"
        );
        // The next sweep finds it without its connection, and leaves it too.
        sweep(&maps);
        let left: Vec<FlowKey> = maps.replies.keys().map(Result::unwrap).collect();
        assert_eq!(left, vec![recent.2]);
        // XDP gives the port to a new connection of the client's address (every probe found
        // its port taken) while the old connection's entry is still there: sweeping the old
        // one leaves the new one's reply entry.
        let new = pair(40100, 40000, now - s, tcp_state::OPEN);
        assert_eq!(new.2, recent.2, "the same reply key");
        maps.conns.insert(recent.0, recent.1, 0).unwrap();
        maps.conns.insert(new.0, new.1, 0).unwrap();
        maps.replies.insert(new.2, new.3, 0).unwrap();
        let census = sweep(&maps);
        assert_eq!((census.removed, census.connections), (1, 1));
        let left: Vec<Reply> = maps.replies.iter().map(|e| e.unwrap().1).collect();
        assert_eq!(left, vec![new.3], "the new connection's reply entry stays");
    }

    #[test]
    fn copies_taken_over_by_another_node_are_the_same_connections() {
        let load = tables;
        let mut home = load();
        let now = monotonic_ns();
        for (k, c, rk, r) in [
            pair(40000, 20001, now, tcp_state::OPEN),
            pair(40001, 20002, now, tcp_state::FIN),
        ] {
            home.conns.insert(k, c, 0).unwrap();
            home.replies.insert(rk, r, 0).unwrap();
        }
        let sorted = |maps: &Tables| {
            let mut c = copies(&batch::entries(&maps.conns).unwrap());
            c.sort_by_key(|c| c.id);
            c
        };
        let sent = sorted(&home);
        assert_eq!(sent.len(), 2);
        let successor = load();
        let (me, gone) = (NodeId(1), NodeId(0));
        let installed = |maps: &Tables, copies: &[ConnCopy]| {
            take_over(maps, me, gone, me, copies).unwrap().installed
        };
        assert_eq!(installed(&successor, &sent), 2);
        assert_eq!(
            installed(&successor, &sent),
            0,
            "connections it has are left alone"
        );
        assert_eq!(sorted(&successor), sent);
        // Forwarding entries to a node that died point at its holder, or go when that is
        // this node, which then takes the dead node's copy instead of its own stale entry.
        let key = |port: u16| pair(port, 0, now, tcp_state::OPEN).0;
        let to = |node: u32| Conn {
            home: node + 1,
            last_seen_ns: now,
            ..Conn::default()
        };
        home.conns.insert(key(41000), to(2), 0).unwrap();
        home.conns.insert(key(41001), to(0), 0).unwrap();
        let rehomed = take_over(&home, me, NodeId(2), NodeId(0), &[]).unwrap();
        assert_eq!(rehomed.rehomed, 1);
        assert_eq!(home.conns.get(&key(41000), 0).unwrap().home, 1);
        assert_eq!(take_over(&home, me, gone, me, &[]).unwrap().removed, 2);
        assert!(home.conns.get(&key(41000), 0).is_err());
        let fkey = key(40000); // the first copy's connection
        let mut fresh = load();
        fresh.conns.insert(fkey, to(2), 0).unwrap();
        assert_eq!(installed(&fresh, &sent), 2, "the copy replaces it");
        assert_eq!(fresh.conns.get(&fkey, 0).unwrap().home, 0);
        let (entries, orphans) = walk(&successor).unwrap();
        assert!(orphans.is_empty() && entries.iter().all(|e| e.reply.is_some()));
        // The reply direction is keyed as XDP looks it up: back-end to the client's address.
        assert!(entries
            .iter()
            .all(|e| e.reply.unwrap().0.dst_addr == e.key.src_addr));
    }

    #[test]
    fn a_forwarding_entrys_copy_names_only_its_home() {
        let (key, own, _, _) = pair(40000, 20001, 5, tcp_state::FIN);
        // A stale own entry XDP offered to node 2: it keeps its translation for itself.
        let kept = Conn { home: 3, ..own };
        let copy = copies(&[(key, kept)])[0];
        assert_eq!(copy.home, Some(NodeId(2)));
        assert_eq!(
            (copy.nat_port, copy.backend, copy.state),
            (
                0,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                tcp_state::OPEN
            )
        );
        assert_eq!(copies(&[(key, own)])[0].nat_port, 20001);
    }
}

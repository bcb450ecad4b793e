//! The connection table: opening entries (rate limit, Maglev backend choice, NAT port from
//! this node's block) and tracking TCP progress so the daemon can expire them.
use aya_ebpf::bindings::BPF_NOEXIST;
use gateway_common::{
    tcp_state, Conn, FlowKey, Reason, Reply, Service, Settings, MAGLEV_MAX, NAT_PORT_PROBES,
};

use crate::{
    hash,
    maps::{BACKENDS, CONNS, MAGLEV, RATE, REPLIES, SETTINGS},
    parse::{TCP_FIN, TCP_RST},
};

const SECOND_NS: u64 = 1_000_000_000;

/// Counts one new connection against this CPU's share of the rate limit.
#[inline(always)]
fn admit(limit: u32, now: u64) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(window) = RATE.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot of a live per-CPU array entry.
    unsafe {
        if now.saturating_sub((*window).window_start_ns) >= SECOND_NS {
            (*window).window_start_ns = now;
            (*window).count = 0;
        }
        if (*window).count >= limit {
            return false;
        }
        (*window).count += 1;
    }
    true
}

/// Opens a connection for `key` (a client's opening packet to `service`): picks the backend
/// and a free NAT port of this node's block and inserts both table entries. Returns the new
/// `CONNS` entry.
#[inline(always)]
pub fn open(key: &FlowKey, service: &Service, now: u64) -> Result<*mut Conn, Reason> {
    let settings = admitted(now)?;
    let block = (settings.nat_port_min, settings.nat_port_max);
    insert(key, service, now, block)
}

/// Rebuilds the connection `key` that a dead node opened (and never copied here) with its
/// `block` (first and last port): the same Maglev pick and the same probe for a free NAT port as that
/// node made, which find its back-end and its port unless the tables differ (a health change
/// since, or a port the dead node found taken by a connection whose end was never copied).
/// Counted against the rate limit like a new connection, so stray packets cannot fill the
/// table faster.
#[inline(always)]
pub fn rebuild(
    key: &FlowKey,
    service: &Service,
    now: u64,
    block: (u16, u16),
) -> Result<*mut Conn, Reason> {
    admitted(now)?;
    insert(key, service, now, block)
}

/// The settings, once the rate limit admits one more connection.
#[inline(always)]
fn admitted(now: u64) -> Result<&'static Settings, Reason> {
    let settings = SETTINGS.get(0).ok_or(Reason::NatExhausted)?;
    if !admit(settings.new_conns_per_cpu, now) {
        return Err(Reason::RateLimited);
    }
    Ok(settings)
}

/// Inserts the entries of a connection of `key` to `service`: the back-end of Maglev's slot
/// for the flow's hash, and the first free NAT port of `block` (first and last port) probing
/// from the hash.
#[inline(always)]
fn insert(
    key: &FlowKey,
    service: &Service,
    now: u64,
    block: (u16, u16),
) -> Result<*mut Conn, Reason> {
    let size = service.table_size;
    if size == 0 || size > MAGLEV_MAX {
        return Err(Reason::NoBackend);
    }
    let flow_hash = hash::flow(key);
    let offset = flow_hash.checked_rem(size).ok_or(Reason::NoBackend)?;
    let slot = (service.id * 2 + (service.half & 1)) * MAGLEV_MAX + offset;
    let backend_id = *MAGLEV.get(slot).ok_or(Reason::NoBackend)?;
    let backend = *BACKENDS.get(backend_id).ok_or(Reason::NoBackend)?;

    let (min, max) = (block.0 as u32, block.1 as u32);
    if min == 0 || max < min {
        return Err(Reason::NatExhausted);
    }
    let block = max - min + 1;
    let start = hash::finish(flow_hash ^ 0x5bd1_e995);
    let (mut reply_key, reply) = reply_entry(key, backend.addr, backend.port, 0, service.id, now);
    let mut nat_port = 0u16;
    // The first probed port whose back-end closed its connection: its reply entry stays
    // through the back-end's TIME_WAIT (the daemon's sweep, `tcp_time_wait`), as the back-end
    // would refuse a new connection of the client's address on it; taken only when every
    // probe found its port taken, rather than refuse the connection.
    let mut closed = 0u16;
    for probe in 0..NAT_PORT_PROBES {
        let Some(offset) = start.wrapping_add(probe).checked_rem(block) else {
            break;
        };
        let port = (min + offset) as u16;
        reply_key.dst_port = port.to_be();
        if REPLIES.insert(reply_key, reply, BPF_NOEXIST as u64).is_ok() {
            nat_port = port.to_be();
            break;
        }
        // SAFETY: the entry is read at once and not kept.
        let taken = unsafe { REPLIES.get(&reply_key) };
        if closed == 0 && taken.is_some_and(|r| r.state == tcp_state::FIN) {
            closed = port.to_be();
        }
    }
    if nat_port == 0 && closed != 0 {
        reply_key.dst_port = closed;
        if REPLIES.insert(reply_key, reply, 0).is_ok() {
            nat_port = closed;
        }
    }
    if nat_port == 0 {
        return Err(Reason::NatExhausted);
    }
    let conn = Conn {
        backend_addr: backend.addr,
        backend_port: backend.port,
        nat_port,
        backend_id,
        service_id: service.id,
        created_ns: now,
        last_seen_ns: now,
        ..Default::default()
    };
    if CONNS.insert(key, conn, 0).is_err() {
        let _ = REPLIES.remove(reply_key);
        return Err(Reason::NatExhausted);
    }
    CONNS.get_ptr_mut(key).ok_or(Reason::NatExhausted)
}

/// The `REPLIES` entry (key and value) of the client flow `key` translated to `backend_addr`
/// and `backend_port` with `nat_port` (all network order).
#[inline(always)]
fn reply_entry(
    key: &FlowKey,
    backend_addr: u32,
    backend_port: u16,
    nat_port: u16,
    service_id: u32,
    now: u64,
) -> (FlowKey, Reply) {
    let reply = Reply {
        vip: key.dst_addr,
        vip_port: key.dst_port,
        client_port: key.src_port,
        service_id,
        last_seen_ns: now,
        ..Default::default()
    };
    (reply_key(key, backend_addr, backend_port, nat_port), reply)
}

/// The `REPLIES` key of the client flow `key` translated to `backend_addr:backend_port` with
/// `nat_port`: the back-end's reply as it arrives.
#[inline(always)]
fn reply_key(key: &FlowKey, backend_addr: u32, backend_port: u16, nat_port: u16) -> FlowKey {
    FlowKey {
        src_addr: backend_addr,
        dst_addr: key.src_addr,
        src_port: backend_port,
        dst_port: nat_port,
        proto: key.proto,
        _pad: [0; 3],
    }
}

/// Makes the forwarding entry `conn` of `key` this node's connection again if it kept this
/// node's translation (`nat_port` != 0) when it replaced a stale own entry: the node it names
/// sent the packet back, having no connection of those ports. Its reply entry is written
/// again if the sweep took it meanwhile; false when the entry kept no translation, or its NAT
/// port now serves another connection.
///
/// # Safety
/// `conn` must point to a live `CONNS` value.
#[inline(always)]
pub unsafe fn reclaim(key: &FlowKey, conn: *mut Conn, now: u64) -> bool {
    if (*conn).nat_port == 0 {
        return false;
    }
    let (reply_key, reply) = reply_entry(
        key,
        (*conn).backend_addr,
        (*conn).backend_port,
        (*conn).nat_port,
        (*conn).service_id,
        now,
    );
    let ours = match REPLIES.get(&reply_key) {
        Some(r) => r.client_port == key.src_port && r.vip == key.dst_addr,
        None => REPLIES.insert(reply_key, reply, BPF_NOEXIST as u64).is_ok(),
    };
    if ours {
        (*conn).home = 0;
    }
    ours
}

/// Forgets a finished connection whose client reuses its ports: its reply entry goes at once
/// (its NAT port is free again); the `CONNS` entry is overwritten by the new connection.
///
/// # Safety
/// `conn` must point to a live `CONNS` value.
#[inline(always)]
pub unsafe fn close(key: &FlowKey, conn: *const Conn) {
    let reply_key = reply_key(
        key,
        (*conn).backend_addr,
        (*conn).backend_port,
        (*conn).nat_port,
    );
    // Its port may serve another connection of the client's address by now (taken once the
    // back-end had closed this one): that one's entry stays.
    if REPLIES
        .get(&reply_key)
        .is_some_and(|r| r.client_port == key.src_port && r.vip == key.dst_addr)
    {
        let _ = REPLIES.remove(&reply_key);
    }
}

/// Forgets the connection whose `REPLIES` key is `reply_key` if it is over: a FIN or RST seen
/// in either direction, or no `CONNS` entry of its own left. Both entries go; a `CONNS` entry
/// of the same client ports that is another connection stays.
///
/// # Safety
/// Reads and removes table entries only; safe to call on any key.
#[inline(always)]
pub unsafe fn forget_finished(reply_key: &FlowKey) {
    let Some(reply) = REPLIES.get(reply_key) else {
        return;
    };
    let client = FlowKey {
        src_addr: reply_key.dst_addr,
        dst_addr: reply.vip,
        src_port: reply.client_port,
        dst_port: reply.vip_port,
        proto: reply_key.proto,
        _pad: [0; 3],
    };
    let conn = CONNS.get(&client).filter(|c| {
        (c.backend_addr, c.backend_port, c.nat_port)
            == (reply_key.src_addr, reply_key.src_port, reply_key.dst_port)
    });
    let over = match conn {
        Some(conn) => conn.state != tcp_state::OPEN || reply.state != tcp_state::OPEN,
        None => true,
    };
    if !over {
        return;
    }
    if conn.is_some() {
        let _ = CONNS.remove(&client);
    }
    let _ = REPLIES.remove(reply_key);
}

/// Moves a direction's TCP state on with the packet's flags (RST wins over FIN).
#[inline(always)]
pub fn track(state: &mut u8, tcp_flags: u8) {
    if tcp_flags & TCP_RST != 0 {
        *state = tcp_state::RST;
    } else if tcp_flags & TCP_FIN != 0 && *state == tcp_state::OPEN {
        *state = tcp_state::FIN;
    }
}

//! Katran-style fixtures for the XDP data path: one module of rows per feature (input packet,
//! expected output packet, action, counter deltas), run through `BPF_PROG_TEST_RUN` against the
//! real program in a private namespace whose routes and static neighbours make `bpf_fib_lookup`
//! deterministic.
//!
//! Each feature is its own test on a fresh testbed, so a failure names the feature and no
//! feature depends on another's leftovers. Within a feature rows are stateful: later rows use
//! the connections earlier rows opened. The tests may run in parallel threads: `Netns` moves
//! only the calling thread into its uniquely named namespace, each test loads its own object,
//! and `BPF_PROG_TEST_RUN` looks routes up in the calling thread's namespace.
//!
//! Needs root. Run with `cargo test -p gateway --test xdp_fixtures`.
#[path = "../support/mod.rs"]
mod support;

mod arp;
mod cluster_port;
mod common;
mod distributed_nat;
mod flooded;
mod handoff;
mod lease;
mod malformed;
mod nat_blocks;
mod nat_ports;
mod rate_limit;
mod rebuild;
mod reuse;
mod routed;
mod stale;
mod tcp_lifetime;
mod truncated;
mod udp;
mod unresolved;
mod unserved;

/// What the feature modules build their rows from.
mod prelude {
    pub(crate) use crate::{
        common::*,
        support::{packets::*, testbed::*},
        Row,
    };
}

use anyhow::{ensure, Context, Result};
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use gateway_common::{maps, programs, Action, Path, Reason};
use support::testbed::{Nic, Testbed};

/// What a row expects to come out.
enum Expect {
    /// The input, byte for byte.
    Unchanged,
    /// Nothing (dropped).
    Dropped,
    /// This packet, built once the row has run (NAT ports are chosen by the data path).
    Packet(Build),
}

/// Builds a packet from the state left by earlier rows.
type Build = Box<dyn Fn(&Testbed) -> Result<Vec<u8>>>;
type Hook = Box<dyn Fn(&mut Testbed) -> Result<()>>;

/// One fixture.
struct Row {
    name: String,
    nic: Nic,
    /// Built when the row runs: a backend's reply depends on the NAT port earlier rows chose.
    input: Build,
    expect: Expect,
    action: Action,
    path: Option<Path>,
    reason: Option<Reason>,
    /// Service and backend counters this packet bumps.
    service: Option<u32>,
    backend: Option<u32>,
    /// Runs before the packet (e.g. settings) and after it (e.g. map contents).
    before: Option<Hook>,
    after: Option<Hook>,
}

impl Row {
    fn new(name: impl Into<String>, nic: Nic, input: Vec<u8>, action: Action) -> Self {
        Self {
            name: name.into(),
            nic,
            input: Box::new(move |_| Ok(input.clone())),
            expect: if action == Action::Drop {
                Expect::Dropped
            } else {
                Expect::Unchanged
            },
            action,
            path: None,
            reason: None,
            service: None,
            backend: None,
            before: None,
            after: None,
        }
    }
    fn path(mut self, path: Path) -> Self {
        self.path = Some(path);
        self
    }
    fn reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }
    fn counts(mut self, service: u32, backend: Option<u32>) -> Self {
        self.service = Some(service);
        self.backend = backend;
        self
    }
    fn input(mut self, f: impl Fn(&Testbed) -> Result<Vec<u8>> + 'static) -> Self {
        self.input = Box::new(f);
        self
    }
    fn expect(mut self, f: impl Fn(&Testbed) -> Result<Vec<u8>> + 'static) -> Self {
        self.expect = Expect::Packet(Box::new(f));
        self
    }
    fn before(mut self, f: impl Fn(&mut Testbed) -> Result<()> + 'static) -> Self {
        self.before = Some(Box::new(f));
        self
    }
    fn after(mut self, f: impl Fn(&mut Testbed) -> Result<()> + 'static) -> Self {
        self.after = Some(Box::new(f));
        self
    }
}

const COUNTER_MAPS: [&str; 5] = [
    maps::ACTIONS,
    maps::PATHS,
    maps::REASONS,
    maps::SERVICE_STATS,
    maps::BACKEND_STATS,
];

/// Verifies every checksum of an output packet independently of the data path.
fn verify_checksums(packet: &[u8]) -> Result<()> {
    let headers = PacketHeaders::from_ethernet_slice(packet).context("output does not parse")?;
    let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
        return Ok(());
    };
    ensure!(
        ip.header_checksum == ip.calc_header_checksum(),
        "bad IPv4 header checksum"
    );
    let payload = headers.payload.slice();
    match &headers.transport {
        Some(TransportHeader::Tcp(tcp)) => {
            ensure!(
                tcp.checksum == tcp.calc_checksum_ipv4(ip, payload)?,
                "bad TCP checksum"
            )
        }
        Some(TransportHeader::Udp(udp)) if udp.checksum != 0 => {
            ensure!(
                udp.checksum == udp.calc_checksum_ipv4(ip, payload)?,
                "bad UDP checksum"
            )
        }
        _ => {}
    }
    Ok(())
}

fn snapshot(bed: &Testbed) -> Result<Vec<Vec<u64>>> {
    COUNTER_MAPS.iter().map(|m| bed.counters(m)).collect()
}

/// The counters a row expects to have moved by one.
fn expected_deltas(row: &Row) -> Vec<(usize, u32)> {
    let mut deltas = vec![(0, row.action as u32)];
    deltas.extend(row.path.map(|p| (1, p as u32)));
    deltas.extend(row.reason.map(|r| (2, r as u32)));
    deltas.extend(row.service.map(|s| (3, s)));
    deltas.extend(row.backend.map(|b| (4, b)));
    deltas
}

fn run_row(bed: &mut Testbed, row: &Row) -> Result<()> {
    if let Some(before) = &row.before {
        before(bed)?;
    }
    let input = (row.input)(bed)?;
    let before = snapshot(bed)?;
    let (action, output, _) = bed.run(programs::GATEWAY, row.nic, &input, 1)?;
    ensure!(
        action == row.action as u32,
        "action {action}, expected {:?}",
        row.action
    );
    let after = snapshot(bed)?;
    let expected = expected_deltas(row);
    for (m, (old, new)) in before.iter().zip(&after).enumerate() {
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            let want = expected
                .iter()
                .filter(|(em, ei)| *em == m && *ei as usize == i)
                .count() as u64;
            ensure!(
                n - o == want,
                "{}[{i}] moved by {}, expected {want}",
                COUNTER_MAPS[m],
                n - o
            );
        }
    }
    match &row.expect {
        Expect::Dropped => {}
        Expect::Unchanged => ensure!(
            output == input,
            "packet changed:\n in  {input:02x?}\n out {output:02x?}"
        ),
        Expect::Packet(build) => {
            let want = build(bed)?;
            ensure!(
                output == want,
                "wrong output:\n got  {output:02x?}\n want {want:02x?}"
            );
            verify_checksums(&output)?;
        }
    }
    if let Some(after) = &row.after {
        after(bed)?;
    }
    Ok(())
}

/// Runs one feature's rows in order on a fresh testbed, then `checks` (failures it finds
/// besides the rows'); fails listing every failed row, so one run shows all of them.
fn run(feature: &str, rows: Vec<Row>, checks: impl FnOnce(&Testbed) -> Vec<String>) -> Result<()> {
    let mut bed = Testbed::new("gwfx", &[programs::GATEWAY])?;
    let mut failures: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let e = run_row(&mut bed, row).err()?;
            Some(format!("{}: {e:#}", row.name))
        })
        .collect();
    failures.extend(checks(&bed));
    println!("{feature}: {} rows, {} failed", rows.len(), failures.len());
    assert!(failures.is_empty(), "failed rows:\n{}", failures.join("\n"));
    Ok(())
}

/// One test per feature module, named after it, running its `rows()`.
macro_rules! features {
    ($($feature:ident),* $(,)?) => {$(
        #[test]
        fn $feature() -> Result<()> {
            run(stringify!($feature), $feature::rows(), |_| Vec::new())
        }
    )*};
}

features!(
    arp,
    cluster_port,
    distributed_nat,
    flooded,
    handoff,
    lease,
    malformed,
    nat_blocks,
    nat_ports,
    rate_limit,
    rebuild,
    reuse,
    routed,
    stale,
    tcp_lifetime,
    udp,
    unresolved,
    unserved,
);

#[test]
fn truncated() -> Result<()> {
    run(
        "truncated",
        truncated::rows(),
        truncated::short_frames_refused,
    )
}

//! Who answers ARP for the VIPs, seen from a station on their subnet: an ARP watch that asks
//! for every VIP at a steady pace on a raw `AF_PACKET` socket and records every ARP reply and
//! gratuitous announcement it hears, with the time and the answering MAC. The cluster tests
//! use it to prove that each VIP is answered by exactly one MAC, and that a node which lost its
//! VIPs never answers for them again.
use crate::netns::Netns;
use crate::packet::{self, PacketSocket};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A MAC address.
pub type Mac = [u8; 6];

/// The ARP ethertype.
pub const ETH_P_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
const FRAME_LEN: usize = 42;

/// One ARP answer heard: a reply, or an announcement (a request whose sender and target
/// address are the same, as gratuitous ARP is sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// When it was received.
    pub at: Instant,
    /// The address it answers for (the ARP sender protocol address).
    pub addr: Ipv4Addr,
    /// The MAC it names (the ARP sender hardware address).
    pub mac: Mac,
}

/// Parses `02:00:00:00:00:01`.
pub fn parse_mac(text: &str) -> Result<Mac> {
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {text}"))?;
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC {text}"))
}

/// An ARP request from `mac`/`addr` for `target`, broadcast.
pub fn request(mac: Mac, addr: Ipv4Addr, target: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The answer in an ARP frame, if it is a reply or an announcement.
pub fn parse_answer(frame: &[u8], at: Instant) -> Option<Heard> {
    if frame.len() < FRAME_LEN || frame[12..14] != ETH_P_ARP.to_be_bytes() {
        return None;
    }
    let op = u16::from_be_bytes([frame[20], frame[21]]);
    let mac: Mac = frame[22..28].try_into().ok()?;
    let addr = Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
    let target = Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]);
    let answer = op == ARP_REPLY || (op == ARP_REQUEST && addr == target);
    answer.then_some(Heard { at, addr, mac })
}

/// Asks for every target each `interval` and records every answer heard, until stopped.
pub struct ArpWatch {
    stop: Arc<AtomicBool>,
    heard: Arc<Mutex<Vec<Heard>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl ArpWatch {
    /// Starts watching on `ifname` of `ns`, asking for `targets` every `interval` (none:
    /// listen only).
    pub fn start(
        ns: &Netns,
        ifname: &str,
        targets: &[Ipv4Addr],
        interval: Option<Duration>,
    ) -> Result<Self> {
        let (mac, addr, ifindex) = packet::link_identity(ns, ifname)?;
        let stop = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (stop2, heard2, targets) = (stop.clone(), heard.clone(), targets.to_vec());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let socket = PacketSocket::open(ifindex, ETH_P_ARP);
            let _ = ready_tx.send(socket.is_ok());
            let socket = socket?;
            let mut next_ask = Instant::now();
            let mut buf = [0u8; 128];
            while !stop2.load(Ordering::Relaxed) {
                if let Some(every) = interval.filter(|_| Instant::now() >= next_ask) {
                    for target in &targets {
                        socket.send(&request(mac, addr, *target));
                    }
                    next_ask += every;
                }
                let n = socket.recv(&mut buf);
                if let Some(h) = n.and_then(|n| parse_answer(&buf[..n], Instant::now())) {
                    heard2.lock().unwrap().push(h);
                }
            }
            Ok(())
        });
        if !ready_rx.recv().unwrap_or(false) {
            let err = thread.join().expect("ARP watch thread panicked");
            bail!("ARP watch did not start: {err:?}");
        }
        Ok(Self {
            stop,
            heard,
            thread: Some(thread),
        })
    }

    /// Everything heard so far.
    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().unwrap().clone()
    }

    /// Forgets what was heard so far.
    pub fn clear(&self) {
        self.heard.lock().unwrap().clear();
    }

    /// Stops the watch and returns everything heard.
    pub fn stop(mut self) -> Result<Vec<Heard>> {
        self.finish()?;
        Ok(self.heard())
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().expect("ARP watch thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("ARP watch: {e:#}");
        }
    }
}

/// Asks once for each of `targets` from `ifname` in `ns` and returns, per target, every MAC
/// that answered within `wait`.
pub fn answers(
    ns: &Netns,
    ifname: &str,
    targets: &[Ipv4Addr],
    wait: Duration,
) -> Result<BTreeMap<Ipv4Addr, BTreeSet<Mac>>> {
    let watch = ArpWatch::start(ns, ifname, targets, Some(wait * 2))?;
    std::thread::sleep(wait);
    let mut out: BTreeMap<Ipv4Addr, BTreeSet<Mac>> =
        targets.iter().map(|t| (*t, BTreeSet::new())).collect();
    for h in watch.stop()? {
        if let Some(macs) = out.get_mut(&h.addr) {
            macs.insert(h.mac);
        }
    }
    Ok(out)
}

/// A stretch of consecutive buckets (of the watch's asking interval) in each of which two or
/// more MACs answered for one address: a moment of two answering owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DualRun {
    /// The start of its first bucket.
    pub start: Instant,
    /// The answers heard in each of its buckets, in order.
    pub answers: Vec<usize>,
    /// The length of one bucket.
    pub bucket: Duration,
}

impl DualRun {
    /// How long it lasted (its buckets).
    pub fn length(&self) -> Duration {
        self.bucket * self.answers.len() as u32
    }

    /// The answers heard after it had lasted `allowed` (the split-brain resolution time): the
    /// ones no rule excuses.
    pub fn answers_beyond(&self, allowed: Duration) -> usize {
        let excused = (allowed.as_nanos() / self.bucket.as_nanos().max(1)) as usize;
        self.answers.iter().skip(excused).sum()
    }
}

/// Every stretch during which two or more MACs answered for `addr`, in order: the answers fall
/// into buckets of `bucket` (the watch's asking interval) counted from the first answer heard,
/// and a bucket with answers from two MACs counts as a moment of two answering owners.
pub fn dual_runs(heard: &[Heard], addr: Ipv4Addr, bucket: Duration) -> Vec<DualRun> {
    let Some(start) = heard.iter().map(|h| h.at).min() else {
        return Vec::new();
    };
    let width = bucket.as_nanos().max(1);
    let mut buckets: BTreeMap<u128, (BTreeSet<Mac>, usize)> = BTreeMap::new();
    for h in heard.iter().filter(|h| h.addr == addr) {
        let k = h.at.duration_since(start).as_nanos() / width;
        let (macs, answers) = buckets.entry(k).or_default();
        macs.insert(h.mac);
        *answers += 1;
    }
    let mut runs: Vec<DualRun> = Vec::new();
    let mut last_dual = None;
    for (k, (macs, answers)) in buckets {
        if macs.len() < 2 {
            continue;
        }
        match runs.last_mut() {
            Some(run) if last_dual.is_some_and(|l: u128| l + 1 == k) => run.answers.push(answers),
            _ => runs.push(DualRun {
                start: start + Duration::from_nanos((k * width) as u64),
                answers: vec![answers],
                bucket,
            }),
        }
        last_dual = Some(k);
    }
    runs
}

/// The longest stretch during which two or more MACs answered for `addr` ([`dual_runs`]).
pub fn longest_dual(heard: &[Heard], addr: Ipv4Addr, bucket: Duration) -> Duration {
    dual_runs(heard, addr, bucket)
        .iter()
        .map(DualRun::length)
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_no_answer_but_its_reply_and_an_announcement_are() {
        let mac = [2, 0, 0, 0, 0, 1];
        let me = Ipv4Addr::new(10, 0, 0, 1);
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let now = Instant::now();
        let ask = request(mac, me, vip);
        assert_eq!(parse_answer(&ask, now), None);
        let mut reply = ask;
        reply[20..22].copy_from_slice(&ARP_REPLY.to_be_bytes());
        reply[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        reply[28..32].copy_from_slice(&vip.octets());
        let heard = parse_answer(&reply, now).unwrap();
        assert_eq!((heard.addr, heard.mac), (vip, [2, 0, 0, 0, 0, 9]));
        let garp = request([2, 0, 0, 0, 0, 9], vip, vip);
        assert_eq!(parse_answer(&garp, now).map(|h| h.addr), Some(vip));
        assert_eq!(parse_answer(&garp[..41], now), None, "cut short");
    }

    #[test]
    fn dual_answers_are_measured_in_consecutive_buckets() {
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let t0 = Instant::now();
        let at = |ms: u64, mac: u8| Heard {
            at: t0 + Duration::from_millis(ms),
            addr: vip,
            mac: [2, 0, 0, 0, 0, mac],
        };
        let bucket = Duration::from_millis(10);
        let heard = [
            at(0, 1),
            at(12, 1),
            at(13, 2),
            at(21, 1),
            at(22, 2),
            at(35, 2),
        ];
        assert_eq!(longest_dual(&heard, vip, bucket), bucket * 2);
        assert_eq!(longest_dual(&heard[..2], vip, bucket), Duration::ZERO);
        let runs = dual_runs(&heard, vip, bucket);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].answers, [2, 2]);
        assert_eq!(runs[0].start, t0 + bucket);
        assert_eq!(
            runs[0].answers_beyond(bucket),
            2,
            "the second bucket is beyond one"
        );
        assert_eq!(runs[0].answers_beyond(bucket * 2), 0);
    }

    #[test]
    fn macs_read_and_print() {
        let mac = parse_mac("02:0a:00:00:00:ff").unwrap();
        assert_eq!(mac, [2, 10, 0, 0, 0, 255]);
        assert_eq!(
            gateway::datapath::netlink::mac_string(&mac),
            "02:0a:00:00:00:ff"
        );
        assert!(parse_mac("02:0a").is_err());
    }
}

//! Who answers ARP for the VIPs, seen from a station on their subnet: an ARP watch that asks
//! for every VIP at a steady pace on a raw `AF_PACKET` socket and records every ARP reply and
//! gratuitous announcement it hears, with the time and the answering MAC. The cluster tests
//! use it to prove that each VIP is answered by exactly one MAC, and that a node which lost its
//! VIPs never answers for them again.
use crate::netns::Netns;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A MAC address.
pub type Mac = [u8; 6];

const ETH_P_ARP: u16 = 0x0806;
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

/// Formats a MAC as `02:00:00:00:00:01`.
pub fn mac_string(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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

/// The MAC and first IPv4 address of `ifname` in `ns`.
fn link_identity(ns: &Netns, ifname: &str) -> Result<(Mac, Ipv4Addr, u32)> {
    let text = ns.ip(&["-j", "addr", "show", "dev", ifname])?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let link = &value[0];
    let mac = parse_mac(link["address"].as_str().context("no MAC")?)?;
    let addr = link["addr_info"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["family"] == "inet"))
        .and_then(|i| i["local"].as_str())
        .context("no IPv4 address")?
        .parse()?;
    let ifindex = link["ifindex"].as_u64().context("no ifindex")? as u32;
    Ok((mac, addr, ifindex))
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

/// A raw ARP socket bound to one interface, with a short receive timeout.
fn open_socket(ifindex: u32) -> Result<OwnedFd> {
    let proto = ETH_P_ARP.to_be() as i32;
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ARP.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binding a valid socket to a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("bind AF_PACKET socket");
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 5_000,
    };
    // SAFETY: setting SO_RCVTIMEO with a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    Ok(fd)
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
        let (mac, addr, ifindex) = link_identity(ns, ifname)?;
        let stop = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (stop2, heard2, targets) = (stop.clone(), heard.clone(), targets.to_vec());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let socket = open_socket(ifindex);
            let _ = ready_tx.send(socket.is_ok());
            let socket = socket?;
            let mut next_ask = Instant::now();
            let mut buf = [0u8; 128];
            while !stop2.load(Ordering::Relaxed) {
                if let Some(every) = interval.filter(|_| Instant::now() >= next_ask) {
                    for target in &targets {
                        let frame = request(mac, addr, *target);
                        // SAFETY: sending a buffer we own on a bound packet socket.
                        unsafe {
                            libc::send(
                                socket.as_raw_fd(),
                                frame.as_ptr() as *const libc::c_void,
                                frame.len(),
                                0,
                            )
                        };
                    }
                    next_ask += every;
                }
                // SAFETY: receiving into a buffer we own, of the length given.
                let n = unsafe {
                    libc::recv(
                        socket.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if n > 0 {
                    if let Some(h) = parse_answer(&buf[..n as usize], Instant::now()) {
                        heard2.lock().unwrap().push(h);
                    }
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
    fn macs_read_and_print() {
        let mac = parse_mac("02:0a:00:00:00:ff").unwrap();
        assert_eq!(mac, [2, 10, 0, 0, 0, 255]);
        assert_eq!(mac_string(&mac), "02:0a:00:00:00:ff");
        assert!(parse_mac("02:0a").is_err());
    }
}

//! Raw frames on one interface of a namespace: an `AF_PACKET` socket for one ethertype, to
//! ask and hear ARP, and to capture and inject cluster datagrams byte for byte.
use crate::arp::{parse_mac, Mac};
use crate::netns::Netns;
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The IPv4 ethertype.
pub const ETH_P_IP: u16 = 0x0800;

/// The MAC, first IPv4 address and ifindex of `ifname` in `ns`.
pub fn link_identity(ns: &Netns, ifname: &str) -> Result<(Mac, Ipv4Addr, u32)> {
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

/// A raw socket bound to one interface for one ethertype, with a 5 ms receive timeout so a
/// loop around [`PacketSocket::recv`] can check for a stop request.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket in the calling thread's namespace.
    pub fn open(ifindex: u32, ethertype: u16) -> Result<Self> {
        let proto = ethertype.to_be() as i32;
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
        sll.sll_protocol = ethertype.to_be();
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
        Ok(Self { fd })
    }

    /// Sends one whole frame (Ethernet header included).
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: sending a buffer we own on a bound packet socket.
        unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
    }

    /// Receives one frame into `buf`; `None` after the timeout.
    pub fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: receiving into a buffer we own, of the length given.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        (n > 0).then_some(n as usize)
    }
}

/// The UDP payload of an IPv4 frame from `from` to port `dport`, if it is one.
pub fn udp_payload(frame: &[u8], from: Ipv4Addr, dport: u16) -> Option<&[u8]> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != ETH_P_IP.to_be_bytes() {
        return None;
    }
    let ip = &frame[14..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 17 || ip[12..16] != from.octets() || header_len < 20 || total > ip.len() {
        return None;
    }
    let udp = ip.get(header_len..total)?;
    if udp.len() < 8 || udp[2..4] != dport.to_be_bytes() {
        return None;
    }
    Some(&udp[8..])
}

/// Captures, on `ifname` of `ns`, the payload of the first UDP datagram from `from` to port
/// `dport` that is `wanted` and arrives within `within`.
pub fn capture_udp(
    ns: &Netns,
    ifname: &str,
    (from, dport): (Ipv4Addr, u16),
    wanted: impl Fn(&[u8]) -> bool + Send + 'static,
    within: std::time::Duration,
) -> Result<Vec<u8>> {
    let (_, _, ifindex) = link_identity(ns, ifname)?;
    ns.run(move || {
        let socket = PacketSocket::open(ifindex, ETH_P_IP)?;
        let deadline = std::time::Instant::now() + within;
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < deadline {
            let Some(n) = socket.recv(&mut buf) else {
                continue;
            };
            match udp_payload(&buf[..n], from, dport) {
                Some(payload) if wanted(payload) => return Ok(payload.to_vec()),
                _ => {}
            }
        }
        anyhow::bail!("no UDP datagram from {from} to port {dport} in {within:?}")
    })
}

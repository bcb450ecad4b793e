//! Gratuitous ARP for the VIPs this node takes, so switches and neighbours learn where they
//! live: a burst at start and a second burst a little later.
use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
};

use tracing::{info, warn};

use crate::config::Arp;

const ETH_P_ARP: u16 = 0x0806;

/// A gratuitous ARP request frame announcing `vip` at `mac`.
pub fn frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// One raw `AF_PACKET` socket for every announcement of the daemon's life: creating and
/// closing a packet socket per frame costs an RCU grace period in the kernel on close, which
/// blocked the daemon's runtime for tens of milliseconds per burst.
pub struct Announcer {
    fd: OwnedFd,
}

impl Announcer {
    /// Opens the socket (needs CAP_NET_RAW).
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends `frame` out of interface `ifindex`, broadcast.
    fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: sending a buffer we own to a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Announces each `(ifindex, mac, vip)` in two bursts as `arp` says, each packet only while
/// `still_owned(vip)`: a VIP that moved on meanwhile must not be claimed back by a late burst.
pub async fn announce(
    announcer: Arc<Announcer>,
    arp: Arp,
    targets: Vec<(u32, [u8; 6], Ipv4Addr)>,
    still_owned: impl Fn(Ipv4Addr) -> bool,
) {
    for burst in 0..2 {
        if burst == 1 {
            tokio::time::sleep(arp.garp_second_burst).await;
        }
        for i in 0..arp.garp_count {
            if i > 0 {
                tokio::time::sleep(arp.garp_interval).await;
            }
            for (ifindex, mac, vip) in targets.iter().filter(|t| still_owned(t.2)) {
                if let Err(e) = announcer.send(*ifindex, &frame(*mac, *vip)) {
                    warn!(%vip, "gratuitous ARP failed: {e}");
                }
            }
        }
    }
    info!(vips = targets.len(), "gratuitous ARP bursts sent");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let f = frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &[10, 0, 0, 100]);
        assert_eq!(&f[38..42], &[10, 0, 0, 100]);
        assert_eq!(&f[32..38], &[0; 6]);
    }
}

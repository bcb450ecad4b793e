//! Drives one node's transport with a script decoded from the fuzz input: raw datagrams, validly
//! signed envelopes with arbitrary header fields (to reach the logic behind authentication),
//! sends, and clock steps. Nothing may panic, and the transport's bookkeeping must stay sane.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::cluster::envelope::{self, Header, Kind};
use gateway::cluster::keys::Keyring;
use gateway::cluster::transport::{Peer, Transport, TransportConfig, TransportEvent};
use gateway::cluster::types::NodeId;
use libfuzzer_sys::fuzz_target;

/// Reads the script; runs out gracefully when the input ends.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u16(&mut self) -> u16 {
        let b = self.bytes(2);
        b.iter().fold(0, |acc, &x| (acc << 8) | u16::from(x))
    }
}

fn addr(node: u8, path: u8) -> SocketAddr {
    SocketAddr::from(([10, path, 0, node + 1], 7946))
}

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::new(1, [(1, [0x5a; 32])]).expect("valid test keyring");
    let peers = (0..3u8)
        .map(|id| Peer {
            id: NodeId(id),
            addrs: vec![addr(id, 0), addr(id, 1)],
        })
        .collect();
    let config = TransportConfig {
        max_datagram: envelope::OVERHEAD + 16,
        max_fragments: 8,
        max_in_flight: 4,
        max_reassemblies: 2,
        ..TransportConfig::default()
    };
    let me = vec![addr(0, 0), addr(0, 1)];
    let mut transport =
        Transport::new(NodeId(0), me, peers, keys.clone(), config, 1_000).expect("valid config");
    let start = Instant::now();
    let mut now = start;
    let mut script = Script(data);
    while let Some(op) = script.byte() {
        match op % 4 {
            0 => {
                let len = usize::from(script.byte().unwrap_or(0));
                let raw = script.bytes(len).to_vec();
                transport.handle_datagram(now, addr(0, 0), addr(1, 0), &raw);
            }
            1 => {
                let flags = script.byte().unwrap_or(0);
                let header = Header {
                    kind: if flags & 1 == 0 {
                        Kind::Data
                    } else {
                        Kind::Ack
                    },
                    key_id: 1,
                    sender: NodeId((flags >> 1) % 4),
                    receiver: NodeId(if flags & 0x80 == 0 { 0 } else { 1 }),
                    counter: 1_000 << 20 | u64::from(script.u16()),
                    message_id: 1_000 << 20 | u64::from(script.byte().unwrap_or(0)),
                    fragment_index: u16::from(script.byte().unwrap_or(0) % 10),
                    fragment_count: u16::from(script.byte().unwrap_or(1) % 10).max(1),
                };
                let len = if header.kind == Kind::Ack {
                    0
                } else {
                    usize::from(script.byte().unwrap_or(0) % 20)
                };
                let payload = script.bytes(len).to_vec();
                if header.fragment_index < header.fragment_count {
                    let bytes = envelope::seal(&header, &payload, keys.active().1);
                    let path = flags >> 6 & 1;
                    transport.handle_datagram(
                        now,
                        addr(0, path),
                        addr(header.sender.0, path),
                        &bytes,
                    );
                }
            }
            2 => {
                let to = NodeId(script.byte().unwrap_or(0) % 4);
                let len = usize::from(script.u16() % 200);
                let _ = transport.send(now, to, vec![0xab; len]);
            }
            _ => {
                now += Duration::from_millis(u64::from(script.byte().unwrap_or(0)) * 4);
                transport.handle_timeout(now);
            }
        }
        while transport.poll_transmit().is_some() {}
        while let Some(event) = transport.poll_event() {
            if let TransportEvent::Received { payload, .. } = event {
                assert!(payload.len() <= 8 * 16, "reassembled beyond max_fragments");
            }
        }
        if let Some(deadline) = transport.poll_timeout() {
            assert!(
                deadline <= now + Duration::from_secs(1),
                "timer set too far ahead"
            );
        }
    }
});

//! A TCP connection's lifetime through the service on `PORT_TCP`: open, use, the backend's
//! reply, close from either side, reopen, reset.
use anyhow::{ensure, Result};
use gateway_common::{proto, tcp_state, Path};

use crate::prelude::*;

fn reply_state_after(
    flow: Flow,
    l4: u8,
    backend: usize,
    state: u8,
) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        let r = reply(bed, &flow, l4, BACKENDS[backend])?;
        ensure!(r.state == state, "REPLIES state {} != {state}", r.state);
        Ok(())
    }
}

/// Both directions of the TCP test connection are open again after a reopening SYN.
fn reopened(flow: Flow) -> impl Fn(&mut Testbed) -> Result<()> {
    move |bed| {
        state_after(flow, proto::TCP, tcp_state::OPEN)(bed)?;
        reply_state_after(flow, proto::TCP, 0, tcp_state::OPEN)(bed)
    }
}

pub fn rows() -> Vec<Row> {
    let flow = to_vip(CLIENT_PORT, PORT_TCP);
    let fwd = |name: &str, flags: Flags, path: Path| tcp_fwd(name, flow, flags, path, 0);
    let back = |name: &str, flags: Flags| reply_row(name, flow, proto::TCP, 0, flags, CLIENT_MAC);
    vec![
        fwd("tcp syn opens a connection", SYN, Path::NewConn).after(check_entries(
            flow,
            proto::TCP,
            0,
            (NAT_MIN, NAT_MAX),
        )),
        fwd("tcp ack uses the connection", ACK, Path::Established),
        fwd(
            "tcp syn retransmit on an open entry",
            SYN,
            Path::Established,
        ),
        back("tcp reply from the backend", ACK),
        fwd("tcp fin from the client", FIN, Path::Established).after(state_after(
            flow,
            proto::TCP,
            tcp_state::FIN,
        )),
        back("tcp fin from the backend", FIN).after(reply_state_after(
            flow,
            proto::TCP,
            0,
            tcp_state::FIN,
        )),
        fwd("tcp syn reopens a finished entry", SYN, Path::NewConn).after(reopened(flow)),
        fwd("tcp rst from the client", RST, Path::Established).after(state_after(
            flow,
            proto::TCP,
            tcp_state::RST,
        )),
        fwd("tcp syn reopens a reset entry", SYN, Path::NewConn).after(reopened(flow)),
        back("tcp rst from the backend", RST).after(reply_state_after(
            flow,
            proto::TCP,
            0,
            tcp_state::RST,
        )),
    ]
}

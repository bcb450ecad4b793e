//! UDP flows both ways through the service on `PORT_UDP`, with a checksum and with checksum 0
//! (which must stay 0).
use anyhow::Result;
use gateway_common::{proto, Action, Path};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (port, checksum) in [(41000, true), (41001, false)] {
        let flow = to_vip(port, PORT_UDP);
        let what = if checksum {
            "with checksum"
        } else {
            "checksum 0"
        };
        let out = move |bed: &Testbed| -> Result<Vec<u8>> {
            Ok(udp(
                &translated(bed, &flow, proto::UDP, 1, Some((INT_MAC, BACKEND_MACS[1])))?,
                checksum,
            ))
        };
        let fwd = |event: &str, path| {
            Row::new(
                format!("udp {what} {event}"),
                Nic::External,
                udp(&flow, checksum),
                Action::Redirect,
            )
            .path(path)
            .counts(1, Some(1))
            .expect(out)
        };
        let flags = Flags {
            syn: checksum,
            ..Flags::default()
        };
        rows.extend([
            fwd("opens a connection", Path::NewConn).after(check_entries(
                flow,
                proto::UDP,
                1,
                (NAT_MIN, NAT_MAX),
            )),
            fwd("established", Path::Established),
            reply_row(
                &format!("udp {what} reply"),
                flow,
                proto::UDP,
                1,
                flags,
                CLIENT_MAC,
            ),
        ]);
    }
    rows
}

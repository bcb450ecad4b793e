//! A backend whose neighbour is unresolved: the translated packet is left to the kernel to
//! forward (it resolves the neighbour), for the first packet and the later ones alike.
use gateway_common::{proto, Action, Path};

use crate::prelude::*;

pub fn rows() -> Vec<Row> {
    let unresolved = to_vip(45000, PORT_UNRESOLVED);
    [("syn", SYN), ("ack", ACK)]
        .into_iter()
        .map(|(name, flags)| {
            Row::new(
                format!("tcp {name} to a backend with no neighbour"),
                Nic::External,
                tcp(&unresolved, flags),
                Action::Pass,
            )
            .path(Path::KernelForward)
            .counts(2, Some(2))
            .expect(move |bed| {
                Ok(tcp(
                    &translated(bed, &unresolved, proto::TCP, 2, None)?,
                    flags,
                ))
            })
        })
        .collect()
}

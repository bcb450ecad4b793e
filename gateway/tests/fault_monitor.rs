//! The local fault monitor against a real kernel: a NIC in a private namespace, a witness in
//! another one behind a veth. It reports nothing while the link is up, XDP attached and the
//! witness answering; a silent witness, a dead link and a detached program each show up within a
//! few poll intervals and clear again. Needs root.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use aya::programs::{Xdp, XdpMode};
use gateway::{
    config::Monitor,
    daemon::faults::{self, Fault},
    datapath::netlink,
};
use gateway_common::programs;
use testbed_kit::Netns;
use tokio::sync::watch;

const WITNESS: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

/// Waits until the monitor reports exactly `want`; returns how long that took.
async fn until(rx: &mut watch::Receiver<Vec<Fault>>, want: &[Fault]) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), async {
        while rx.borrow_and_update().as_slice() != want {
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("faults stayed {:?}, wanted {want:?}", *rx.borrow()));
    start.elapsed()
}

#[test]
fn links_xdp_and_witness() {
    let ns = Netns::enter("gwfm").unwrap();
    let witness = Netns::unique("gwfw").unwrap();
    ns.ip("link add m0 type veth peer name w0").unwrap();
    ns.ip(&["link", "set", "w0", "netns", witness.name()])
        .unwrap();
    ns.ip("addr add 10.9.0.2/24 dev m0").unwrap();
    ns.ip("link set m0 up").unwrap();
    witness.ip("addr add 10.9.0.1/24 dev w0").unwrap();
    witness.ip("link set w0 up").unwrap();

    let mut ebpf = aya::Ebpf::load(gateway::datapath::ebpf_object::BYTES).unwrap();
    let pass: &mut Xdp = ebpf
        .program_mut(programs::PASS)
        .unwrap()
        .try_into()
        .unwrap();
    pass.load().unwrap();
    let link = pass.attach("m0", XdpMode::Skb).unwrap();

    // A current-thread runtime keeps every socket in this thread's namespace.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let nics = netlink::nics(&["m0".to_string()]).await.unwrap();
        let monitor = Monitor {
            witness: vec![WITNESS],
            witness_interval: Duration::from_millis(20),
            witness_misses: 3,
            link_interval: Duration::from_millis(20),
        };
        // Start from a fault, so the first healthy report is a change.
        let (tx, mut rx) = watch::channel(vec![Fault::LinkDown("start".into())]);
        let task = tokio::spawn(faults::run(monitor, nics, tx));
        until(&mut rx, &[]).await;

        witness.ip("addr del 10.9.0.1/24 dev w0").unwrap();
        let took = until(&mut rx, &[Fault::WitnessUnreachable(WITNESS)]).await;
        assert!(
            took < Duration::from_millis(500),
            "witness loss seen after {took:?}"
        );
        witness.ip("addr add 10.9.0.1/24 dev w0").unwrap();
        until(&mut rx, &[]).await;

        // The far end goes away: no carrier here, and the witness falls silent with it.
        witness.ip("link set w0 down").unwrap();
        let took = until(
            &mut rx,
            &[
                Fault::LinkDown("m0".into()),
                Fault::WitnessUnreachable(WITNESS),
            ],
        )
        .await;
        assert!(
            took < Duration::from_millis(500),
            "link loss seen after {took:?}"
        );
        witness.ip("link set w0 up").unwrap();
        until(&mut rx, &[]).await;

        let pass: &mut Xdp = ebpf
            .program_mut(programs::PASS)
            .unwrap()
            .try_into()
            .unwrap();
        pass.detach(link).unwrap();
        until(&mut rx, &[Fault::XdpDetached("m0".into())]).await;
        task.abort();
    });
}

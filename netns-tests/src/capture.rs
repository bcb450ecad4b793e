//! Packet captures in the testbed (tcpdump on one host's interface, written next to the
//! daemons' logs): the packets of a run whose failures the logs and tables do not explain,
//! such as a chaos run's broken connection (`chaos --capture`).
use crate::process::Process;
use crate::testbed::Testbed;
use anyhow::{bail, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// How many bytes of each packet are kept: the Ethernet, IP and TCP headers with options.
const SNAP_LEN: &str = "128";

/// Starts tcpdump on `iface` of `host`, keeping the packets `filter` selects in
/// `<testbed dir>/<name>.pcap` (with the link-layer header, so the MACs say which node
/// sent or got each), and waits until it listens. Stopping the process ends the capture;
/// each packet is written as it is seen, so what was caught before stays readable.
pub fn start(bed: &Testbed, host: &str, iface: &str, filter: &str, name: &str) -> Result<Process> {
    let file = bed.dir().join(format!("{name}.pcap"));
    let args = vec![
        "-i".to_owned(),
        iface.to_owned(),
        "-n".to_owned(),
        "-U".to_owned(),
        "-s".to_owned(),
        SNAP_LEN.to_owned(),
        "-w".to_owned(),
        file.to_string_lossy().into_owned(),
        filter.to_owned(),
    ];
    let mut process = bed.spawn(
        host,
        Path::new("tcpdump"),
        &args,
        &format!("{name}-tcpdump"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process.log_tail(5).contains("listening on") {
        if let Some(status) = process.try_status()? {
            bail!(
                "tcpdump on {host} {iface} exited ({status}): {}",
                process.log_tail(5)
            );
        }
        if Instant::now() > deadline {
            bail!("tcpdump on {host} {iface} not listening after 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(process)
}

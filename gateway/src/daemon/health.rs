//! Health checks of backends: one task per checked backend, TCP connect or HTTP GET with a
//! timeout, rise/fall hysteresis; a change rewrites that service's Maglev table (connections
//! already in `CONNS` keep their backend).
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::timeout,
};
use tracing::{info, warn};

use crate::{
    config::{Config, Health, HealthKind},
    datapath::worker::DatapathHandle,
};

/// One check: Ok when the backend answers as `health` wants.
pub async fn check(health: &Health, addr: SocketAddr) -> Result<()> {
    timeout(health.timeout, async {
        let mut stream = TcpStream::connect(addr).await.context("connect")?;
        if health.kind != HealthKind::Http {
            return Ok(());
        }
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: gateway-health\r\nConnection: close\r\n\r\n",
            health.path,
            addr.ip()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP response: {:?}", line.lines().next()))?;
        if !(200..400).contains(&code) {
            bail!("HTTP status {code}");
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out after {:?}", health.timeout))?
}

/// Rise/fall hysteresis of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// Current verdict.
    pub up: bool,
    streak: u32,
}

impl Hysteresis {
    /// Starts in state `up`.
    pub fn new(up: bool) -> Self {
        Self { up, streak: 0 }
    }

    /// Feeds one result; returns true when the verdict flipped.
    pub fn feed(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        if self.streak >= if ok { rise } else { fall } {
            self.up = ok;
            self.streak = 0;
            return true;
        }
        false
    }
}

/// Starts a checker for every backend of every checked service of `config`, each from the
/// verdict the datapath worker last published; a verdict that flips goes to the worker, which
/// rewrites the service's Maglev table.
pub fn spawn_all(config: &Config, datapath: &DatapathHandle, tasks: &mut JoinSet<()>) {
    let verdicts = datapath.view();
    for s in &config.services {
        if s.health.kind == HealthKind::None {
            continue;
        }
        for b in &s.backends {
            let key = (s.name.clone(), b.address, b.port);
            let up = verdicts.is_healthy(&key);
            let health = s.health.clone();
            let datapath = datapath.clone();
            tasks.spawn(async move {
                let addr = SocketAddr::from((key.1, key.2));
                let mut hysteresis = Hysteresis::new(up);
                let mut ticker = tokio::time::interval(health.interval);
                loop {
                    ticker.tick().await;
                    let result = check(&health, addr).await;
                    if hysteresis.feed(result.is_ok(), health.rise, health.fall) {
                        match &result {
                            Ok(()) => info!(service = %key.0, backend = %addr, "backend up"),
                            Err(e) => {
                                warn!(service = %key.0, backend = %addr, "backend down: {e:#}")
                            }
                        }
                        let (key, up) = (key.clone(), hysteresis.up);
                        datapath.submit(move |worker| worker.set_health(key, up));
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    fn health(kind: HealthKind) -> Health {
        Health {
            kind,
            path: "/health".into(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            rise: 2,
            fall: 2,
        }
    }

    /// A real HTTP server on 127.0.0.1 answering every request with `status`.
    async fn http_server(status: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_servers() {
        let ok = http_server("200 OK").await;
        let redirect = http_server("302 Found").await;
        let broken = http_server("503 Service Unavailable").await;
        assert!(check(&health(HealthKind::Tcp), ok).await.is_ok());
        assert!(check(&health(HealthKind::Http), ok).await.is_ok());
        assert!(check(&health(HealthKind::Http), redirect).await.is_ok());
        let e = check(&health(HealthKind::Http), broken).await.unwrap_err();
        assert!(e.to_string().contains("503"), "{e}");
        // A port nobody listens on: connection refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(check(&health(HealthKind::Tcp), closed).await.is_err());
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let started = std::time::Instant::now();
        let e = check(&health(HealthKind::Http), addr).await.unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn rise_and_fall() {
        let mut h = Hysteresis::new(true);
        assert!(!h.feed(false, 2, 3));
        assert!(!h.feed(false, 2, 3));
        assert!(h.feed(false, 2, 3));
        assert!(!h.up);
        assert!(!h.feed(true, 2, 3));
        assert!(!h.feed(false, 2, 3));
        assert!(!h.feed(true, 2, 3));
        assert!(h.feed(true, 2, 3));
        assert!(h.up);
    }
}

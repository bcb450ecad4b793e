//! The back-end server of the testbed: HTTP/1.1 with keep-alive whose body names the
//! back-end (`backend-2`), and a UDP echo that prefixes its name (`backend-2: <datagram>`);
//! the datagram `peer?` is answered with the address it came from (`backend-2: 10.0.9.1:20013`),
//! so a client sees the source port the gateway translated its flow to.
use anyhow::{Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Command line.
#[derive(Parser)]
struct Args {
    /// The name this server answers with.
    #[arg(long)]
    name: String,
    /// Address to serve HTTP on.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Address to serve the UDP echo on.
    #[arg(long)]
    udp: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = args.http {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        tasks.spawn(serve_http(listener, args.name.clone()));
    }
    if let Some(addr) = args.udp {
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        tasks.spawn(serve_udp(socket, args.name.clone()));
    }
    println!(
        "{} listening http={:?} udp={:?}",
        args.name, args.http, args.udp
    );
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

async fn serve_http(listener: TcpListener, name: String) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            // A client that goes away mid-request is not the server's problem.
            let _ = http_connection(stream, &name).await;
        });
    }
}

/// Answers every request on one connection until the client closes it or asks to
/// (`Connection: close`, or HTTP/1.0 without keep-alive, as health checkers send).
async fn http_connection(mut stream: TcpStream, name: &str) -> Result<()> {
    stream.set_nodelay(true)?;
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{name}",
        name.len()
    );
    let closing = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{name}",
        name.len()
    );
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut close = false;
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let http10 = head.lines().next().is_some_and(|l| l.ends_with("http/1.0"));
            close = head.contains("\r\nconnection: close")
                || (http10 && !head.contains("\r\nconnection: keep-alive"));
            out.extend_from_slice(if close { &closing } else { &response }.as_bytes());
            buf.drain(..end + 4);
            if close {
                break;
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        if close {
            return Ok(());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The datagram answered with its sender's address instead of an echo.
const PEER_QUESTION: &[u8] = b"peer?";

async fn serve_udp(socket: UdpSocket, name: String) -> Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        let mut reply = format!("{name}: ").into_bytes();
        if &buf[..n] == PEER_QUESTION {
            reply.extend_from_slice(peer.to_string().as_bytes());
        } else {
            reply.extend_from_slice(&buf[..n]);
        }
        socket.send_to(&reply, peer).await?;
    }
}

//! The TCP proxy `guardian chaos run` puts between the supervised services and the
//! broker (the broker's CHAOS listener advertises the proxy's address, so every
//! connection the clients open goes through it): added latency with jitter, and
//! partitions that cut the open connections and refuse new ones until healed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
struct State {
    latency_ms: AtomicU64,
    jitter_ms: AtomicU64,
    partitioned: AtomicBool,
    /// Bumped by a partition: connections of an older generation close.
    generation: AtomicU64,
    connections: AtomicU64,
}

/// A running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct Proxy {
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    pub async fn start(listen: &str, upstream: &str) -> Result<Proxy> {
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!("the chaos proxy cannot listen on {listen} (the address the broker's CHAOS listener advertises)")
        })?;
        let state = Arc::new(State::default());
        let accept = tokio::spawn(accept_loop(listener, upstream.to_string(), state.clone()));
        Ok(Proxy { state, accept })
    }

    /// Every chunk forwarded from now on waits `latency` ± `jitter`.
    pub fn set_delay(&self, latency: Duration, jitter: Duration) {
        self.state.jitter_ms.store(jitter.as_millis() as u64, Ordering::Release);
        self.state.latency_ms.store(latency.as_millis() as u64, Ordering::Release);
    }

    /// Cuts every open connection and refuses new ones (true), or heals (false).
    pub fn set_partitioned(&self, on: bool) {
        if on {
            self.state.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.state.partitioned.store(on, Ordering::Release);
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Acquire)
    }
}

async fn accept_loop(listener: TcpListener, upstream: String, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if state.partitioned.load(Ordering::Acquire) {
            drop(client);
            continue;
        }
        state.connections.fetch_add(1, Ordering::AcqRel);
        let (upstream, state) = (upstream.clone(), state.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else { return };
            let generation = state.generation.load(Ordering::Acquire);
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // Either direction ending (or a partition) closes both.
            tokio::select! {
                _ = pump(cr, sw, state.clone(), generation) => {}
                _ = pump(sr, cw, state, generation) => {}
            }
        });
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: Arc<State>, generation: u64) {
    let cut = || state.generation.load(Ordering::Acquire) != generation;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => n,
            _ = async { while !cut() { tokio::time::sleep(Duration::from_millis(50)).await } } => return,
        };
        let n = match n {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = state.latency_ms.load(Ordering::Acquire) as i64;
        if latency > 0 {
            let jitter = state.jitter_ms.load(Ordering::Acquire) as i64;
            let wait = latency + rand::rng().random_range(-jitter..=jitter);
            tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
        }
        if cut() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: &str) -> std::io::Result<Duration> {
        let mut s = TcpStream::connect(addr).await?;
        let start = std::time::Instant::now();
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await??;
        Ok(start.elapsed())
    }

    #[tokio::test]
    async fn delays_cuts_and_heals() {
        let upstream = echo_server().await;
        let listen = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let proxy = Proxy::start(&listen, &upstream).await.unwrap();
        assert!(round_trip(&listen).await.unwrap() < Duration::from_millis(100));
        proxy.set_delay(Duration::from_millis(100), Duration::ZERO);
        // Both directions wait: at least 200 ms there and back.
        assert!(round_trip(&listen).await.unwrap() >= Duration::from_millis(200));
        proxy.set_delay(Duration::ZERO, Duration::ZERO);
        let mut open = TcpStream::connect(&listen).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        proxy.set_partitioned(true);
        // The open connection is cut; a new one gets nothing back.
        let mut buf = [0u8; 1];
        let cut = tokio::time::timeout(Duration::from_secs(2), open.read(&mut buf)).await.unwrap();
        assert!(matches!(cut, Ok(0) | Err(_)), "{cut:?}");
        assert!(round_trip(&listen).await.is_err());
        proxy.set_partitioned(false);
        assert!(round_trip(&listen).await.is_ok());
        assert!(proxy.connections() >= 4);
    }
}

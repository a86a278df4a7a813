//! A TCP forwarder that can turn a link slow, silent or broken, as a real network does: every
//! byte is delayed by the same latency without limiting throughput (a chunk waits until its time,
//! the next is already read), a stall stops reading and writing without closing anything (the
//! link that accepts and then goes silent), and a drop closes every live connection at once.
//! The fault suite puts one on each worker's link; the end-to-end tests, in front of PostgreSQL.
//!
//! The forwarder holds the server's end of each connection, so it must also do what the server
//! does to clients that went away unheard (cut off, then gone): with a [`Keepalive`], it probes
//! its clients as the server would and closes what goes unanswered, the server's side with it.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
pub use genq_shared::db::Keepalive;
use socket2::{SockRef, TcpKeepalive};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Each direction's bytes arrive this much later.
    Delay(Duration),
    /// Nothing moves; connections stay open and new ones are accepted.
    Stall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    mode: Mode,
    /// Bumped to close every connection opened before.
    generation: u64,
}

pub struct Relay {
    address: SocketAddr,
    state: watch::Sender<State>,
    accepting: JoinHandle<()>,
}

impl Relay {
    /// Listens on `address` (port 0: a free one) and forwards each connection to `target`
    /// (`host:port`).
    pub async fn start(address: SocketAddr, target: String) -> anyhow::Result<Relay> {
        Self::start_probing(address, target, None).await
    }

    /// As [`Relay::start`], probing each client as `keepalive` says.
    pub async fn start_probing(
        address: SocketAddr,
        target: String,
        keepalive: Option<Keepalive>,
    ) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let address = listener.local_addr().context("the bound address")?;
        let (state, watching) = watch::channel(State {
            mode: Mode::Pass,
            generation: 0,
        });
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                if let Some(keepalive) = keepalive
                    && let Err(e) = probe(&client, keepalive)
                {
                    eprintln!("relay: cannot probe a client of {target}: {e}");
                }
                tokio::spawn(forward(client, target.clone(), watching.clone()));
            }
        });
        Ok(Relay {
            address,
            state,
            accepting,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.send_modify(|s| s.mode = mode);
    }

    pub fn drop_connections(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
        // Ends every forwarding task too.
        self.drop_connections();
    }
}

/// Probes `client` as a server with `keepalive` would, and gives it up as that server would.
fn probe(client: &TcpStream, keepalive: Keepalive) -> std::io::Result<()> {
    let probes = TcpKeepalive::new()
        .with_time(keepalive.idle)
        .with_interval(keepalive.interval)
        .with_retries(keepalive.count);
    let socket = SockRef::from(client);
    socket.set_tcp_keepalive(&probes)?;
    socket.set_tcp_user_timeout(Some(keepalive.gives_up_after()))
}

async fn forward(client: TcpStream, target: String, state: watch::Receiver<State>) {
    let born = state.borrow().generation;
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut dropped = state.clone();
    // Each direction runs until its reader sees the end, so a close passes through whole.
    let both = async {
        tokio::join!(
            pipe(client_read, server_write, state.clone()),
            pipe(server_read, client_write, state)
        )
    };
    tokio::select! {
        _ = both => {}
        _ = dropped.wait_for(|s| s.generation != born) => {}
    }
}

/// One direction: a reader that stamps each chunk with the time it arrived, a writer that sends
/// it once the mode's delay has passed since then. Both halves wait while stalled.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: watch::Receiver<State>) {
    let (chunks, mut arrived) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let mut reading = state.clone();
    let reader = async move {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            if reading.wait_for(|s| s.mode != Mode::Stall).await.is_err() {
                return;
            }
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if chunks
                        .send((Instant::now(), buffer[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let mut writing = state;
    let writer = async move {
        while let Some((at, chunk)) = arrived.recv().await {
            let Ok(now) = writing
                .wait_for(|s| s.mode != Mode::Stall)
                .await
                .map(|s| *s)
            else {
                return;
            };
            if let Mode::Delay(delay) = now.mode {
                tokio::time::sleep_until(at + delay).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // The writer drains what the reader read before it ended (an orderly close passes through).
    tokio::join!(reader, writer);
}

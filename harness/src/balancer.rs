//! A TCP load balancer in front of API replicas, as a cloud balancer or HAProxy in TCP mode with
//! `option redispatch` does: each new connection goes to the next replica in turn, and to the one
//! after it if that one refuses. A connection already made dies with its replica; the client
//! retries, as clients behind a balancer must.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// How long one replica may take to accept before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Balancer {
    address: SocketAddr,
    accepting: JoinHandle<()>,
}

impl Balancer {
    /// Listens on a free local port and spreads connections over `replicas`.
    pub async fn start(replicas: Vec<SocketAddr>) -> anyhow::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let replicas = Arc::new(replicas);
        let next = Arc::new(AtomicUsize::new(0));
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let first = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(forward(client, Arc::clone(&replicas), first));
            }
        });
        Ok(Balancer { address, accepting })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Connects to the replicas in turn from `first`, and forwards to the first that accepts. None
/// accepting closes the client's connection, as a balancer with no healthy backend does.
async fn forward(mut client: TcpStream, replicas: Arc<Vec<SocketAddr>>, first: usize) {
    for offset in 0..replicas.len() {
        let replica = replicas[(first + offset) % replicas.len()];
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(replica));
        if let Ok(Ok(mut server)) = connecting.await {
            let _ = server.set_nodelay(true);
            let _ = copy_bidirectional(&mut client, &mut server).await;
            return;
        }
    }
}

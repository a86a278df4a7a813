//! A TCP proxy in front of the real PostgreSQL or Redis, for one test's processes only: cutting it
//! makes the service unreachable to them (live connections dropped, new ones closed at once) while
//! the server itself, shared by every test, runs on.

use std::net::SocketAddr;

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

pub struct Proxy {
    address: SocketAddr,
    cut: watch::Sender<bool>,
    /// Connections closed at once because the proxy was cut.
    refused: watch::Receiver<usize>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free local port and forwards every connection to `target` (`host:port`).
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let address = listener.local_addr().expect("bound address");
        let (cut, cut_watch) = watch::channel(false);
        let (refusals, refused) = watch::channel(0);
        let target = target.to_owned();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *cut_watch.borrow() {
                    refusals.send_modify(|n| *n += 1);
                    continue; // dropped: the connection closes at once
                }
                tokio::spawn(forward(client, target.clone(), cut_watch.clone()));
            }
        });
        Proxy {
            address,
            cut,
            refused,
            accepting,
        }
    }

    /// `host:port` to give the test's processes instead of the service's.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The service becomes unreachable through the proxy.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Returns once `count` connections in all were closed at once because the proxy was cut.
    pub async fn refused(&self, count: usize) {
        let mut refused = self.refused.clone();
        refused
            .wait_for(|&n| n >= count)
            .await
            .expect("the proxy accepts until it is dropped");
    }

    /// The service is reachable again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        // Ends the forwarding tasks too.
        self.cut.send_replace(true);
    }
}

async fn forward(mut client: TcpStream, target: String, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&target).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// `host:port` of a `scheme://[user@]host:port[/...]` URL.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// `url` with its `host:port` replaced by the proxy's.
pub fn through(url: &str, proxy: &Proxy) -> String {
    url.replacen(host_port(url), &proxy.address().to_string(), 1)
}

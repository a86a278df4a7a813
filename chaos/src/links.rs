//! Each worker's (and API replica's) own network link: a network namespace joined to the host
//! by a veth pair, as a process on another machine is joined by a cable. PostgreSQL and Redis
//! listen on 127.0.0.1 only, so the host's end of the pair runs a forwarder to each
//! ([`genq_harness::relay`]).
//!
//! Partitions are real: `iptables` rules inside the namespace drop the worker's packets to
//! PostgreSQL, Redis or both, as a broken switch or a firewall would, so its connections hang
//! rather than close. Slow, stalled and cut connections are the forwarder's doing: this machine
//! kind's kernel has no `sch_netem`.

use std::{net::Ipv4Addr, process::Stdio, time::Duration};

use anyhow::{Context, ensure};
use tokio::process::Command;

use genq_harness::relay::{Keepalive, Mode, Relay};
use genq_shared::db::SERVER_KEEPALIVE;

/// The host ends of the links take 10.231.N.1, the namespaces' ends 10.231.N.2 (N from 1;
/// workers count from 1, API replicas from [`API_LINKS`]).
const SUBNET: [u8; 2] = [10, 231];
/// The first API replica's link number: workers take those below.
pub const API_LINKS: u8 = 101;

/// Redis's default `tcp-keepalive 300`: on Linux, probes every third of that, three of them.
const REDIS_KEEPALIVE: Keepalive = Keepalive {
    idle: Duration::from_secs(300),
    interval: Duration::from_secs(100),
    count: 3,
};

/// Which of the process's connections a partition drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Postgres,
    Redis,
    Both,
}

/// Runs `program args…` (as root: the caller checked); fails with its stderr if it fails.
async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    ensure!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

pub struct Link {
    pub namespace: String,
    host_veth: String,
    host_ip: Ipv4Addr,
    /// The namespace's own address, where a server inside it listens.
    pub inner_ip: Ipv4Addr,
    postgres: Relay,
    redis: Relay,
}

impl Link {
    /// Makes link `n` (from 1) under names starting with `prefix` (unique to this run, and short:
    /// interface names take 15 bytes), with forwarders to `postgres` and `redis` (`host:port`).
    pub async fn create(prefix: &str, n: u8, postgres: &str, redis: &str) -> anyhow::Result<Link> {
        let namespace = format!("{prefix}{n}");
        let (host_veth, inner_veth) = (format!("{prefix}{n}h"), format!("{prefix}{n}n"));
        let host_ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], n, 1);
        let inner_ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], n, 2);
        let (host_cidr, inner_cidr) = (format!("{host_ip}/30"), format!("{inner_ip}/30"));
        // Leftovers of a run that was killed before it could clean up.
        let _ = run("ip", &["netns", "del", &namespace]).await;
        let _ = run("ip", &["link", "del", &host_veth]).await;
        let steps: [&[&str]; 8] = [
            &["netns", "add", &namespace],
            &[
                "link",
                "add",
                &host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &inner_veth,
            ],
            &["link", "set", &inner_veth, "netns", &namespace],
            &["addr", "add", &host_cidr, "dev", &host_veth],
            &["link", "set", &host_veth, "up"],
            &[
                "-n",
                &namespace,
                "addr",
                "add",
                &inner_cidr,
                "dev",
                &inner_veth,
            ],
            &["-n", &namespace, "link", "set", &inner_veth, "up"],
            &["-n", &namespace, "link", "set", "lo", "up"],
        ];
        for step in steps {
            run("ip", step).await?;
        }
        // Each forwarder probes its clients as its server would: PostgreSQL as genq's sessions
        // ask it to, Redis as its default `tcp-keepalive 300` does.
        let relay = |port: u16, target: &str, keepalive: Keepalive| {
            Relay::start_probing((host_ip, port).into(), target.into(), Some(keepalive))
        };
        Ok(Link {
            postgres: relay(5432, postgres, SERVER_KEEPALIVE)
                .await
                .context("the PostgreSQL forwarder")?,
            redis: relay(6379, redis, REDIS_KEEPALIVE)
                .await
                .context("the Redis forwarder")?,
            namespace,
            host_veth,
            host_ip,
            inner_ip,
        })
    }

    /// The connection settings of the process inside: PostgreSQL and Redis through this link.
    pub fn env(&self, database_url: &str, redis_url: &str) -> Vec<(String, String)> {
        let through = |url: &str, relay: &Relay| {
            url.replacen(host_port(url), &relay.address().to_string(), 1)
        };
        vec![
            ("DATABASE_URL".into(), through(database_url, &self.postgres)),
            ("REDIS_URL".into(), through(redis_url, &self.redis)),
        ]
    }

    /// The command prefix that starts the worker inside the namespace.
    pub fn wrapper(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespace]
            .map(str::to_owned)
            .to_vec()
    }

    /// Drops every packet the namespace sends to what `cut` names, until [`Link::heal`].
    pub async fn partition(&self, cut: Cut) -> anyhow::Result<()> {
        self.rules("-A", cut).await
    }

    pub async fn heal(&self, cut: Cut) -> anyhow::Result<()> {
        self.rules("-D", cut).await
    }

    async fn rules(&self, action: &str, cut: Cut) -> anyhow::Result<()> {
        let ports: &[u16] = match cut {
            Cut::Postgres => &[5432],
            Cut::Redis => &[6379],
            Cut::Both => &[5432, 6379],
        };
        let host = self.host_ip.to_string();
        for port in ports {
            let port = port.to_string();
            let rule = [
                "netns",
                "exec",
                &self.namespace,
                "iptables",
                action,
                "OUTPUT",
                "-d",
                &host,
                "-p",
                "tcp",
                "--dport",
                &port,
                "-j",
                "DROP",
            ];
            run("ip", &rule).await?;
        }
        Ok(())
    }

    /// Both forwarders' behaviour, until set again.
    pub fn set_mode(&self, mode: Mode) {
        self.postgres.set_mode(mode);
        self.redis.set_mode(mode);
    }

    /// Closes every connection through the link at once; new ones go through.
    pub fn drop_connections(&self) {
        self.postgres.drop_connections();
        self.redis.drop_connections();
    }
}

impl Drop for Link {
    /// Removes the namespace and the veth pair, however the run ends.
    fn drop(&mut self) {
        for args in [
            ["netns", "del", &self.namespace],
            ["link", "del", &self.host_veth],
        ] {
            let _ = std::process::Command::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `host:port` of a `scheme://[user@]host:port[/...]` URL.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

//! Where webhooks may go. A `callback_url` is an address the API itself will call, so by default
//! it must be public: loopback, private, link-local and other special addresses are refused
//! (`GENQ_WEBHOOK_ALLOW_PRIVATE` lifts that), at submission for an address written in the URL,
//! and at each delivery for what the host name resolves to then (a name can point elsewhere
//! later). Redirects are not followed, so a receiver cannot send the call on elsewhere either.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// Why a destination is refused, whatever the reason: whether it does not resolve, resolves to a
/// private address, or is one.
pub const REFUSED_DESTINATION: &str =
    "not a public address the API may call (GENQ_WEBHOOK_ALLOW_PRIVATE allows private ones)";

/// Longest `callback_url` accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Checks a `callback_url` as submitted; the message says what is wrong with it.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("callback_url is longer than {MAX_URL_LEN} bytes"));
    }
    let url = Url::parse(raw).map_err(|e| format!("callback_url is not a URL: {e}"))?;
    if url.as_str().len() > MAX_URL_LEN {
        return Err(format!(
            "callback_url is longer than {MAX_URL_LEN} bytes once encoded"
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "callback_url must be http or https, not {}",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // It would be stored and shown with the job.
        return Err("callback_url must not carry credentials".into());
    }
    let Some(host) = url.host() else {
        return Err("callback_url has no host".into());
    };
    if !allow_private {
        let refused = match host {
            url::Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.');
                name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost")
            }
        };
        if refused {
            return Err(format!("callback_url {host}: {REFUSED_DESTINATION}"));
        }
    }
    Ok(url)
}

/// Whether the API may call this address without `GENQ_WEBHOOK_ALLOW_PRIVATE`: a unicast address
/// that IANA's special-purpose registries do not mark as not globally reachable. Addresses that
/// carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by that one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(ip),
        },
    }
}

/// IANA's IPv4 Special-Purpose Address Registry, the blocks that are not globally reachable
/// (or, deprecated, have no answer), plus multicast and the reserved 240/4 it does not list.
const NOT_GLOBAL_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space (CGNAT)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link local
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments (but .9 and .10, below)
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast, deprecated
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, and the limited broadcast address
];
/// The registry's globally reachable exceptions inside those blocks: PCP and TURN anycast.
const GLOBAL_V4: &[Ipv4Addr] = &[Ipv4Addr::new(192, 0, 0, 9), Ipv4Addr::new(192, 0, 0, 10)];

/// IANA's IPv6 Special-Purpose Address Registry, likewise; the space outside global unicast
/// (2000::/3) is refused as a whole, which covers loopback, ULA, link-local, the deprecated
/// site-local, multicast and the discard and dummy prefixes.
const NOT_GLOBAL_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments, Teredo
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16), // segment routing (SRv6) SIDs
];
/// Globally reachable blocks inside 2001::/23: TURN and DNS-SD anycast, AMT, AS112, ORCHIDv2,
/// drone remote ID.
const GLOBAL_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 1), 128),
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 2), 128),
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 3), 128),
    (Ipv6Addr::new(0x2001, 3, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x2001, 4, 0x112, 0, 0, 0, 0, 0), 48),
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28),
    (Ipv6Addr::new(0x2001, 0x30, 0, 0, 0, 0, 0, 0), 28),
];

fn in_block<const N: usize>(ip: [u8; N], (network, prefix): ([u8; N], u8)) -> bool {
    let bits = |bytes: [u8; N]| bytes.iter().fold(0u128, |n, &b| (n << 8) | u128::from(b));
    let width = 8 * N as u32;
    let shift = width - u32::from(prefix);
    shift >= width || bits(ip) >> shift == bits(network) >> shift
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    GLOBAL_V4.contains(&ip)
        || !NOT_GLOBAL_V4
            .iter()
            .any(|&(net, prefix)| in_block(ip.octets(), (net.octets(), prefix)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    // Addresses that carry an IPv4 address reach it: judge that one. (IPv4-compatible ones,
    // `::a.b.c.d`, are deprecated and, outside 2000::/3, refused below.)
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded(segments[6], segments[7])); // NAT64, 64:ff9b::/96
    }
    if segments[0] == 0x2002 {
        return is_public_v4(embedded(segments[1], segments[2])); // 6to4
    }
    let octets = ip.octets();
    let within = |blocks: &[(Ipv6Addr, u8)]| {
        blocks
            .iter()
            .any(|&(net, prefix)| in_block(octets, (net.octets(), prefix)))
    };
    let global_unicast = segments[0] & 0xe000 == 0x2000;
    global_unicast && (within(GLOBAL_V6) || !within(NOT_GLOBAL_V6))
}

/// Resolves host names as the system does, then drops non-public addresses unless allowed; a
/// name left with none fails the attempt with a reason.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly {
    pub allow_private: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // One answer for a name that does not resolve and one that resolves only to refused
            // addresses: the difference would tell a tenant which internal names exist.
            let refused = || -> Box<dyn std::error::Error + Send + Sync> {
                format!("{host}: {REFUSED_DESTINATION}").into()
            };
            let found = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| refused())?;
            let allowed: Vec<SocketAddr> = found
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(refused());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        check_url(url, false).unwrap_err()
    }

    #[test]
    fn odd_urls_are_refused_with_the_reason() {
        assert!(refused("ftp://example.com/x").contains("http or https"));
        assert!(refused("https://user:pw@example.com/x").contains("credentials"));
        assert!(refused("not a url").contains("not a URL"));
        assert!(check_url("https://hooks.example.com/genq?x=1", false).is_ok());
        let with_nul = check_url("https://hooks.example.com/a\0b", false).unwrap();
        assert_eq!(with_nul.as_str(), "https://hooks.example.com/a%00b");
    }

    #[test]
    fn every_address_iana_marks_not_globally_reachable_is_refused_with_one_text() {
        // The first address, one inside and the last of each block in IANA's IPv4 and IPv6
        // special-purpose registries that is not globally reachable, and their disguises.
        let refused_hosts = [
            "0.0.0.0",
            "0.255.255.255",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.8",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "[::]",
            "[::1]",
            "[::ffff:192.168.0.1]",
            "[::ffff:198.18.0.1]",
            "[64:ff9b::a9fe:a9fe]",
            "[64:ff9b:1::1]",
            "[100::1]",
            "[100:0:0:1::1]",
            "[::10.0.0.1]",
            "[::93.184.216.34]", // IPv4-compatible: deprecated
            "[2001::1]",
            "[2001:2::1]",
            "[2001:10::1]",
            "[2001:db8::1]",
            "[2002:c0a8:0101::1]",
            "[2002:c612::1]",
            "[3fff::1]",
            "[5f00::1]",
            "[fc00::1]",
            "[fd12:3456::1]",
            "[fe80::1]",
            "[fec0::1]",
            "[ff02::1]",
            "LocalHost.",
            "a.localhost",
        ];
        for host in refused_hosts {
            let url = format!("http://{host}/hook");
            // The host as the URL parser writes it (`[::ffff:c0a8:1]`).
            let written = Url::parse(&url).unwrap().host().unwrap().to_string();
            assert_eq!(
                refused(&url),
                format!("callback_url {written}: {REFUSED_DESTINATION}"),
                "{host}"
            );
        }
    }

    #[test]
    fn globally_reachable_addresses_are_accepted() {
        for host in [
            "93.184.216.34",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.0.9",
            "192.0.0.10",
            "192.31.196.1",
            "192.52.193.1",
            "192.175.48.1",
            "198.20.0.1",
            "223.255.255.254",
            "[2606:4700::1111]",
            "[2001:1::1]",
            "[2001:3::1]",
            "[2001:4:112::1]",
            "[2001:20::1]",
            "[2620:4f:8000::1]",
            "[64:ff9b::5db8:d822]",
            "[2002:5db8:d822::1]",
            "[::ffff:1.1.1.1]",
        ] {
            assert!(
                check_url(&format!("http://{host}/hook"), false).is_ok(),
                "{host}"
            );
        }
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
    }

    /// What an attempt's error says, for the resolver's refusal of `host`.
    async fn resolver_refusal(host: &str) -> String {
        let name: Name = host.parse().unwrap();
        let resolver = PublicOnly {
            allow_private: false,
        };
        match resolver.resolve(name).await {
            Ok(_) => panic!("{host} was allowed"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_and_one_that_resolves_privately_read_the_same() {
        let private = resolver_refusal("localhost").await;
        let unknown = resolver_refusal("genq-no-such-name.invalid").await;

        assert_eq!(private, format!("localhost: {REFUSED_DESTINATION}"));
        assert_eq!(
            unknown,
            format!("genq-no-such-name.invalid: {REFUSED_DESTINATION}")
        );
    }
}

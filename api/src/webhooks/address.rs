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
            return Err(format!(
                "callback_url points to a private or loopback address ({host}); \
                 GENQ_WEBHOOK_ALLOW_PRIVATE allows that"
            ));
        }
    }
    Ok(url)
}

/// Whether the API may call this address without `GENQ_WEBHOOK_ALLOW_PRIVATE`: not loopback,
/// private, link-local, shared (CGNAT), unspecified, broadcast, multicast or documentation.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    // Addresses that carry an IPv4 address reach it: judge that one.
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_public_v4(embedded(segments[6], segments[7])); // IPv4-compatible, ::a.b.c.d
    }
    if segments[..2] == [0x64, 0xff9b] {
        return is_public_v4(embedded(segments[6], segments[7])); // NAT64, 64:ff9b::/96 and /48
    }
    if segments[0] == 0x2002 {
        return is_public_v4(embedded(segments[1], segments[2])); // 6to4
    }
    let first = segments[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && segments[1] == 0x0db8)
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
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if allowed.is_empty() {
                let reason = if found.is_empty() {
                    format!("{host} does not resolve")
                } else {
                    format!("{host} resolves only to private or loopback addresses")
                };
                return Err(reason.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_odd_urls_are_refused_with_the_reason() {
        let refused = |url: &str| check_url(url, false).unwrap_err();

        assert!(refused("http://127.0.0.1:9000/hook").contains("private or loopback"));
        assert!(refused("http://10.1.2.3/hook").contains("private or loopback"));
        assert!(refused("http://[::1]/hook").contains("private or loopback"));
        assert!(refused("http://[::ffff:192.168.0.1]/hook").contains("private or loopback"));
        assert!(refused("http://169.254.169.254/latest").contains("private or loopback"));
        assert!(refused("http://100.64.0.1/").contains("private or loopback"));
        assert!(refused("http://[64:ff9b::a9fe:a9fe]/").contains("private or loopback"));
        assert!(refused("http://[::10.0.0.1]/").contains("private or loopback"));
        assert!(refused("http://[2002:c0a8:0101::1]/").contains("private or loopback"));
        assert!(refused("http://LocalHost./x").contains("private or loopback"));
        assert!(refused("ftp://example.com/x").contains("http or https"));
        assert!(refused("https://user:pw@example.com/x").contains("credentials"));
        assert!(refused("not a url").contains("not a URL"));
        assert!(check_url("https://hooks.example.com/genq?x=1", false).is_ok());
        assert!(check_url("http://93.184.216.34/hook", false).is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
        let with_nul = check_url("https://hooks.example.com/a\0b", false).unwrap();
        assert_eq!(with_nul.as_str(), "https://hooks.example.com/a%00b");
    }
}

//! The one SSRF guard: every outbound HTTP call whose target a caller can steer (a webhook
//! recipient's URL today; external data sources next) is made with [`guarded_client`].
//!
//! - **Resolved addresses are checked**: the client's resolver returns only public addresses
//!   ([`is_forbidden`]), so the connection goes to an address that was checked (no rebinding
//!   window between a check and the connect). Literal IPs in a URL skip the resolver, so
//!   [`check_url`] checks them before sending.
//! - **No proxy**: a proxy would resolve the name itself, past the guarded resolver.
//!   reqwest honours `HTTPS_PROXY` / `ALL_PROXY` from the environment unless told not to; the
//!   guarded client never does. An explicitly configured egress proxy is the deployment's
//!   choice (and then that proxy must enforce the same rules).
//! - **No redirects**: a 3xx to `http://127.0.0.1/…` is an answer, never followed.
//!
//! Loopback can be allowed explicitly (tests, `make up`); nothing else can.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

/// Whether a target address may be called: only public unicast addresses (and loopback when
/// `allow_loopback`). IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64,
/// 6to4) are judged by that IPv4 address; Teredo and deprecated site-local are refused.
pub fn is_forbidden(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_forbidden(v4, allow_loopback),
        IpAddr::V6(v6) => v6_forbidden(v6, allow_loopback),
    }
}

fn v4_forbidden(v4: Ipv4Addr, allow_loopback: bool) -> bool {
    let o = v4.octets();
    (v4.is_loopback() && !allow_loopback)
        || v4.is_private()
        || v4.is_link_local() // 169.254.0.0/16, cloud metadata included
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || (o[0] == 100 && (64..=127).contains(&o[1])) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0.0/24
        || (o[0] == 198 && (18..=19).contains(&o[1])) // benchmarking 198.18.0.0/15
        || o[0] >= 240 // reserved 240.0.0.0/4
        || o[0] == 0
}

fn v6_forbidden(v6: Ipv6Addr, allow_loopback: bool) -> bool {
    let s = v6.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if v6.is_loopback() {
        return !allow_loopback;
    }
    if v6.is_unspecified() {
        return true;
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated): the IPv4 address.
    if let Some(v4) = v6.to_ipv4_mapped() {
        return v4_forbidden(v4, allow_loopback);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return v4_forbidden(embedded(s[6], s[7]), allow_loopback);
    }
    // NAT64 64:ff9b::/96 reaches the IPv4 address in its last 32 bits; 64:ff9b:1::/48 is the
    // local-use NAT64 prefix (the network's own translator): refused.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_forbidden(embedded(s[6], s[7]), allow_loopback);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return true;
    }
    // 6to4 2002::/16 tunnels to the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return v4_forbidden(embedded(s[1], s[2]), allow_loopback);
    }
    // Teredo 2001::/32 (an obfuscated IPv4 address inside), documentation 2001:db8::/32.
    (s[0] == 0x2001 && (s[1] == 0 || s[1] == 0x0db8))
        || s[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || v6.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated, still routed in places)
}

type Lookup = dyn Fn(
        String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>,
    > + Send
    + Sync;

/// What [`GuardedResolver`] says when a name resolves only to refused addresses; a
/// connection error carrying it is a refused target, not an unreachable one.
pub const REFUSED_MARK: &str = "resolves only to internal addresses; refused";

/// A resolver that only ever returns addresses that may be called.
pub struct GuardedResolver {
    allow_loopback: bool,
    lookup: Arc<Lookup>,
}

impl GuardedResolver {
    pub fn new(allow_loopback: bool) -> Self {
        Self::with_lookup(allow_loopback, |host| {
            Box::pin(
                async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) },
            )
        })
    }

    /// With a stand-in for DNS (tests: a hostname that resolves to a private address).
    pub fn with_lookup(
        allow_loopback: bool,
        lookup: impl Fn(
            String,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>,
        > + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            allow_loopback,
            lookup: Arc::new(lookup),
        }
    }

    /// The callable addresses of `host`, or an error naming why there are none.
    pub async fn allowed(&self, host: &str) -> Result<Vec<SocketAddr>, String> {
        let all = (self.lookup)(host.to_owned())
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let ok: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| !is_forbidden(a.ip(), self.allow_loopback))
            .collect();
        if ok.is_empty() {
            Err(format!("{host} {REFUSED_MARK}"))
        } else {
            Ok(ok)
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (lookup, allow_loopback) = (self.lookup.clone(), self.allow_loopback);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let guard = GuardedResolver {
                allow_loopback,
                lookup,
            };
            match guard.allowed(&host).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// How a guarded client is built.
#[derive(Debug, Clone, Default)]
pub struct GuardConfig {
    /// Allow 127.0.0.0/8 and ::1 (local development and tests only).
    pub allow_loopback: bool,
    /// An explicitly configured egress proxy (`http://proxy:3128`): the only proxy ever used
    /// (the environment's `HTTPS_PROXY` / `ALL_PROXY` never are). The proxy resolves names
    /// itself, so it must enforce the same rules.
    pub proxy_url: Option<String>,
}

/// A client for caller-steered targets: the guarded resolver, no proxy but an explicit one,
/// no redirects, `timeout` per request.
pub fn guarded_client(cfg: &GuardConfig, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .dns_resolver(Arc::new(GuardedResolver::new(cfg.allow_loopback)))
        .redirect(reqwest::redirect::Policy::none());
    let builder = match cfg.proxy_url.as_deref().filter(|p| !p.is_empty()) {
        Some(proxy) => builder.proxy(
            reqwest::Proxy::all(proxy)
                .map_err(|e| anyhow::anyhow!("the egress proxy `{proxy}`: {e}"))?,
        ),
        None => builder.no_proxy(),
    };
    Ok(builder.build()?)
}

/// Why `url` may not be called before anything is resolved: not http(s), no host, or a
/// literal IP address that is refused (literals never reach the resolver).
pub fn check_url(url: &reqwest::Url, allow_loopback: bool) -> Result<(), UrlRefusal> {
    if !matches!(url.scheme(), "https" | "http") {
        return Err(UrlRefusal::Invalid("only http(s) targets"));
    }
    let ip = match url.host() {
        None => return Err(UrlRefusal::Invalid("no host")),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return Ok(()),
    };
    if is_forbidden(ip, allow_loopback) {
        Err(UrlRefusal::Internal(ip))
    } else {
        Ok(())
    }
}

/// Why [`check_url`] refused a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlRefusal {
    /// Not a URL the guard can call at all.
    Invalid(&'static str),
    /// A literal internal address.
    Internal(IpAddr),
}

/// Whether a request error is the guard refusing the target (rather than the target being
/// unreachable).
pub fn is_refusal(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains(REFUSED_MARK) {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_forbidden_and_public_ones_allowed() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
            // IPv4-compatible (deprecated) forms of internal addresses.
            "::10.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            // NAT64 to internal addresses, and the local-use NAT64 prefix.
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
            // 6to4 around internal addresses.
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            // Teredo, site-local, documentation.
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert!(
                is_forbidden(ip.parse().unwrap(), false),
                "{ip} must be refused"
            );
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            // The same forms around a public address are fine.
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(
                !is_forbidden(ip.parse().unwrap(), false),
                "{ip} must be allowed"
            );
        }
        assert!(
            !is_forbidden("127.0.0.1".parse().unwrap(), true),
            "loopback when allow-listed"
        );
        assert!(
            is_forbidden("10.0.0.1".parse().unwrap(), true),
            "the allow-list is loopback only"
        );
        assert!(is_forbidden("::ffff:127.0.0.1".parse().unwrap(), false));
    }

    #[tokio::test]
    async fn a_hostname_resolving_to_a_private_address_is_refused_without_connecting() {
        let resolver = GuardedResolver::with_lookup(false, |host| {
            Box::pin(async move {
                Ok(match host.as_str() {
                    "internal.example" => vec!["10.0.0.5:0".parse().unwrap()],
                    "metadata.example" => vec!["169.254.169.254:0".parse().unwrap()],
                    "nat64.example" => vec!["[64:ff9b::a00:5]:0".parse().unwrap()],
                    "mixed.example" => vec![
                        "10.0.0.5:0".parse().unwrap(),
                        "93.184.216.34:0".parse().unwrap(),
                    ],
                    _ => vec![],
                })
            })
        });
        assert!(resolver.allowed("internal.example").await.is_err());
        assert!(resolver.allowed("metadata.example").await.is_err());
        assert!(resolver.allowed("nat64.example").await.is_err());
        assert_eq!(
            resolver.allowed("mixed.example").await.unwrap(),
            vec!["93.184.216.34:0".parse().unwrap()]
        );
    }

    #[test]
    fn literal_internal_urls_are_refused_before_resolving() {
        let check = |u: &str| check_url(&reqwest::Url::parse(u).unwrap(), false);
        assert_eq!(
            check("http://[::ffff:a00:1]/x"),
            Err(UrlRefusal::Internal("::ffff:10.0.0.1".parse().unwrap()))
        );
        assert!(matches!(
            check("http://[64:ff9b::a9fe:a9fe]/latest/meta-data"),
            Err(UrlRefusal::Internal(_))
        ));
        assert!(matches!(
            check("ftp://example.com/"),
            Err(UrlRefusal::Invalid(_))
        ));
        assert_eq!(check("https://example.com/hook"), Ok(()));
    }

    /// With `HTTPS_PROXY` in the environment, a plain client would hand the name to the proxy
    /// (which resolves it past the guard); the guarded one connects itself, so the resolver
    /// refuses the internal name. Checked against a proxy that records whether it was used.
    #[tokio::test]
    async fn the_environments_proxy_is_never_used() {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let used = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = used.clone();
        tokio::spawn(async move {
            while let Ok((_stream, _)) = proxy.accept().await {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let client = temp_env_proxy(&format!("http://{proxy_addr}"), || {
            guarded_client(&GuardConfig::default(), Duration::from_secs(2)).unwrap()
        });
        let err = client
            .get("http://localhost:9/")
            .send()
            .await
            .expect_err("localhost is refused");
        assert!(is_refusal(&err), "{err:?}");
        assert!(
            !used.load(std::sync::atomic::Ordering::SeqCst),
            "the proxy from the environment was used"
        );
    }

    /// Builds with `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` set (reqwest reads them when the
    /// client is built), then restores them.
    #[allow(unsafe_code)]
    fn temp_env_proxy<T>(proxy: &str, f: impl FnOnce() -> T) -> T {
        const VARS: [&str; 3] = ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"];
        let before: Vec<Option<String>> = VARS.iter().map(|v| std::env::var(v).ok()).collect();
        // SAFETY: nextest runs each test in a process of its own, so no other thread reads
        // the environment meanwhile; the variables are restored before this returns.
        unsafe {
            for v in VARS {
                std::env::set_var(v, proxy);
            }
        }
        let out = f();
        unsafe {
            for (v, old) in VARS.iter().zip(before) {
                match old {
                    Some(old) => std::env::set_var(v, old),
                    None => std::env::remove_var(v),
                }
            }
        }
        out
    }
}

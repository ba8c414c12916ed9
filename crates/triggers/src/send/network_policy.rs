//! Where webhooks may go: a guard against server-side request forgery.
//!
//! A trigger URL is user input, and the deliverer runs inside the data plane, so without a
//! guard a config could make it POST to a cloud metadata service (169.254.169.254), an
//! admin port on loopback, or a database on the private network. The guard checks the
//! addresses a request actually connects to, not the name in the URL: IP-literal hosts
//! directly, hostnames in a DNS resolver that drops refused addresses (so `localhost`, or
//! a public name pointing at 10.0.0.1, is refused too), and every redirect hop again.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use url::{Host, Url};

/// Most redirects followed for one attempt (only when a trigger sets `followRedirects`).
pub const MAX_REDIRECTS: usize = 5;

/// Which non-public destinations a deliverer may connect to.
///
/// The default refuses loopback, private and link-local addresses: what a multi-tenant
/// data plane wants. Reserved addresses (unspecified `0.0.0.0` and `::`, multicast,
/// broadcast, documentation and benchmarking ranges) are refused whatever the policy:
/// no webhook receiver lives there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkPolicy {
    /// Allow 127.0.0.0/8 and ::1 (tests, demos, a receiver beside the shard).
    pub allow_loopback: bool,
    /// Allow private networks: 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade
    /// NAT) and fc00::/7 (unique local).
    pub allow_private: bool,
    /// Allow link-local addresses: 169.254/16 (where cloud metadata services answer) and
    /// fe80::/10.
    pub allow_link_local: bool,
}

impl NetworkPolicy {
    /// Public destinations only: the default.
    pub const PUBLIC_ONLY: Self = Self {
        allow_loopback: false,
        allow_private: false,
        allow_link_local: false,
    };

    /// Public destinations and loopback: for tests and demos that deliver to a receiver
    /// on 127.0.0.1 (or a receiver beside the shard).
    pub const ALLOW_LOOPBACK: Self = Self::PUBLIC_ONLY.with_loopback(true);

    /// The same, allowing loopback (127.0.0.0/8, ::1) or not.
    pub const fn with_loopback(mut self, allow: bool) -> Self {
        self.allow_loopback = allow;
        self
    }

    /// The same, allowing private networks or not.
    pub const fn with_private(mut self, allow: bool) -> Self {
        self.allow_private = allow;
        self
    }

    /// The same, allowing link-local addresses (cloud metadata services) or not.
    pub const fn with_link_local(mut self, allow: bool) -> Self {
        self.allow_link_local = allow;
        self
    }

    /// Whether a connection to `address` is allowed; the refused class otherwise.
    pub fn check(&self, address: IpAddr) -> Result<(), AddressClass> {
        let class = AddressClass::of(address);
        let allowed = match class {
            AddressClass::Public => true,
            AddressClass::Loopback => self.allow_loopback,
            AddressClass::Private => self.allow_private,
            AddressClass::LinkLocal => self.allow_link_local,
            AddressClass::Reserved => false,
        };
        if allowed { Ok(()) } else { Err(class) }
    }

    /// Checks the host of a URL when it is an IP literal (which no resolver sees).
    /// Hostnames pass here; the resolver checks what they resolve to.
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        let address = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        self.check(address).map_err(|class| Refusal {
            host: url.host_str().unwrap_or_default().to_string(),
            address,
            class,
        })
    }
}

/// The kind of destination an IP address is, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Routable on the internet.
    Public,
    /// This host.
    Loopback,
    /// A private network.
    Private,
    /// A link-local network (including cloud metadata services).
    LinkLocal,
    /// Not a destination at all: unspecified, multicast, broadcast, documentation.
    Reserved,
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Reserved => "reserved",
        })
    }
}

impl AddressClass {
    /// Classifies an address. IPv6 addresses that reach an IPv4 one (mapped
    /// `::ffff:a.b.c.d`, SIIT `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and the
    /// local-use `64:ff9b:1::/48`, 6to4 `2002:AABB:CCDD::/48`, and ISATAP's non-public
    /// ones) are classified as the IPv4 address they embed; Teredo (`2001::/32`), whose
    /// real destination is hidden, is reserved.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Self {
        let [a, b, c, _] = ip.octets();
        match (a, b, c) {
            (127, _, _) => Self::Loopback,
            (10, _, _) | (192, 168, _) => Self::Private,
            (172, 16..=31, _) | (100, 64..=127, _) => Self::Private,
            (169, 254, _) => Self::LinkLocal,
            // 0/8 ("this network"; connecting to 0.0.0.0 reaches this host on Linux),
            // 192.0.0/24 (protocol assignments), documentation, benchmarking, multicast,
            // 240/4 (reserved) and the broadcast address.
            (0, _, _) | (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => {
                Self::Reserved
            }
            (198, 18..=19, _) | (224..=255, _, _) => Self::Reserved,
            _ => Self::Public,
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Self {
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        let segments = ip.segments();
        let v4 = |hi: u16, lo: u16| {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            Ipv4Addr::new(a, b, c, d)
        };
        let last32 = v4(segments[6], segments[7]);
        match segments {
            // NAT64 well-known prefix 64:ff9b::/96 and SIIT (IPv4-translated) ::ffff:0:0/96:
            // the IPv4 address is the last 32 bits.
            [0x64, 0xff9b, 0, 0, 0, 0, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => {
                return Self::of_v4(last32);
            }
            // NAT64 local-use 64:ff9b:1::/48: an operator's prefix inside it is usually a
            // /96 (the IPv4 address in the last 32 bits, bits 48..88 zero), but a /48
            // puts it in bits 48..88 around the reserved octet (RFC 6052): when those
            // bits are set, the stricter of the two applies.
            [0x64, 0xff9b, 1, s3, s4, s5, ..] => {
                let [a, b] = s3.to_be_bytes();
                let [_, c] = s4.to_be_bytes();
                let [d, _] = s5.to_be_bytes();
                let at_48 = Ipv4Addr::new(a, b, c, d);
                return match Self::of_v4(last32) {
                    Self::Public if !at_48.is_unspecified() => Self::of_v4(at_48),
                    class => class,
                };
            }
            // 6to4 2002::/16: the IPv4 address of the relay is bits 16..48.
            [0x2002, hi, lo, ..] => return Self::of_v4(v4(hi, lo)),
            // Teredo 2001::/32 tunnels to a client whose address is obfuscated and a
            // server's that is not the destination: no webhook receiver lives there.
            [0x2001, 0, ..] => return Self::Reserved,
            // ISATAP (interface id `0:5efe` or `200:5efe`, RFC 5214): the site's router
            // tunnels to the IPv4 address in the last 32 bits, so a non-public one is
            // refused as that address would be.
            [_, _, _, _, iid, 0x5efe, ..] if iid & !0x0300 == 0 => match Self::of_v4(last32) {
                Self::Public => {}
                class => return class,
            },
            _ => {}
        }
        if ip == Ipv6Addr::LOCALHOST {
            return Self::Loopback;
        }
        match segments[0] {
            // fc00::/7 unique local, and fec0::/10 (deprecated site-local).
            0xfc00..=0xfdff | 0xfec0..=0xfeff => Self::Private,
            0xfe80..=0xfebf => Self::LinkLocal,
            // ff00::/8 multicast; 2001:db8::/32 documentation.
            0xff00..=0xffff => Self::Reserved,
            0x2001 if segments[1] == 0x0db8 => Self::Reserved,
            // ::/96 holds the unspecified address and deprecated IPv4-compatible ones.
            0 if segments[..6] == [0; 6] => Self::Reserved,
            _ => Self::Public,
        }
    }
}

/// A destination the network policy refuses: a permanent failure, since the same config
/// would be refused again. Names the host and address, never a path or credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination {host} is refused by the network policy: {address} is a {class} address")]
pub struct Refusal {
    /// The host of the URL (or redirect target) that was refused.
    pub host: String,
    /// The address it is, or resolved to.
    pub address: IpAddr,
    /// Why it is refused.
    pub class: AddressClass,
}

/// The system resolver, with refused addresses dropped from every answer. A name with
/// only refused addresses fails with a [`Refusal`]; one with some allowed addresses
/// connects only to those.
#[derive(Debug)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: NetworkPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check(addr.ip()) {
                    Ok(()) => true,
                    Err(class) => {
                        refused.get_or_insert((addr.ip(), class));
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some((address, class))) => Err(Box::new(Refusal {
                    host,
                    address,
                    class,
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// A redirect that may not be followed although `followRedirects` is set. Only 307 and
/// 308 are followed (a 301/302/303 would turn the POST into a GET), to http(s) targets,
/// each checked against the policy (hostnames by the resolver when the hop connects).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// More than [`MAX_REDIRECTS`] hops.
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooMany,
    /// The target is not http or https.
    #[error("redirect to a {0:?} URL")]
    Scheme(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        let table = [
            ("8.8.8.8", AddressClass::Public),
            ("1.1.1.1", AddressClass::Public),
            ("172.15.255.255", AddressClass::Public),
            ("172.32.0.1", AddressClass::Public),
            ("100.63.255.255", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::Reserved),
            ("0.1.2.3", AddressClass::Reserved),
            ("192.0.2.1", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("224.0.0.1", AddressClass::Reserved),
            ("255.255.255.255", AddressClass::Reserved),
            ("2606:4700::1111", AddressClass::Public),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Reserved),
            ("::127.0.0.1", AddressClass::Reserved),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::ffff:8.8.8.8", AddressClass::Public),
            ("64:ff9b::169.254.169.254", AddressClass::LinkLocal),
            ("fd00::1", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("ff02::1", AddressClass::Reserved),
            ("2001:db8::1", AddressClass::Reserved),
        ];
        for (address, class) in table {
            let ip: IpAddr = address.parse().expect("an address");
            assert_eq!(AddressClass::of(ip), class, "{address}");
        }
    }

    /// 6to4, NAT64 (well-known and local-use), SIIT and ISATAP addresses reach the IPv4
    /// address they embed, so they are that address's class; Teredo is refused outright.
    #[test]
    fn ipv6_transition_addresses_are_classified_by_the_ipv4_they_embed() {
        let table = [
            // 6to4: 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD.
            ("2002:7f00:1::1", AddressClass::Loopback),
            ("2002:a9fe:a9fe::", AddressClass::LinkLocal),
            ("2002:0a00:0001:1::1", AddressClass::Private),
            ("2002:c0a8:0101::", AddressClass::Private),
            ("2002:0808:0808::1", AddressClass::Public),
            // NAT64 local-use 64:ff9b:1::/48: the IPv4 address is the last 32 bits.
            ("64:ff9b:1::a9fe:a9fe", AddressClass::LinkLocal),
            ("64:ff9b:1:ffff::7f00:1", AddressClass::Loopback),
            ("64:ff9b:1::808:808", AddressClass::Public),
            ("64:ff9b:1:a9fe:a9:fe00:808:808", AddressClass::LinkLocal),
            ("64:ff9b::10.0.0.1", AddressClass::Private),
            // SIIT (IPv4-translated) ::ffff:0:a.b.c.d.
            ("::ffff:0:169.254.169.254", AddressClass::LinkLocal),
            ("::ffff:0:127.0.0.1", AddressClass::Loopback),
            ("::ffff:0:8.8.8.8", AddressClass::Public),
            // Teredo 2001::/32 hides its client address; it is never a webhook receiver.
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                AddressClass::Reserved,
            ),
            ("2001::1", AddressClass::Reserved),
            // ISATAP interface ids reach the IPv4 address in their last 32 bits.
            ("2606:4700:1:2:0:5efe:10.0.0.1", AddressClass::Private),
            (
                "2606:4700:1:2:200:5efe:169.254.169.254",
                AddressClass::LinkLocal,
            ),
            ("2606:4700:1:2:200:5efe:8.8.8.8", AddressClass::Public),
            // Neighbours of those ranges stay public.
            ("2001:4860::8888", AddressClass::Public),
            ("2003::1", AddressClass::Public),
            ("64:ff9b:2::1", AddressClass::Public),
        ];
        for (address, class) in table {
            let ip: IpAddr = address.parse().expect("an address");
            assert_eq!(AddressClass::of(ip), class, "{address}");
        }
        let policy = NetworkPolicy::default();
        let url = Url::parse("http://[2002:a9fe:a9fe::]/latest/meta-data").expect("a URL");
        assert_eq!(
            policy.check_url(&url).map_err(|r| r.class),
            Err(AddressClass::LinkLocal)
        );
    }

    #[test]
    fn policies_allow_what_they_say() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        let default = NetworkPolicy::default();
        assert_eq!(default, NetworkPolicy::PUBLIC_ONLY);
        assert_eq!(default.check(ip("8.8.8.8")), Ok(()));
        assert_eq!(default.check(ip("127.0.0.1")), Err(AddressClass::Loopback));
        assert_eq!(default.check(ip("10.0.0.1")), Err(AddressClass::Private));
        assert_eq!(
            default.check(ip("169.254.169.254")),
            Err(AddressClass::LinkLocal)
        );

        let loopback = NetworkPolicy::ALLOW_LOOPBACK;
        assert_eq!(loopback.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(loopback.check(ip("::1")), Ok(()));
        assert_eq!(loopback.check(ip("10.0.0.1")), Err(AddressClass::Private));

        let everything = NetworkPolicy {
            allow_loopback: true,
            allow_private: true,
            allow_link_local: true,
        };
        assert_eq!(everything.check(ip("192.168.0.1")), Ok(()));
        assert_eq!(everything.check(ip("fe80::1")), Ok(()));
        assert_eq!(everything.check(ip("0.0.0.0")), Err(AddressClass::Reserved));
    }

    #[test]
    fn ip_literal_urls_are_checked_and_hostnames_left_to_the_resolver() {
        let policy = NetworkPolicy::default();
        let url = |s: &str| Url::parse(s).expect("a URL");
        let refusal = policy
            .check_url(&url(
                "http://user:pw@169.254.169.254/latest/meta-data?token=x",
            ))
            .expect_err("metadata service");
        assert_eq!(refusal.host, "169.254.169.254");
        let text = refusal.to_string();
        assert!(!text.contains("latest") && !text.contains("pw") && !text.contains("token"));
        // The WHATWG parser normalises odd spellings of 127.0.0.1 into an IPv4 host.
        assert!(policy.check_url(&url("http://2130706433/")).is_err());
        assert!(policy.check_url(&url("http://0x7f.1/")).is_err());
        assert!(policy.check_url(&url("http://[::ffff:7f00:1]/")).is_err());
        assert!(
            policy
                .check_url(&url("https://hooks.example.com/x"))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_unless_loopback_is_allowed() {
        let name: Name = "localhost".parse().expect("a name");
        let resolver = GuardedResolver {
            policy: NetworkPolicy::default(),
        };
        let err = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved under the default policy"),
            Err(err) => err,
        };
        let refusal = err.downcast_ref::<Refusal>().expect("a refusal");
        assert_eq!(refusal.class, AddressClass::Loopback);
        assert_eq!(refusal.host, "localhost");

        let name: Name = "localhost".parse().expect("a name");
        let addrs: Vec<SocketAddr> = GuardedResolver {
            policy: NetworkPolicy::ALLOW_LOOPBACK,
        }
        .resolve(name)
        .await
        .expect("allowed")
        .collect();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
            "{addrs:?}"
        );
    }
}

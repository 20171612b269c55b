//! IP prefixes (CIDR) as operators type them.

use std::{fmt, net::IpAddr, str::FromStr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// The prefix length of a single address of `addr`'s family.
pub fn host_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// An address a router can route to this host: not loopback, link-local,
/// multicast or unspecified.
pub fn is_global_unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !(v.is_loopback() || v.is_link_local() || v.is_multicast() || v.is_unspecified()),
        IpAddr::V6(v) => !(v.is_loopback() || v.is_unicast_link_local() || v.is_multicast() || v.is_unspecified()),
    }
}

impl Prefix {
    /// The prefix with host bits cleared.
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let addr = match addr {
            IpAddr::V4(a) => {
                let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) };
                IpAddr::V6((u128::from(a) & m).into())
            }
        };
        Prefix { addr, len }
    }

    pub fn host(addr: IpAddr) -> Self {
        Prefix { addr, len: host_len(addr) }
    }

    /// A single address (/32, /128), not a network.
    pub fn is_host(&self) -> bool {
        self.len == host_len(self.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Prefix::new(ip, self.len).addr == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("{s:?} is not an IP address or CIDR prefix"))?;
        let max = host_len(addr);
        let len = match l {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        // An IPv4-mapped IPv6 prefix (::ffff:a.b.c.d) never matches: the
        // datapath keys IPv4 packets by their IPv4 address. Refused for the
        // CLI, control requests and the config alike (they all parse here).
        if let IpAddr::V6(v6) = addr {
            if len >= 96 && v6.segments()[..6] == [0, 0, 0, 0, 0, 0xffff] {
                let v4 = std::net::Ipv4Addr::from(u32::from_be_bytes(v6.octets()[12..].try_into().expect("4 bytes")));
                return Err(format!(
                    "{s:?} is an IPv4-mapped IPv6 prefix, which no packet matches: write the IPv4 prefix {v4}/{}",
                    len - 96
                ));
            }
        }
        Ok(Prefix::new(addr, len))
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_prefixes_are_refused_with_the_ipv4_form() {
        let e = "::ffff:10.77.0.2/128".parse::<Prefix>().unwrap_err();
        assert!(e.contains("IPv4-mapped") && e.contains("10.77.0.2/32"), "{e}");
        let e = "::ffff:10.77.0.0/120".parse::<Prefix>().unwrap_err();
        assert!(e.contains("10.77.0.0/24"), "{e}");
        assert!("::ffff:10.0.0.1".parse::<Prefix>().is_err());
        // IPv6 prefixes around the mapped range stay valid.
        assert!("::/0".parse::<Prefix>().is_ok());
        assert!("::fffe:10.0.0.1/128".parse::<Prefix>().is_ok());
        assert!("2001:db8::/32".parse::<Prefix>().is_ok());
        // The control protocol and the config parse through the same path.
        assert!(serde_json::from_str::<Prefix>("\"::ffff:1.2.3.4/128\"").is_err());
    }

    #[test]
    fn parse_and_normalise() {
        let p: Prefix = "10.1.2.3/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.2.0/24");
        assert!(p.contains("10.1.2.200".parse().unwrap()));
        assert!(!p.contains("10.1.3.1".parse().unwrap()));
        assert_eq!("192.0.2.7".parse::<Prefix>().unwrap().len, 32);
        assert_eq!("2001:db8::1/32".parse::<Prefix>().unwrap().to_string(), "2001:db8::/32");
        assert!("10.0.0.0/33".parse::<Prefix>().unwrap_err().contains("0..=32"));
        assert!("bogus".parse::<Prefix>().is_err());
        assert!(!p.contains("::1".parse().unwrap()));
    }
}

//! Value types of the configuration files that are more than a JSON scalar: IP prefixes,
//! port ranges, IP protocols, MAC addresses and fwmark matches. Each parses from the
//! spelling a user writes, rejects what is ambiguous with a hint, and describes itself in
//! the JSON Schema.

use std::{
    borrow::Cow,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A value in a configuration file that does not parse; the text says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// An IPv4 or IPv6 prefix such as `10.1.0.0/24` or `fd01::/64`.
///
/// A bare address means a host prefix (`/32` or `/128`). Host bits set below the prefix
/// length (`10.0.0.1/24`) are rejected rather than silently cleared: such a prefix is
/// usually a typo for either the network or a host, and the error says which network it
/// would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix of `len` bits at `addr`; fails when `len` is too long for the family or
    /// when `addr` has bits set beyond `len`.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, InvalidValue> {
        let max = Self::max_len(Family::of(addr));
        if len > max {
            return Err(InvalidValue(format!(
                "prefix length /{len} is longer than {max} bits, the most an {} address has",
                Family::of(addr)
            )));
        }
        let network = Self::mask_addr(addr, len);
        if network != addr {
            return Err(InvalidValue(format!(
                "{addr}/{len} has host bits set; write the network {network}/{len}, or {addr}/{max} for the single host"
            )));
        }
        Ok(Prefix { addr, len })
    }

    /// The network address (host bits are zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is a default route prefix (`0.0.0.0/0`, `::/0`), matching every
    /// address of its family.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }

    /// Whether `ip` lies in this prefix. An address of the other family never does.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && Self::mask_addr(ip, self.len) == self.addr
    }

    fn max_len(family: Family) -> u8 {
        match family {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }

    /// `addr` with every bit after the first `len` cleared (`len` within the family's width).
    fn mask_addr(addr: IpAddr, len: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl FromStr for Prefix {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            InvalidValue(format!(
                "invalid prefix {s:?}: {why}; write an address and a length such as 10.1.0.0/24 or fd01::/64"
            ))
        };
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an ip address"))?;
        let len = match len {
            None => Self::max_len(Family::of(addr)),
            Some(len) => {
                if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the length after / is not a number"));
                }
                len.parse::<u8>().unwrap_or(u8::MAX)
            }
        };
        Prefix::new(addr, len).map_err(|e| InvalidValue(format!("invalid prefix {s:?}: {e}")))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Prefix {
    fn schema_name() -> Cow<'static, str> {
        "Prefix".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IPv4 or IPv6 prefix, address/length, with no host bits set; a bare address is a host prefix.",
            "examples": ["10.1.0.0/24", "fd01::/64", "192.0.2.7"]
        })
    }
}

/// An inclusive range of TCP/UDP/SCTP ports: `80` or `"1024-65535"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// The ports `first..=last`; fails when the range is reversed.
    pub fn new(first: u16, last: u16) -> Result<Self, InvalidValue> {
        if first > last {
            return Err(InvalidValue(format!(
                "port range {first}-{last} is reversed; write the low port first: {last}-{first}"
            )));
        }
        Ok(PortRange { first, last })
    }

    /// A single port.
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// The lowest port in the range.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The highest port in the range.
    pub fn last(&self) -> u16 {
        self.last
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| {
                InvalidValue(format!(
                    "invalid port range {s:?}: {p:?} is not a port 0-65535; write a port such as 443 or a range such as \"1024-65535\""
                ))
            })
        };
        match s.split_once('-') {
            Some((a, b)) => PortRange::new(port(a)?, port(b)?),
            None => Ok(PortRange::single(port(s)?)),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port 0-65535 or a range such as \"1024-65535\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                u16::try_from(v)
                    .map(PortRange::single)
                    .map_err(|_| E::custom(format!("port {v} is out of range; ports are 0-65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("port {v} is negative; ports are 0-65535")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for PortRange {
    fn schema_name() -> Cow<'static, str> {
        "PortRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A port, or an inclusive range of ports written \"low-high\".",
            "oneOf": [
                { "type": "integer", "minimum": 0, "maximum": 65535 },
                { "type": "string", "pattern": "^[0-9]{1,5}-[0-9]{1,5}$" }
            ],
            "examples": [443, "1024-65535"]
        })
    }
}

/// IP protocol names a configuration may use instead of the number.
const PROTOCOL_NAMES: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("sctp", 132),
];

/// An IP protocol (IPv4 protocol / IPv6 next header): a number 0-255 or a name such as
/// `"tcp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const ICMPV6: Protocol = Protocol(58);
    pub const SCTP: Protocol = Protocol(132);

    /// Whether packets of this protocol carry source and destination ports.
    pub fn has_ports(&self) -> bool {
        matches!(*self, Self::TCP | Self::UDP | Self::SCTP)
    }

    /// The protocol's name, when it has one here.
    pub fn name(&self) -> Option<&'static str> {
        PROTOCOL_NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
    }
}

impl FromStr for Protocol {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<u8>() {
            return Ok(Protocol(n));
        }
        PROTOCOL_NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, n)| Protocol(*n))
            .ok_or_else(|| {
                let names: Vec<&str> = PROTOCOL_NAMES.iter().map(|(name, _)| *name).collect();
                InvalidValue(format!(
                    "unknown ip protocol {s:?}; write a number 0-255 or one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u8(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ip protocol number 0-255 or a name such as \"tcp\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v).map(Protocol).map_err(|_| {
                    E::custom(format!(
                        "ip protocol {v} is out of range; protocols are 0-255"
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("ip protocol {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for Protocol {
    fn schema_name() -> Cow<'static, str> {
        "Protocol".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = PROTOCOL_NAMES.iter().map(|(name, _)| *name).collect();
        json_schema!({
            "description": "An IP protocol (IPv6 next header): a number or a name.",
            "oneOf": [
                { "type": "integer", "minimum": 0, "maximum": 255 },
                { "type": "string", "enum": names }
            ]
        })
    }
}

/// An Ethernet MAC address, written `02:00:5e:00:53:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            InvalidValue(format!(
                "invalid mac address {s:?}; write six hex bytes separated by colons, such as 02:00:5e:00:53:01"
            ))
        };
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for MacAddr {
    fn schema_name() -> Cow<'static, str> {
        "MacAddr".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An Ethernet MAC address.",
            "pattern": "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$",
            "examples": ["02:00:5e:00:53:01"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_contain() {
        let p: Prefix = "10.1.0.0/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.0.0/24");
        assert!(p.contains("10.1.0.255".parse().unwrap()));
        assert!(!p.contains("10.1.1.0".parse().unwrap()));
        assert!(!p.contains("::a01:0".parse().unwrap()), "other family");
        let host: Prefix = "192.0.2.7".parse().unwrap();
        assert_eq!(host.prefix_len(), 32);
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.6".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.is_default());
        assert!(all.contains("255.255.255.255".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let v6: Prefix = "fd01:0::/64".parse().unwrap();
        assert_eq!(v6.to_string(), "fd01::/64", "written in canonical form");
        assert!(v6.contains("fd01::ffff:1".parse().unwrap()));
        assert!(!v6.contains("fd01:0:0:1::1".parse().unwrap()));
        let v6all: Prefix = "::/0".parse().unwrap();
        assert!(v6all.contains("fd03::2".parse().unwrap()));
        let v6host: Prefix = "fd02::2/128".parse().unwrap();
        assert!(v6host.contains("fd02::2".parse().unwrap()));
        assert!(!v6host.contains("fd02::3".parse().unwrap()));
    }

    #[test]
    fn bad_prefixes_are_rejected_with_a_hint() {
        let err = "10.0.0.1/33".parse::<Prefix>().unwrap_err().to_string();
        assert!(err.contains("/33 is longer than 32 bits"), "{err}");
        let err = "10.0.0.1/24".parse::<Prefix>().unwrap_err().to_string();
        assert!(
            err.contains("host bits set")
                && err.contains("10.0.0.0/24")
                && err.contains("10.0.0.1/32"),
            "{err}"
        );
        let err = "fd01::1/64".parse::<Prefix>().unwrap_err().to_string();
        assert!(err.contains("fd01::/64"), "{err}");
        for bad in [
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/-1",
            "",
            "fd01::/129",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "1000-2000".parse().unwrap();
        assert!(r.contains(1000) && r.contains(2000) && !r.contains(999) && !r.contains(2001));
        assert_eq!(r.to_string(), "1000-2000");
        let err = "2000-1000".parse::<PortRange>().unwrap_err().to_string();
        assert!(
            err.contains("reversed") && err.contains("1000-2000"),
            "{err}"
        );
        assert_eq!(
            serde_json::from_str::<PortRange>("53").unwrap(),
            PortRange::single(53)
        );
        assert!(serde_json::from_str::<PortRange>("65536").is_err());
        assert!(serde_json::from_str::<PortRange>("-1").is_err());
        assert!(serde_json::from_str::<PortRange>("\"1-x\"").is_err());
        assert_eq!(serde_json::to_string(&PortRange::single(53)).unwrap(), "53");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"1000-2000\"");
    }

    #[test]
    fn protocols_by_name_or_number() {
        assert_eq!(
            serde_json::from_str::<Protocol>("\"tcp\"").unwrap(),
            Protocol::TCP
        );
        assert_eq!(
            serde_json::from_str::<Protocol>("\"UDP\"").unwrap(),
            Protocol::UDP
        );
        assert_eq!(
            serde_json::from_str::<Protocol>("58").unwrap(),
            Protocol::ICMPV6
        );
        assert_eq!(
            serde_json::from_str::<Protocol>("\"89\"").unwrap(),
            Protocol(89)
        );
        assert!(serde_json::from_str::<Protocol>("256").is_err());
        let err = serde_json::from_str::<Protocol>("\"tpc\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown ip protocol \"tpc\""), "{err}");
        assert_eq!(serde_json::to_string(&Protocol(6)).unwrap(), "\"tcp\"");
        assert_eq!(serde_json::to_string(&Protocol(89)).unwrap(), "89");
        assert!(Protocol::TCP.has_ports() && Protocol::SCTP.has_ports());
        assert!(!Protocol::ICMP.has_ports());
    }

    #[test]
    fn mac_addresses() {
        let mac: MacAddr = "02:00:5E:00:53:01".parse().unwrap();
        assert_eq!(mac.0, [2, 0, 0x5e, 0, 0x53, 1]);
        assert_eq!(mac.to_string(), "02:00:5e:00:53:01");
        for bad in [
            "02:00:5e:00:53",
            "02:00:5e:00:53:01:02",
            "2:00:5e:00:53:01",
            "zz:00:5e:00:53:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} should not parse");
        }
    }
}

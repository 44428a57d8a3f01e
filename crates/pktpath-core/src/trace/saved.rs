//! Saved traces: the JSON Lines `pktpath trace --output json` wrote, read back into
//! [`Event`]s (`pktpath trace --read FILE`), and the trace's filters applied to them in user
//! space, as the kernel applied them to a live trace.

use std::{
    collections::HashSet,
    io::BufRead,
    net::IpAddr,
    path::{Path, PathBuf},
};

use pktpath_common::{
    filter::{FilterProgram, KEY_ADDR_V4, KEY_ADDR_V6, KEY_IP, KEY_PORTS, PacketKey, eval},
    net::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
    route::{action_name, outcome_name},
    trace::Hook,
};
use serde::{Deserialize, Deserializer, de::Error as _};

use super::event::{Event, SCHEMA_VERSION, TC_HOOK, XDP_HOOK};

/// Why a saved trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: not an event pktpath trace --output json writes: {source}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error(
        "{}:{line}: schema_version {found} is newer than this pktpath reads ({SCHEMA_VERSION}); read it with the pktpath that wrote it",
        path.display()
    )]
    Newer {
        path: PathBuf,
        line: usize,
        found: u64,
    },
}

/// The events of a saved trace, in file order, and the lost count its `--summary` line
/// recorded (a trace saved without `--summary` does not say).
#[derive(Debug, Default)]
pub struct SavedTrace {
    pub events: Vec<Event>,
    pub lost: Option<u64>,
}

impl SavedTrace {
    /// Reads `path` (`-` for standard input). Blank lines are skipped; a
    /// `{"summary": ...}` line gives [`SavedTrace::lost`].
    pub fn read(path: &Path) -> Result<Self, ReadError> {
        let open = |source| ReadError::Open {
            path: path.to_owned(),
            source,
        };
        if path == Path::new("-") {
            Self::from_reader(std::io::stdin().lock(), path)
        } else {
            let file = std::fs::File::open(path).map_err(open)?;
            Self::from_reader(std::io::BufReader::new(file), path)
        }
    }

    /// Reads the lines of `input`; `path` names it in errors.
    pub fn from_reader(input: impl BufRead, path: &Path) -> Result<Self, ReadError> {
        let mut saved = Self::default();
        for (i, line) in input.lines().enumerate() {
            let line = line.map_err(|source| ReadError::Open {
                path: path.to_owned(),
                source,
            })?;
            let bad = |source| ReadError::Line {
                path: path.to_owned(),
                line: i + 1,
                source,
            };
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&line).map_err(bad)?;
            if let Some(summary) = value.get("summary") {
                saved.lost = summary.get("lost").and_then(serde_json::Value::as_u64);
                continue;
            }
            let version = value.get("schema_version").and_then(|v| v.as_u64());
            if let Some(found) = version.filter(|v| *v > u64::from(SCHEMA_VERSION)) {
                return Err(ReadError::Newer {
                    path: path.to_owned(),
                    line: i + 1,
                    found,
                });
            }
            saved.events.push(Event::deserialize(value).map_err(bad)?);
        }
        Ok(saved)
    }
}

/// The filters of `pktpath trace` applied to saved events: the expression (on the headers
/// an event shows), `--netns`, `--iface`, `--mark`, and tracking.
#[derive(Debug, Default)]
pub struct SavedFilter {
    /// The compiled filter expression, if any.
    pub program: Option<FilterProgram>,
    /// A namespace name or inode number.
    pub netns: Option<String>,
    /// An interface name.
    pub iface: Option<String>,
    pub mark: Option<u32>,
    /// Judge each event by the expression alone (`--no-track`).
    pub no_track: bool,
    /// Packets the expression matched once (tracking follows them until freed).
    tracked: HashSet<u64>,
}

impl SavedFilter {
    /// The filter expression `program` (none: every event) with tracking unless `no_track`;
    /// the other filters off.
    pub fn new(program: Option<FilterProgram>, no_track: bool) -> Self {
        Self {
            program,
            no_track,
            ..Self::default()
        }
    }

    /// Whether the live trace would have reported `ev`: the other filters pass, and the
    /// expression matches it, or (tracking) matched an earlier event of the same packet.
    /// Routing lookups that joined no packet's journey are left out under an expression,
    /// as the live trace leaves them out.
    pub fn wants(&mut self, ev: &Event) -> bool {
        let netns_ok = self.netns.as_deref().is_none_or(|n| {
            ev.netns_name.as_deref() == Some(n) || n.parse::<u32>().ok() == Some(ev.netns)
        });
        let iface_ok = self
            .iface
            .as_deref()
            .is_none_or(|i| ev.ifname.as_str() == i);
        let mark_ok = self.mark.is_none_or(|m| ev.mark == m);
        if !(netns_ok && iface_ok && mark_ok) {
            return false;
        }
        let Some(program) = &self.program else {
            return true;
        };
        if super::EventBuilder::is_unjudged_lookup(ev) {
            return false;
        }
        let ends = Hook::from_name(ev.hook).is_some_and(Hook::ends_skb);
        let pass = if eval(program, &key_of(ev)) {
            if !self.no_track && !ends {
                self.tracked.insert(ev.packet_id);
            }
            true
        } else {
            !self.no_track && self.tracked.contains(&ev.packet_id)
        };
        if ends {
            self.tracked.remove(&ev.packet_id);
        }
        pass
    }
}

/// What the filter expression can test of an event: the headers it shows. An event names
/// its IP protocol only for those `headers::ip_proto_name` names (TCP, UDP, ICMP, ICMPv6
/// and the tunnels' GRE, IPIP and IPv6 in IP), so `ip proto N` of another protocol does
/// not match a saved event, and fragments are not told apart.
pub fn key_of(ev: &Event) -> PacketKey {
    let mut key = PacketKey::default();
    let addr = |a: &Option<super::name::Name>| a.as_deref().and_then(|t| t.parse::<IpAddr>().ok());
    let (src, dst) = (addr(&ev.src), addr(&ev.dst));
    let v6 = matches!(src.or(dst), Some(IpAddr::V6(_)));
    key.ethertype = match ev.proto.as_ref() {
        "arp" => ETH_P_ARP,
        p if p.starts_with("0x") => u16::from_str_radix(&p[2..], 16).unwrap_or(0),
        _ if v6 || ev.proto == "icmp6" || ev.proto == "ipv6" => ETH_P_IPV6,
        _ => ETH_P_IP,
    };
    for (have, out) in [(src, &mut key.src), (dst, &mut key.dst)] {
        match have {
            Some(IpAddr::V4(a)) => *out = a.to_ipv6_mapped().octets(),
            Some(IpAddr::V6(a)) => *out = a.octets(),
            None => {}
        }
    }
    if src.is_some() || dst.is_some() {
        key.flags |= if v6 { KEY_ADDR_V6 } else { KEY_ADDR_V4 };
    }
    if key.ethertype == ETH_P_IP || key.ethertype == ETH_P_IPV6 {
        key.flags |= KEY_IP;
        let (named, v6) = (ev.proto.as_ref(), key.ethertype == ETH_P_IPV6);
        key.ip_proto = (0..=u8::MAX)
            .find(|&p| super::headers::ip_proto_name(p, v6) == Some(named))
            .unwrap_or(0);
    }
    if let (Some(s), Some(d)) = (ev.sport, ev.dport) {
        (key.sport, key.dport) = (s, d);
        key.flags |= KEY_PORTS;
    }
    key
}

/// `hook`: one of the names this build writes.
pub(super) fn hook<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    match Hook::from_name(&name) {
        Some(h) => Ok(h.name()),
        None if name == TC_HOOK => Ok(TC_HOOK),
        None if name == XDP_HOOK => Ok(XDP_HOOK),
        None => Err(D::Error::custom(format!("unknown hook `{name}`"))),
    }
}

/// `tc.action`: a name [`action_name`] gives.
pub(super) fn action<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(
        d,
        (0..=u8::MAX)
            .map(|a| action_name(1, a))
            .chain([action_name(0, 0)]),
    )
}

/// `tc.outcome`: a name [`outcome_name`] gives.
pub(super) fn outcome<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(d, (0..=u8::MAX).map(outcome_name))
}

/// The one of `names` the next string is.
fn one_of<'de, D: Deserializer<'de>>(
    d: D,
    mut names: impl Iterator<Item = &'static str>,
) -> Result<&'static str, D::Error> {
    let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    names
        .find(|n| *n == name)
        .ok_or_else(|| D::Error::custom(format!("`{name}` is not a name this pktpath writes")))
}

/// `skb`: `0x` and hex digits.
pub(super) fn hex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    text.strip_prefix("0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| D::Error::custom(format!("skb `{text}` is not 0x and hex digits")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::filter::compile_filter;

    fn event(packet_id: u64, hook: Hook, src: &str, dst: &str) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            packet_id,
            hook: hook.name(),
            ifname: "eth0".into(),
            netns: 7,
            proto: "udp".into(),
            src: Some(src.into()),
            dst: Some(dst.into()),
            sport: Some(4000),
            dport: Some(53),
            ..Event::default()
        }
    }

    fn lines(events: &[Event]) -> String {
        let mut out = Vec::new();
        for ev in events {
            ev.write_json(&mut out);
            out.push(b'\n');
        }
        String::from_utf8(out).unwrap()
    }

    fn read(text: &str) -> Result<SavedTrace, ReadError> {
        SavedTrace::from_reader(text.as_bytes(), Path::new("t.jsonl"))
    }

    /// A packet DNATed on its way: its later events no longer show the address the filter
    /// names; tracking reports them until the packet is freed, `--no-track` does not.
    #[test]
    fn tracking_follows_a_matched_packet_until_freed() {
        let journey = [
            event(1, Hook::NetifReceiveSkb, "10.0.1.2", "10.0.1.100"),
            event(1, Hook::NetDevStartXmit, "10.0.1.2", "10.0.2.2"),
            event(1, Hook::ConsumeSkb, "10.0.1.2", "10.0.2.2"),
            event(2, Hook::NetifReceiveSkb, "10.0.1.3", "10.0.2.2"),
        ];
        let saved = read(&lines(&journey)).unwrap();
        assert_eq!(saved.events, journey);
        let program = compile_filter("dst host 10.0.1.100").unwrap();
        let mut tracking = SavedFilter {
            program: Some(program),
            ..SavedFilter::default()
        };
        let kept: Vec<bool> = journey.iter().map(|e| tracking.wants(e)).collect();
        assert_eq!(kept, [true, true, true, false]);
        let mut plain = SavedFilter {
            program: Some(program),
            no_track: true,
            ..SavedFilter::default()
        };
        let kept: Vec<bool> = journey.iter().map(|e| plain.wants(e)).collect();
        assert_eq!(kept, [true, false, false, false]);
    }

    #[test]
    fn the_expression_judges_the_headers_an_event_shows() {
        let ev = event(1, Hook::NetDevXmit, "fd00::1", "fd00::2");
        for (expr, want) in [
            ("udp and dst port 53", true),
            ("tcp", false),
            ("ip6 and src host fd00::1", true),
            ("ip", false),
            ("portrange 1-52", false),
            ("src port 4000", true),
        ] {
            let mut f = SavedFilter {
                program: Some(compile_filter(expr).unwrap()),
                no_track: true,
                ..SavedFilter::default()
            };
            assert_eq!(f.wants(&ev), want, "{expr}");
        }
        let mut by_iface = SavedFilter {
            iface: Some("eth1".to_owned()),
            ..SavedFilter::default()
        };
        assert!(!by_iface.wants(&ev));
        let mut by_netns = SavedFilter {
            netns: Some("7".to_owned()),
            ..SavedFilter::default()
        };
        assert!(by_netns.wants(&ev));
    }

    #[test]
    fn a_summary_line_gives_the_lost_count() {
        let text = lines(&[event(1, Hook::NetifRx, "10.0.0.1", "10.0.0.2")])
            + "{\"summary\":{\"events\":1,\"lost\":3}}\n\n";
        let saved = read(&text).unwrap();
        assert_eq!((saved.events.len(), saved.lost), (1, Some(3)));
        assert_eq!(read(&lines(&saved.events)).unwrap().lost, None);
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let good = lines(&[event(1, Hook::NetifRx, "10.0.0.1", "10.0.0.2")]);
        let e = read(&format!("{good}not json\n")).unwrap_err().to_string();
        assert!(e.starts_with("t.jsonl:2: not an event"), "{e}");
        let unknown = good.replace("netif_rx", "netif_rx_ni");
        let e = read(&unknown).unwrap_err().to_string();
        assert!(
            e.contains("t.jsonl:1:") && e.contains("unknown hook `netif_rx_ni`"),
            "{e}"
        );
        let newer = good.replace(
            &format!("\"schema_version\":{SCHEMA_VERSION}"),
            "\"schema_version\":99",
        );
        let e = read(&newer).unwrap_err().to_string();
        assert!(e.contains("t.jsonl:1: schema_version 99 is newer"), "{e}");
    }
}

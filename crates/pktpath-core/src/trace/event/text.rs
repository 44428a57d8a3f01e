//! The text form of [`Event`]: one line per event, tracepkt style, and the short forms of
//! endpoints, routing tables and durations other text output shares.

use super::Event;
use crate::trace::{
    headers::{self, Headers},
    name::Name,
};

/// An address and port as text shows them: `10.0.0.1:53`, `[fd00::1]:53`, the address
/// alone without a port, `?` without an address.
pub fn endpoint(addr: &Option<Name>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".into(),
    }
}

impl Event {
    /// The event as one line of text, tracepkt style: time (seconds since `t0_ns`), netns
    /// (inode and name), interface, hook, packet, length, journey and time since its
    /// previous hop, and the drop reason and location.
    pub fn to_text(&self, t0_ns: u64) -> String {
        let t = self.ts_ns.saturating_sub(t0_ns) as f64 / 1e9;
        let ns = match &self.netns_name {
            Some(n) => format!("{} ({n})", self.netns),
            None => self.netns.to_string(),
        };
        let ep = endpoint;
        let mut line = format!(
            "{t:12.6} {ns:<32} {:<15} {:<22} {:<6} {} > {}",
            self.ifname,
            self.hook,
            self.proto,
            ep(&self.src, self.sport),
            ep(&self.dst, self.dport),
        );
        let detail = headers::describe(&Headers {
            proto: self.proto.clone(),
            icmp_type: self.icmp_type,
            icmp_id: self.icmp_id,
            icmp_seq: self.icmp_seq,
            tcp_flags: self.tcp_flags.clone(),
            arp_op: self.arp_op,
            ..Headers::default()
        });
        if !detail.is_empty() {
            line.push(' ');
            line.push_str(&detail);
        }
        if let Some(f) = &self.fib {
            line.push_str(&format!(" table {} {}", table_name(f.table), f.result));
            if let Some(dev) = &f.oif_name {
                line.push_str(&format!(" dev {dev}"));
            }
            if let Some(gw) = &f.gateway {
                line.push_str(&format!(" via {gw}"));
            }
            line.push_str(&format!(" #{}", self.packet_id));
        } else {
            line.push_str(&format!(" len {} #{}", self.len, self.packet_id));
        }
        if let Some(d) = self.delta_ns {
            line.push_str(&format!(" +{}", human_ns(d)));
        }
        if self.clone {
            line.push_str(" clone");
        }
        if let Some(q) = &self.qdisc {
            line.push_str(&format!(" qdisc {} {}", q.kind, q.handle));
        }
        if let Some(d) = &self.tc {
            line.push_str(&policy_text(&d.policy, d.priority));
            line.push_str(&format!(" {} -> {}", d.action, d.outcome));
            if let Some(e) = d.egress_ifindex {
                line.push_str(&format!(" egress ifindex {e}"));
            }
            if d.via_stack {
                // The policy is named just before.
                line.push_str(" via stack following the policy");
            }
        }
        if let Some(d) = &self.xdp {
            line.push_str(&policy_text(&d.policy, d.priority));
            line.push_str(&format!(" {} -> {}", d.action, d.outcome));
            if d.outcome == "passed" {
                line.push_str(" to tc");
            }
            if let Some(e) = d.egress_ifindex {
                line.push_str(&format!(" egress ifindex {e}"));
            }
        }
        if let Some(r) = &self.drop_reason {
            line.push_str(&format!(" DROP {r}"));
            if let Some(l) = &self.drop_location {
                line.push_str(&format!(" at {l}"));
            }
        }
        if let Some(r) = &self.rewrite {
            line.push_str(&format!(
                " rewrite: {} > {} becomes {} > {}",
                endpoint(&r.src, r.sport),
                endpoint(&r.dst, r.dport),
                endpoint(&self.src, self.sport),
                endpoint(&self.dst, self.dport),
            ));
        }
        if let Some(d) = &self.delivered {
            line.push_str(&format!(
                " DELIVERED to a socket (freed as {} at {})",
                d.reason, d.location
            ));
        }
        line
    }
}

/// A routing table by name when it has a well-known one (`main`, `local`, `default`),
/// else its id.
pub fn table_name(id: u32) -> String {
    match id {
        253 => "default".to_owned(),
        254 => "main".to_owned(),
        255 => "local".to_owned(),
        _ => id.to_string(),
    }
}

/// A duration in ns, short: `850ns`, `12.3us`, `4.56ms`, `1.20s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// A data path decision's policy, as ` policy ID (priority N)` (or what is known of it).
fn policy_text(policy: &Option<String>, priority: Option<u32>) -> String {
    match (policy, priority) {
        (Some(id), Some(p)) => format!(" policy {id} (priority {p})"),
        (None, Some(p)) => format!(" policy priority {p}"),
        _ => " no policy".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_345), "12.3us");
        assert_eq!(human_ns(4_560_000), "4.56ms");
        assert_eq!(human_ns(1_200_000_000), "1.20s");
    }
}

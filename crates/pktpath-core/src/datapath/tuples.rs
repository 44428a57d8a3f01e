//! Compiling match rules into tuple-space search tables.
//!
//! Each rule becomes one or more hash entries under a "tuple": the set of masks its match
//! uses (family, input interface or not, source and destination prefix lengths, protocol or
//! not, port prefix lengths, DSCP or not, fwmark mask). Port ranges become port prefixes,
//! widened to the lengths 0, 4, 8, 12 or 16 bits so that one range adds at most a few
//! tuples. Per packet the kernel does one hash lookup per tuple, best tuples first: the
//! cost grows with the number of distinct match shapes, not with the number of rules.
//!
//! [`Lookup`] mirrors the kernel's search in plain Rust, so the compilation is tested
//! against a linear scan without root.

use std::collections::{BTreeMap, HashMap};

use pktpath_common::route::{ClassKey, FAMILY_V4, FAMILY_V6, MAX_TUPLES, RuleValue, TupleMask};

/// Port prefix lengths the tables use; a port prefix is widened to the next one.
const PORT_LENGTHS: [u8; 5] = [0, 4, 8, 12, 16];

/// One rule, as the data path sees it: what it matches and what it does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Lower wins.
    pub priority: u32,
    /// None: both IPv4 and IPv6 (only when no address is given).
    pub family: Option<u8>,
    pub iif: Option<u32>,
    /// Address (IPv4 in the first 4 bytes) and prefix length.
    pub src: Option<([u8; 16], u8)>,
    pub dst: Option<([u8; 16], u8)>,
    pub proto: Option<u8>,
    /// Inclusive ranges, 1..=65535.
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    pub dscp: Option<u8>,
    /// (value, mask).
    pub mark: Option<(u32, u32)>,
    /// The action and counter slot; `priority` is filled from the rule.
    pub value: RuleValue,
}

/// The fields of a packet that rules match on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketFields {
    pub family: u8,
    pub iif: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub proto: u8,
    /// 0 when the packet has no ports.
    pub sport: u16,
    pub dport: u16,
    pub dscp: u8,
    pub mark: u32,
}

/// Compiled tables, generation not yet assigned.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// Sorted by `min_priority`.
    pub tuples: Vec<TupleMask>,
    pub entries: Vec<(ClassKey, RuleValue)>,
}

/// A rule set the tables cannot hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "the policies need {needed} distinct match shapes, the data path holds {max}: use fewer distinct prefix lengths, port ranges or mark masks"
    )]
    TooManyShapes { needed: usize, max: u32 },
    #[error("rule with priority {priority}: {what}")]
    Invalid { priority: u32, what: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Shape {
    family: u8,
    iif: bool,
    src_len: u8,
    dst_len: u8,
    proto: bool,
    sport_len: u8,
    dport_len: u8,
    dscp: bool,
    mark_mask: u32,
}

fn prefix_mask(len: u8) -> [u8; 16] {
    let mut m = [0u8; 16];
    for (i, b) in m.iter_mut().enumerate() {
        let bits = (len as i32 - 8 * i as i32).clamp(0, 8);
        *b = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    m
}

fn and16(a: &[u8; 16], m: &[u8; 16]) -> [u8; 16] {
    std::array::from_fn(|i| a[i] & m[i])
}

fn port_mask(len: u8) -> u16 {
    if len == 0 { 0 } else { u16::MAX << (16 - len) }
}

/// The smallest set of disjoint (value, prefix length) port prefixes covering `lo..=hi`.
pub fn range_to_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (lo as u32, hi as u32);
    while lo <= hi {
        // Largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros() as u8));
        lo += size;
    }
    out
}

/// Port prefixes widened to the table's lengths: (value, length) pairs.
fn port_entries(range: Option<(u16, u16)>) -> Vec<(u16, u8)> {
    let Some((lo, hi)) = range else {
        return vec![(0, 0)];
    };
    let mut out = Vec::new();
    for (value, len) in range_to_prefixes(lo, hi) {
        let target = *PORT_LENGTHS
            .iter()
            .find(|&&l| l >= len)
            .expect("16 is in the list");
        let extra = target - len;
        for i in 0..(1u32 << extra) {
            let v = value as u32 | (i << (16 - target as u32));
            out.push((v as u16, target));
        }
    }
    out
}

/// Compiles rules into tables. Rules may come in any order.
pub fn compile(rules: &[Rule]) -> Result<Tables, CompileError> {
    let mut by_shape: BTreeMap<Shape, (u32, HashMap<ClassKey, RuleValue>)> = BTreeMap::new();
    for rule in rules {
        let families: &[u8] = match rule.family {
            Some(FAMILY_V4) => &[FAMILY_V4],
            Some(FAMILY_V6) => &[FAMILY_V6],
            Some(f) => {
                return Err(CompileError::Invalid {
                    priority: rule.priority,
                    what: format!("unknown family {f}"),
                });
            }
            None => &[FAMILY_V4, FAMILY_V6],
        };
        for &family in families {
            let max_len = if family == FAMILY_V4 { 32 } else { 128 };
            for (what, p) in [("source", rule.src), ("destination", rule.dst)] {
                if let Some((_, len)) = p
                    && len > max_len
                {
                    return Err(CompileError::Invalid {
                        priority: rule.priority,
                        what: format!("{what} prefix length {len} is longer than {max_len}"),
                    });
                }
            }
            for (what, r) in [("source", rule.sport), ("destination", rule.dport)] {
                if let Some((lo, hi)) = r
                    && (lo == 0 || lo > hi)
                {
                    return Err(CompileError::Invalid {
                        priority: rule.priority,
                        what: format!(
                            "{what} port range {lo}-{hi} must be within 1-65535 and low to high"
                        ),
                    });
                }
            }
            let (src_addr, src_len) = rule.src.unwrap_or(([0; 16], 0));
            let (dst_addr, dst_len) = rule.dst.unwrap_or(([0; 16], 0));
            let (mark_value, mark_mask) = rule.mark.unwrap_or((0, 0));
            for (sport, sport_len) in port_entries(rule.sport) {
                for (dport, dport_len) in port_entries(rule.dport) {
                    let shape = Shape {
                        family,
                        iif: rule.iif.is_some(),
                        src_len,
                        dst_len,
                        proto: rule.proto.is_some(),
                        sport_len,
                        dport_len,
                        dscp: rule.dscp.is_some(),
                        mark_mask,
                    };
                    let key = ClassKey {
                        family,
                        proto: rule.proto.unwrap_or(0),
                        dscp: rule.dscp.unwrap_or(0) & 0x3f,
                        sport,
                        dport,
                        iif: rule.iif.unwrap_or(0),
                        mark: mark_value & mark_mask,
                        src: and16(&src_addr, &prefix_mask(src_len)),
                        dst: and16(&dst_addr, &prefix_mask(dst_len)),
                        ..Default::default()
                    };
                    let value = RuleValue {
                        priority: rule.priority,
                        ..rule.value
                    };
                    let (min, entries) =
                        by_shape.entry(shape).or_insert((u32::MAX, HashMap::new()));
                    *min = (*min).min(rule.priority);
                    entries
                        .entry(key)
                        .and_modify(|v| {
                            if value.priority < v.priority {
                                *v = value;
                            }
                        })
                        .or_insert(value);
                }
            }
        }
    }
    if by_shape.len() > MAX_TUPLES as usize {
        return Err(CompileError::TooManyShapes {
            needed: by_shape.len(),
            max: MAX_TUPLES,
        });
    }
    let mut shapes: Vec<(Shape, u32, HashMap<ClassKey, RuleValue>)> = by_shape
        .into_iter()
        .map(|(s, (min, e))| (s, min, e))
        .collect();
    shapes.sort_by_key(|(s, min, _)| (*min, *s));
    let mut tables = Tables::default();
    for (index, (shape, min, entries)) in shapes.into_iter().enumerate() {
        tables.tuples.push(TupleMask {
            family: shape.family,
            proto: if shape.proto { 0xff } else { 0 },
            dscp: if shape.dscp { 0x3f } else { 0 },
            sport: port_mask(shape.sport_len),
            dport: port_mask(shape.dport_len),
            iif: if shape.iif { u32::MAX } else { 0 },
            mark: shape.mark_mask,
            src: prefix_mask(shape.src_len),
            dst: prefix_mask(shape.dst_len),
            min_priority: min,
            ..Default::default()
        });
        for (mut key, value) in entries {
            key.tuple = index as u8;
            tables.entries.push((key, value));
        }
    }
    Ok(tables)
}

/// The kernel's search, in Rust, over indexed tables.
pub struct Lookup<'a> {
    tables: &'a Tables,
    index: HashMap<&'a ClassKey, &'a RuleValue>,
}

impl<'a> Lookup<'a> {
    /// Indexes the entries of `tables`.
    pub fn new(tables: &'a Tables) -> Self {
        Self {
            tables,
            index: tables.entries.iter().map(|(k, v)| (k, v)).collect(),
        }
    }

    /// The rule value the data path picks for a packet.
    pub fn find(&self, p: &PacketFields) -> Option<RuleValue> {
        let mut best: Option<RuleValue> = None;
        for (i, t) in self.tables.tuples.iter().enumerate() {
            if best.is_some_and(|b| t.min_priority >= b.priority) {
                break;
            }
            if t.family != p.family {
                continue;
            }
            let key = ClassKey {
                tuple: i as u8,
                family: p.family,
                proto: p.proto & t.proto,
                dscp: p.dscp & t.dscp,
                sport: p.sport & t.sport,
                dport: p.dport & t.dport,
                iif: p.iif & t.iif,
                mark: p.mark & t.mark,
                src: and16(&p.src, &t.src),
                dst: and16(&p.dst, &t.dst),
                ..Default::default()
            };
            if let Some(v) = self.index.get(&key)
                && best.is_none_or(|b| v.priority < b.priority)
            {
                best = Some(**v);
            }
        }
        best
    }
}

/// Whether `rule` matches `p`: the definition, as a linear scan would apply it.
pub fn matches(rule: &Rule, p: &PacketFields) -> bool {
    let in_prefix = |pfx: Option<([u8; 16], u8)>, addr: &[u8; 16]| {
        pfx.is_none_or(|(a, len)| and16(&a, &prefix_mask(len)) == and16(addr, &prefix_mask(len)))
    };
    let in_range = |r: Option<(u16, u16)>, port: u16| {
        r.is_none_or(|(lo, hi)| port != 0 && lo <= port && port <= hi)
    };
    rule.family.is_none_or(|f| f == p.family)
        && rule.iif.is_none_or(|i| i == p.iif)
        && in_prefix(rule.src, &p.src)
        && in_prefix(rule.dst, &p.dst)
        && rule.proto.is_none_or(|x| x == p.proto)
        && in_range(rule.sport, p.sport)
        && in_range(rule.dport, p.dport)
        && rule.dscp.is_none_or(|d| d == p.dscp)
        && rule.mark.is_none_or(|(v, m)| p.mark & m == v & m)
}

#[cfg(test)]
mod tests;

//! Compiling match rules into merged tuple-space search tables.
//!
//! A tuple is a set of masks (family, source and destination prefix lengths, protocol or
//! not, exact ports or not, input interface or not, DSCP or not, fwmark mask). Rules are
//! placed in priority order: each goes into the most specific existing tuple that is no
//! more specific than its own match and whose bucket for the rule's key has room (at most
//! [`BUCKET_RULES`] candidates); failing that, into a new tuple keyed on its prefixes only
//! (rounded down to a multiple of 8 bits, 16 for IPv6), then into one of its exact shape,
//! and as a last resort under port prefixes (a port range split into prefixes widened to 0,
//! 4, 8, 12 or 16 bits). Then tuples that differ only in prefix lengths are merged into the
//! shorter prefixes wherever the buckets keep room, so the number of tuples depends far
//! less on the order in which rule shapes arrive. Each bucket entry carries the rule's
//! complete match, which the data path checks. So a few tuples serve many rules of many shapes, and the per-packet
//! cost (one hash lookup per tuple, a few candidate checks) grows with neither.
//!
//! [`Lookup`] mirrors the kernel's search in plain Rust, so the compilation is tested
//! against a linear scan without root.

use std::collections::HashMap;

use pktpath_common::route::{
    BUCKET_RULES, Bucket, ClassKey, FAMILY_V4, FAMILY_V6, MATCH_DSCP, MATCH_IIF, MATCH_PROTO,
    MAX_TUPLES, RuleMatch, RuleValue, TupleMask,
};

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
    pub entries: Vec<(ClassKey, Bucket)>,
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
    #[error(
        "more than {max} policies (the one with priority {priority} among them) match the same fields and differ only in port ranges that overlap the same port prefix: merge some of them"
    )]
    BucketOverflow { priority: u32, max: usize },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

impl Shape {
    /// Whether a rule of shape `rule` may live in a tuple of this shape.
    fn admits(&self, rule: &Shape) -> bool {
        self.family == rule.family
            && self.src_len <= rule.src_len
            && self.dst_len <= rule.dst_len
            && (!self.proto || rule.proto)
            && (!self.iif || rule.iif)
            && (!self.dscp || rule.dscp)
            && self.sport_len <= rule.sport_len
            && self.dport_len <= rule.dport_len
            && self.mark_mask & !rule.mark_mask == 0
    }

    fn specificity(&self) -> u32 {
        self.src_len as u32
            + self.dst_len as u32
            + 8 * (self.proto as u32 + self.iif as u32 + self.dscp as u32)
            + self.sport_len as u32
            + self.dport_len as u32
            + self.mark_mask.count_ones()
    }

    /// Prefixes only, rounded down: the default home of a new rule.
    fn coarse(&self) -> Shape {
        let step = if self.family == FAMILY_V4 { 8 } else { 16 };
        Shape {
            family: self.family,
            src_len: self.src_len / step * step,
            dst_len: self.dst_len / step * step,
            ..Default::default()
        }
    }

    fn mask(&self, min_priority: u32) -> TupleMask {
        TupleMask {
            family: self.family,
            proto: if self.proto { 0xff } else { 0 },
            dscp: if self.dscp { 0x3f } else { 0 },
            sport: port_mask(self.sport_len),
            dport: port_mask(self.dport_len),
            iif: if self.iif { u32::MAX } else { 0 },
            mark: self.mark_mask,
            src: prefix_mask(self.src_len),
            dst: prefix_mask(self.dst_len),
            min_priority,
            ..Default::default()
        }
    }
}

/// One rule for one family, ready to be placed.
struct Placing {
    shape: Shape,
    m: RuleMatch,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
}

impl Placing {
    /// The hash key of this rule in a tuple of shape `t`, with the given port values.
    fn key(&self, t: &Shape, sport: u16, dport: u16) -> ClassKey {
        key_of(&self.m, t, sport, dport)
    }
}

/// The hash key of a rule's match `m` in a tuple of shape `t`, with the given port values.
fn key_of(m: &RuleMatch, t: &Shape, sport: u16, dport: u16) -> ClassKey {
    ClassKey {
        family: m.family,
        proto: if t.proto { m.proto } else { 0 },
        dscp: if t.dscp { m.dscp } else { 0 },
        sport: sport & port_mask(t.sport_len),
        dport: dport & port_mask(t.dport_len),
        iif: if t.iif { m.iif } else { 0 },
        mark: m.mark_value & t.mark_mask,
        src: and16(&m.src, &prefix_mask(t.src_len)),
        dst: and16(&m.dst, &prefix_mask(t.dst_len)),
        ..Default::default()
    }
}

struct TupleBuild {
    shape: Shape,
    /// Port-prefix tuples of the last resort are not offered to other rules.
    expansion: bool,
    min_priority: u32,
    buckets: HashMap<ClassKey, Vec<RuleMatch>>,
}

fn same_match(a: &RuleMatch, b: &RuleMatch) -> bool {
    RuleMatch {
        value: RuleValue::default(),
        ..*a
    } == RuleMatch {
        value: RuleValue::default(),
        ..*b
    }
}

impl TupleBuild {
    /// Adds `m` under `key` unless the bucket is full; an identical match already there
    /// (better priority, rules come in priority order) makes `m` unreachable: done.
    fn offer(&mut self, key: ClassKey, m: &RuleMatch) -> bool {
        let bucket = self.buckets.entry(key).or_default();
        if bucket.iter().any(|b| same_match(b, m)) {
            return true;
        }
        if bucket.len() >= BUCKET_RULES {
            return false;
        }
        bucket.push(*m);
        self.min_priority = self.min_priority.min(m.value.priority);
        true
    }
}

fn validate(rule: &Rule, family: u8) -> Result<(), CompileError> {
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
                what: format!("{what} port range {lo}-{hi} must be within 1-65535 and low to high"),
            });
        }
    }
    Ok(())
}

fn placing(rule: &Rule, family: u8) -> Placing {
    let (src, src_len) = rule.src.unwrap_or(([0; 16], 0));
    let (dst, dst_len) = rule.dst.unwrap_or(([0; 16], 0));
    let (mark_value, mark_mask) = rule.mark.unwrap_or((0, 0));
    let exact = |r: Option<(u16, u16)>| {
        if r.is_some_and(|(lo, hi)| lo == hi) {
            16
        } else {
            0
        }
    };
    let range = |r: Option<(u16, u16)>| r.unwrap_or((0, u16::MAX));
    let mut flags = 0;
    if rule.proto.is_some() {
        flags |= MATCH_PROTO;
    }
    if rule.dscp.is_some() {
        flags |= MATCH_DSCP;
    }
    if rule.iif.is_some() {
        flags |= MATCH_IIF;
    }
    let m = RuleMatch {
        family,
        proto: rule.proto.unwrap_or(0),
        dscp: rule.dscp.unwrap_or(0) & 0x3f,
        flags,
        sport_lo: range(rule.sport).0,
        sport_hi: range(rule.sport).1,
        dport_lo: range(rule.dport).0,
        dport_hi: range(rule.dport).1,
        iif: rule.iif.unwrap_or(0),
        mark_value: mark_value & mark_mask,
        mark_mask,
        src: and16(&src, &prefix_mask(src_len)),
        src_mask: prefix_mask(src_len),
        dst: and16(&dst, &prefix_mask(dst_len)),
        dst_mask: prefix_mask(dst_len),
        value: RuleValue {
            priority: rule.priority,
            ..rule.value
        },
    };
    let shape = Shape {
        family,
        iif: rule.iif.is_some(),
        src_len,
        dst_len,
        proto: rule.proto.is_some(),
        sport_len: exact(rule.sport),
        dport_len: exact(rule.dport),
        dscp: rule.dscp.is_some(),
        mark_mask,
    };
    Placing {
        shape,
        m,
        sport: rule.sport,
        dport: rule.dport,
    }
}

fn place(tuples: &mut Vec<TupleBuild>, p: &Placing) -> Result<(), CompileError> {
    let (sport, dport) = (p.m.sport_lo, p.m.dport_lo);
    // 1. The most specific existing tuple that admits the rule and has room.
    let mut fitting: Vec<usize> = (0..tuples.len())
        .filter(|&i| !tuples[i].expansion && tuples[i].shape.admits(&p.shape))
        .collect();
    fitting.sort_by_key(|&i| std::cmp::Reverse(tuples[i].shape.specificity()));
    for i in fitting {
        let key = p.key(&tuples[i].shape, sport, dport);
        if tuples[i].offer(key, &p.m) {
            return Ok(());
        }
    }
    // 2. A new tuple on the rule's (rounded) prefixes, then one of its exact shape.
    for shape in [p.shape.coarse(), p.shape] {
        if tuples.iter().any(|t| !t.expansion && t.shape == shape) {
            continue; // already tried above
        }
        let mut t = TupleBuild {
            shape,
            expansion: false,
            min_priority: u32::MAX,
            buckets: HashMap::new(),
        };
        let ok = t.offer(p.key(&shape, sport, dport), &p.m);
        tuples.push(t);
        if ok {
            return Ok(());
        }
    }
    // 3. Last resort: port prefixes, so rules that differ only in port ranges separate.
    for (sp, spl) in port_entries(p.sport) {
        for (dp, dpl) in port_entries(p.dport) {
            let shape = Shape {
                sport_len: spl,
                dport_len: dpl,
                ..p.shape
            };
            let i = match tuples.iter().position(|t| t.expansion && t.shape == shape) {
                Some(i) => i,
                None => {
                    tuples.push(TupleBuild {
                        shape,
                        expansion: true,
                        min_priority: u32::MAX,
                        buckets: HashMap::new(),
                    });
                    tuples.len() - 1
                }
            };
            let key = p.key(&shape, sp, dp);
            if !tuples[i].offer(key, &p.m) {
                return Err(CompileError::BucketOverflow {
                    priority: p.m.value.priority,
                    max: BUCKET_RULES,
                });
            }
        }
    }
    Ok(())
}

/// Merges tuples that differ only in their prefix lengths into one with the shorter
/// prefixes, whenever every bucket of the merged tuple still holds at most
/// [`BUCKET_RULES`] candidates. Which tuples placement creates depends on the order in
/// which rule shapes arrive (a /32 before any /16 opens a /32 tuple); this pass undoes
/// most of that, so a packet does fewer hash lookups. Port-prefix tuples of the last
/// resort are left alone.
fn merge_prefix_tuples(tuples: &mut Vec<TupleBuild>) {
    'again: loop {
        let mut order: Vec<usize> = (0..tuples.len())
            .filter(|&i| !tuples[i].expansion)
            .collect();
        // Smaller tuples first: cheaper to rebuild, likelier to fit.
        order.sort_by_key(|&i| tuples[i].buckets.values().map(Vec::len).sum::<usize>());
        for (x, &i) in order.iter().enumerate() {
            for &j in &order[x + 1..] {
                let (a, b) = (&tuples[i].shape, &tuples[j].shape);
                let same_but_prefixes = Shape {
                    src_len: 0,
                    dst_len: 0,
                    ..*a
                } == Shape {
                    src_len: 0,
                    dst_len: 0,
                    ..*b
                };
                if !same_but_prefixes {
                    continue;
                }
                let shape = Shape {
                    src_len: a.src_len.min(b.src_len),
                    dst_len: a.dst_len.min(b.dst_len),
                    ..*a
                };
                if let Some(t) = rebuild(shape, &tuples[i], &tuples[j]) {
                    let (lo, hi) = (i.min(j), i.max(j));
                    tuples.remove(hi);
                    tuples[lo] = t;
                    continue 'again;
                }
            }
        }
        return;
    }
}

/// The rules of `a` and `b` in one tuple of `shape` (no more specific than either), or None
/// when a bucket would overflow.
fn rebuild(shape: Shape, a: &TupleBuild, b: &TupleBuild) -> Option<TupleBuild> {
    let mut buckets: HashMap<ClassKey, Vec<RuleMatch>> = HashMap::new();
    for m in a.buckets.values().chain(b.buckets.values()).flatten() {
        let bucket = buckets
            .entry(key_of(m, &shape, m.sport_lo, m.dport_lo))
            .or_default();
        bucket.push(*m);
        if bucket.len() > 2 * BUCKET_RULES {
            return None; // too full even before identical matches are dropped
        }
    }
    for bucket in buckets.values_mut() {
        bucket.sort_by_key(|m| m.value.priority);
        // An identical match behind a better one can never be chosen.
        let mut kept: Vec<RuleMatch> = Vec::with_capacity(bucket.len());
        for m in bucket.iter() {
            if !kept.iter().any(|k| same_match(k, m)) {
                kept.push(*m);
            }
        }
        if kept.len() > BUCKET_RULES {
            return None;
        }
        *bucket = kept;
    }
    Some(TupleBuild {
        shape,
        expansion: false,
        min_priority: a.min_priority.min(b.min_priority),
        buckets,
    })
}

/// The families a rule applies to.
fn families(rule: &Rule) -> Result<&'static [u8], CompileError> {
    Ok(match rule.family {
        Some(FAMILY_V4) => &[FAMILY_V4],
        Some(FAMILY_V6) => &[FAMILY_V6],
        Some(f) => {
            return Err(CompileError::Invalid {
                priority: rule.priority,
                what: format!("unknown family {f}"),
            });
        }
        None => &[FAMILY_V4, FAMILY_V6],
    })
}

/// Compiles rules into tables. Rules may come in any order.
pub fn compile(rules: &[Rule]) -> Result<Tables, CompileError> {
    let mut order: Vec<&Rule> = rules.iter().collect();
    order.sort_by_key(|r| r.priority);
    let mut tuples: Vec<TupleBuild> = Vec::new();
    for rule in order {
        for &family in families(rule)? {
            validate(rule, family)?;
            place(&mut tuples, &placing(rule, family))?;
        }
    }
    tuples.retain(|t| !t.buckets.is_empty());
    merge_prefix_tuples(&mut tuples);
    if tuples.len() > MAX_TUPLES as usize {
        return Err(CompileError::TooManyShapes {
            needed: tuples.len(),
            max: MAX_TUPLES,
        });
    }
    tuples.sort_by_key(|t| (t.min_priority, t.shape));
    let mut tables = Tables::default();
    for (index, t) in tuples.into_iter().enumerate() {
        tables.tuples.push(t.shape.mask(t.min_priority));
        for (mut key, rules) in t.buckets {
            key.tuple = index as u8;
            let mut bucket = Bucket {
                count: rules.len() as u32,
                ..Default::default()
            };
            bucket.rules[..rules.len()].copy_from_slice(&rules);
            tables.entries.push((key, bucket));
        }
    }
    Ok(tables)
}

/// The rules as a linear scan checks them: each rule's complete match (one per family it
/// covers), best priority first. The benchmark's naive classifier runs on this.
pub fn scan_table(rules: &[Rule]) -> Result<Vec<RuleMatch>, CompileError> {
    let mut order: Vec<&Rule> = rules.iter().collect();
    order.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(rules.len());
    for rule in order {
        for &family in families(rule)? {
            validate(rule, family)?;
            out.push(placing(rule, family).m);
        }
    }
    Ok(out)
}

/// Whether a bucket candidate's complete match accepts the packet.
pub fn candidate_matches(r: &RuleMatch, p: &PacketFields) -> bool {
    r.family == p.family
        && (r.flags & MATCH_PROTO == 0 || r.proto == p.proto)
        && (r.flags & MATCH_DSCP == 0 || r.dscp == p.dscp)
        && (r.flags & MATCH_IIF == 0 || r.iif == p.iif)
        && p.mark & r.mark_mask == r.mark_value
        && and16(&p.src, &r.src_mask) == r.src
        && and16(&p.dst, &r.dst_mask) == r.dst
        && (r.sport_lo..=r.sport_hi).contains(&p.sport)
        && (r.dport_lo..=r.dport_hi).contains(&p.dport)
}

/// The kernel's search, in Rust, over indexed tables.
pub struct Lookup<'a> {
    tables: &'a Tables,
    index: HashMap<&'a ClassKey, &'a Bucket>,
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
            let Some(bucket) = self.index.get(&key) else {
                continue;
            };
            for r in &bucket.rules[..(bucket.count as usize).min(BUCKET_RULES)] {
                if best.is_some_and(|b| r.value.priority >= b.priority) {
                    break;
                }
                if candidate_matches(r, p) {
                    best = Some(r.value);
                    break;
                }
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

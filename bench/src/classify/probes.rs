//! How much work the data path's search does for a packet, counted in user space on the
//! compiled tables: the tuples it probes (one hash lookup each) and the bucket candidates
//! it checks. The walk follows the kernel's (`search_step` in the data path object) step
//! by step: tuples in order, skipping those of the other family, stopping once no later
//! tuple can hold a better priority.

use std::collections::HashMap;

use pktpath_common::route::{BUCKET_RULES, Bucket, ClassKey};
use pktpath_core::datapath::tuples::{PacketFields, Tables, candidate_matches};

/// The work of one search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Hash lookups (tuples of the packet's family visited).
    pub tuples: usize,
    /// Bucket candidates whose complete match was checked.
    pub candidates: usize,
}

/// Compiled tables indexed for counting.
pub struct Counter<'a> {
    tables: &'a Tables,
    index: HashMap<&'a ClassKey, &'a Bucket>,
}

fn and16(a: &[u8; 16], m: &[u8; 16]) -> [u8; 16] {
    std::array::from_fn(|i| a[i] & m[i])
}

impl<'a> Counter<'a> {
    pub fn new(tables: &'a Tables) -> Self {
        Self {
            tables,
            index: tables.entries.iter().map(|(k, v)| (k, v)).collect(),
        }
    }

    /// The work of searching for `p`.
    pub fn work(&self, p: &PacketFields) -> Work {
        let mut work = Work::default();
        let mut best: Option<u32> = None;
        for (i, t) in self.tables.tuples.iter().enumerate() {
            if best.is_some_and(|b| t.min_priority >= b) {
                break;
            }
            if t.family != p.family {
                continue;
            }
            work.tuples += 1;
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
                if best.is_some_and(|b| r.value.priority >= b) {
                    break;
                }
                work.candidates += 1;
                if candidate_matches(r, p) {
                    best = Some(r.value.priority);
                    break;
                }
            }
        }
        work
    }
}

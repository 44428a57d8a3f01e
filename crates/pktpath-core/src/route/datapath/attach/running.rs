//! The attached data path as readers and writers see it: its active policy set (read
//! consistently with the tables, see `state`), applies and counters.

use pktpath_common::route::{IfaceCounters, PolicyCounters};
use serde::Serialize;

use super::{
    AttachError, CONFIG_FILE, Layout, io_err,
    lock::Writer,
    resolve,
    state::{AttachState, SetFile},
    xdp::{self, EgressChange, EgressRefresh},
};
use crate::{
    route::datapath::{
        classifier::{self, TreeStats},
        policy::{self, Interfaces, Slots},
        slow_path,
        tables::{Applied, DatapathMaps},
    },
    route::{
        compile::{PolicySet, Topology},
        config::Source,
    },
};

/// An attached data path, opened from its pins.
pub struct Attached {
    pub layout: Layout,
    pub topology: Topology,
    pub maps: DatapathMaps,
}

/// Opens the data path attached at `layout`.
/// [`Attached::refresh_xdp_egress`] of the data path at `layout`, which opens nothing for a
/// data path attached without XDP (the agent calls it every second).
pub fn refresh_xdp_egress(layout: &Layout) -> Result<EgressRefresh, AttachError> {
    if AttachState::read(layout)?.xdp.is_none() {
        return Ok(EgressRefresh::default());
    }
    open(layout)?.refresh_xdp_egress()
}

pub fn open(layout: &Layout) -> Result<Attached, AttachError> {
    let state_config = layout.state(CONFIG_FILE);
    if !layout.pin_dir.exists() || !state_config.exists() {
        return Err(AttachError::NotAttached {
            dir: layout.pin_dir.display().to_string(),
        });
    }
    let source = Source::read(&state_config)?;
    let topology = Topology::from_source(&source)?;
    let maps = DatapathMaps::from_pins(&layout.pin_dir)?;
    Ok(Attached {
        layout: layout.clone(),
        topology,
        maps,
    })
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub policies: usize,
    pub rules: usize,
    /// Distinct match shapes among the rules (see `classifier::match_shapes`).
    pub match_shapes: usize,
    /// Decision trees (IPv4 and IPv6 together) and their shape.
    pub trees: usize,
    pub tree_stats: TreeStats,
    /// Bytes of classifier tables the set takes in the kernel.
    pub table_bytes: u64,
    pub generation: u32,
    /// Counter slots given to new policy ids (zeroed before the swap).
    pub fresh_slots: usize,
    /// What was done about writers killed before they finished (see [`Writer::lock`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// The slow path's tables whose routes were put back (their interface had been
    /// deleted and is back).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slow_path_restored: Vec<u32>,
    /// Interfaces XDP now redirects into, or no longer does, since the last look (a veth
    /// peer's GRO or XDP program came or went; see [`Attached::refresh_xdp_egress`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub xdp_egress_changed: Vec<EgressChange>,
}

/// One policy's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyStats {
    pub id: String,
    pub priority: u32,
    pub slot: u32,
    pub packets: u64,
    pub bytes: u64,
}

/// One interface's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IfaceStats {
    pub name: String,
    pub ifindex: u32,
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    pub error_packets: u64,
    /// Headers the kernel would refuse, passed to the stack untouched (also in `passed_*`).
    pub invalid_packets: u64,
}

impl IfaceStats {
    fn new(name: &str, ifindex: u32, c: IfaceCounters) -> Self {
        Self {
            name: name.to_owned(),
            ifindex,
            passed_packets: c.passed_packets,
            passed_bytes: c.passed_bytes,
            forwarded_packets: c.forwarded_packets,
            forwarded_bytes: c.forwarded_bytes,
            dropped_packets: c.dropped_packets,
            dropped_bytes: c.dropped_bytes,
            error_packets: c.error_packets,
            invalid_packets: c.invalid_packets,
        }
    }
}

/// Counters of the running data path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The apply serial of the set counted.
    pub generation: u32,
    /// In priority order.
    pub policies: Vec<PolicyStats>,
    pub interfaces: Vec<IfaceStats>,
}

/// The policy set packets are classified by now, read consistently with the tables.
#[derive(Clone, Debug)]
pub struct ActiveSet {
    /// The apply serial of the tables in use ([`ApplyReport::generation`]).
    pub generation: u32,
    /// The runtime configuration as `apply` was given it (None before the first apply).
    pub source: Option<Source>,
    pub set: PolicySet,
    pub slots: Slots,
}

/// What [`ActiveSet`] holds but the parsed policies: all a reader needs that only names
/// policies by their counter slot, or compares texts, read at the same cost for any size.
#[derive(Clone, Debug)]
pub struct ActiveFile {
    pub generation: u32,
    pub source: Option<Source>,
    pub slots: Slots,
}

impl ActiveFile {
    /// The id of the policy counted in `slot`.
    pub fn policy_of_slot(&self, slot: u32) -> Option<&str> {
        self.slots
            .by_id
            .iter()
            .find(|(_, s)| **s == slot)
            .map(|(id, _)| id.as_str())
    }
}

/// How often a reader tries for a consistent view while writers flip generations.
const READ_TRIES: usize = 100;

impl Attached {
    /// The policy set the tables in use were compiled from (its policies parsed: about a
    /// second at 100k; [`Attached::active_file`] when they are not needed).
    pub fn active(&self) -> Result<ActiveSet, AttachError> {
        let ActiveFile {
            generation,
            source,
            slots,
        } = self.active_file()?;
        let set = match &source {
            Some(src) => PolicySet::from_source(&self.topology, src)?,
            None => PolicySet::empty(self.topology.clone()),
        };
        Ok(ActiveSet {
            generation,
            source,
            set,
            slots,
        })
    }

    /// The set file of the tables in use. A writer may flip generations meanwhile: the
    /// file is taken only when it carries the serial that is active before and after it is
    /// read.
    pub fn active_file(&self) -> Result<ActiveFile, AttachError> {
        let mut last = 0;
        for _ in 0..READ_TRIES {
            let serial = self.maps.serial()?;
            last = serial;
            if let Some(file) = SetFile::read(&self.layout, serial)?
                && file.serial == serial
                && self.maps.serial()? == serial
            {
                return Ok(ActiveFile {
                    generation: file.serial,
                    source: match (file.name, file.text) {
                        (Some(name), Some(text)) => Some(Source::new(name, text)),
                        _ => None,
                    },
                    slots: file.slots,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(AttachError::NoSetFile {
            path: SetFile::path(&self.layout, last).display().to_string(),
            generation: last,
        })
    }

    /// Swaps in `set` (validated against this data path's topology; `source` is its text,
    /// kept for `show`). Packets see the old set or the new one, never a mix. On error the
    /// running set stays.
    pub fn apply(
        &mut self,
        writer: &Writer,
        set: &PolicySet,
        source: &Source,
    ) -> Result<ApplyReport, AttachError> {
        if writer.layout() != &self.layout {
            return Err(AttachError::NotWriter {
                dir: self.layout.pin_dir.display().to_string(),
            });
        }
        let ifaces = resolve(&self.topology)?;
        let slow_path_restored = self.restore_slow_path(&ifaces);
        let xdp_egress_changed = match self.refresh_xdp_egress() {
            Ok(r) => r.changed,
            Err(e) => {
                log::warn!("XDP: could not read which interfaces take native XDP frames ({e})");
                Vec::new()
            }
        };
        let plan = self.active_file()?.slots.plan(set)?;
        let compiled = policy::compile_set(set, &ifaces, &plan.slots)?;
        // Slots the running set does not use: packets do not count into them until the flip.
        self.maps
            .reset_policy_counters(plan.fresh.iter().copied())?;
        self.maps.set_nexthops(&compiled.next_hops)?;
        // The set file first, tagged with the serial the tables will be active as: whenever
        // tables are in use their file exists, and a next writer that finds the file of a
        // serial not yet active knows the apply was interrupted before its flip.
        let serial = self.maps.serial()?.wrapping_add(1);
        SetFile {
            serial,
            name: Some(source.name().to_owned()),
            text: Some(source.text().to_owned()),
            slots: plan.slots,
        }
        .write(&self.layout)?;
        let flipped = self
            .maps
            .stage(&compiled.tables)
            .and_then(|staged| self.maps.flip(staged));
        let Applied {
            generation,
            stats,
            arena_bytes,
            ..
        } = match flipped {
            Ok(applied) => applied,
            Err(e) => {
                // Not in use: undo what the next writer would otherwise roll back.
                if self.maps.serial().ok() != Some(serial) {
                    let _ = std::fs::remove_file(SetFile::path(&self.layout, serial));
                    if let Err(e) = self.maps.release_inactive() {
                        log::warn!("releasing the tables of a failed apply: {e}");
                    }
                }
                return Err(e.into());
            }
        };
        Ok(ApplyReport {
            policies: set.policies.len(),
            rules: compiled.rules.len(),
            match_shapes: classifier::match_shapes(&compiled.rules),
            trees: stats.trees[0] + stats.trees[1],
            tree_stats: stats,
            table_bytes: arena_bytes,
            generation,
            fresh_slots: plan.fresh.len(),
            recovered: writer.recovered().to_vec(),
            slow_path_restored,
            xdp_egress_changed,
        })
    }

    /// Sets which configured interfaces the XDP program may redirect into, as their
    /// drivers say now (a veth takes native XDP frames only while its peer runs an XDP
    /// program or has GRO on, and XDP's redirect into one that does not drops the frame):
    /// what changed since the last look, and a warning per interface XDP leaves to TC.
    /// Nothing for a data path attached without XDP. Needs CAP_BPF, as apply does.
    pub fn refresh_xdp_egress(&self) -> Result<EgressRefresh, AttachError> {
        let Some(x) = AttachState::read(&self.layout)?.xdp else {
            return Ok(EgressRefresh::default());
        };
        let ifaces = resolve(&self.topology)?;
        xdp::fill_egress(&self.layout, &self.topology, &ifaces, &x)
    }

    /// Puts back the slow path's routes that an interface deleted and created again took
    /// with it (see `slow_path::restore`), through the interfaces `ifaces` as they are now;
    /// the tables filled again. It costs the slow path only, never the apply (which needs
    /// no more than CAP_BPF): a failure is a warning.
    fn restore_slow_path(&self, ifaces: &Interfaces) -> Vec<u32> {
        let restore = || -> Result<slow_path::Restored, AttachError> {
            let mut state = AttachState::read(&self.layout)?;
            if state.slow_path.routes.is_empty() {
                return Ok(slow_path::Restored::default());
            }
            // Recorded before any is created, as attach does: detach removes them by table.
            let routes = slow_path::plan(&self.topology, ifaces).routes;
            if routes != state.slow_path.routes {
                state.slow_path.routes = routes;
                state.write(&self.layout)?;
            }
            Ok(slow_path::restore(&state.slow_path)?)
        };
        let (tables, error) = match restore() {
            Ok(r) => (r.tables, r.error.map(AttachError::Sys)),
            Err(e) => (Vec::new(), Some(e)),
        };
        if let Some(e) = error {
            let hint = match &e {
                AttachError::Sys(s) if s.source.raw_os_error() == Some(libc::EPERM) => {
                    "; adding them takes CAP_NET_ADMIN: run this apply as root, or `pktpath route attach` again"
                }
                _ => "",
            };
            log::warn!(
                "slow path: could not put back the routes of its tables ({e}){hint}; until then packets of their next hops handed to the stack follow the main table"
            );
        }
        tables
    }

    /// Each configured interface's counters, summed over CPUs (they do not depend on the
    /// policy set).
    pub fn interface_stats(&self) -> Result<Vec<IfaceStats>, AttachError> {
        let ifaces = resolve(&self.topology)?;
        let mut out = Vec::with_capacity(ifaces.links.len());
        for (i, link) in self.topology.interfaces.iter().zip(&ifaces.links) {
            let c = self.maps.iface_counters(link.ifindex)?;
            out.push(IfaceStats::new(&i.name, link.ifindex, c));
        }
        Ok(out)
    }

    /// Per-policy (priority order) and per-interface counters, summed over CPUs.
    /// Per-policy counters are read again when an apply flipped generations meanwhile (it
    /// may have given a removed policy's slot to a new one).
    pub fn stats(&self) -> Result<Stats, AttachError> {
        let mut tries = 0;
        loop {
            let stats = self.stats_once()?;
            tries += 1;
            if self.maps.serial()? == stats.generation || tries == READ_TRIES {
                return Ok(stats);
            }
        }
    }

    fn stats_once(&self) -> Result<Stats, AttachError> {
        let ActiveSet {
            generation,
            set,
            slots,
            ..
        } = self.active()?;
        let mut policies = Vec::with_capacity(set.policies.len());
        for p in &set.policies {
            let slot = slots
                .by_id
                .get(&p.id)
                .copied()
                .ok_or_else(|| AttachError::State {
                    path: SetFile::path(&self.layout, generation)
                        .display()
                        .to_string(),
                    source: serde::de::Error::custom(format!("no slot for policy {}", p.id)),
                })?;
            let PolicyCounters { packets, bytes } = self.maps.policy_counters(slot)?;
            policies.push(PolicyStats {
                id: p.id.clone(),
                priority: p.priority,
                slot,
                packets,
                bytes,
            });
        }
        Ok(Stats {
            generation,
            policies,
            interfaces: self.interface_stats()?,
        })
    }
}

/// Releases what an apply killed before it finished left in the inactive generation,
/// and says what happened to it: rolled back (killed before its flip: the set before
/// it runs) or finished (killed after: its set runs).
pub(super) fn recover_apply(
    layout: &Layout,
    maps: &mut DatapathMaps,
) -> Result<Option<String>, AttachError> {
    let serial = maps.serial()?;
    // Written before the tables: present when an apply was interrupted before its flip.
    let staged = SetFile::read(layout, serial.wrapping_add(1))?
        .filter(|f| f.serial == serial.wrapping_add(1));
    if !maps.inactive_in_use()? && staged.is_none() {
        return Ok(None);
    }
    maps.release_inactive()?;
    Ok(Some(match staged {
        Some(f) => {
            let path = SetFile::path(layout, f.serial);
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
            format!(
                "rolled back an apply of {} that was interrupted before it took effect; generation {serial} stayed in use",
                f.name.as_deref().unwrap_or("an empty set")
            )
        }
        None => format!(
            "finished an apply that was interrupted after it took effect (generation {serial}): released the tables it replaced"
        ),
    }))
}

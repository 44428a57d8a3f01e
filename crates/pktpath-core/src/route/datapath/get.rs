//! `route get`: what the attached data path does with one packet, found by running the
//! pinned program on a synthesized frame with BPF_PROG_TEST_RUN.
//!
//! The program notes its decision for the last packet in a per-CPU array
//! (`ROUTE_DECISION`). The test run happens on a thread pinned to one CPU, with a random
//! nonce in `__sk_buff.cb[0]`; that CPU's entry is read back and accepted only when it
//! carries the nonce (a real packet handled on the same CPU in between would overwrite it;
//! the run is then repeated). The frame arrives with `ifindex` = the given input
//! interface, so `iif` matches as for real traffic. A test run is counted like a packet:
//! the matched policy's and the interface's counters go up by one.

use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult},
};
use pktpath_common::route::{
    ACTION_FORWARD, ACTION_TABLE, DECISION_VIA_STACK, Decision, FAMILY_V4, GET_MAGIC, MAP_DECISION,
    PROG_DATAPATH, PROG_DATAPATH_OLD,
};
use serde::Serialize;

use super::{
    attach::{ActiveFile, AttachError, Attached},
    frame::{self, FrameOptions},
};
use crate::{
    route::packet::{Ifindex, PacketFields},
    sys::{SysError, iface},
};

/// Size of `struct __sk_buff`, and offsets of the fields a test run may set.
pub(super) const SKB_CTX: usize = 192;
const CTX_MARK: usize = 8;
const CTX_IFINDEX: usize = 40;
const CTX_CB0: usize = 48;
pub(super) const TC_ACT_OK: i32 = 0;
pub(super) const TC_ACT_SHOT: i32 = 2;
pub(super) const TC_ACT_REDIRECT: i32 = 7;

/// Header fields after the program ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewritten {
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub dscp: u8,
    pub mark: u32,
    pub dst_mac: String,
    pub src_mac: String,
}

/// What the data path does with the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The apply serial of the policy set that answered.
    pub generation: u32,
    /// Id of the policy that matched, or None.
    pub policy: Option<String>,
    pub priority: Option<u32>,
    /// `forward`, `lookup_table`, `pass` or `drop` (`pass` when no policy matched).
    pub action: &'static str,
    /// Interface the packet leaves by, when redirected.
    pub egress: Option<String>,
    /// The next hop's name (forward), when the packet is redirected to it.
    pub next_hop: Option<String>,
    /// `redirect`, `pass` (to the kernel stack) or `drop`.
    pub verdict: String,
    /// A packet of a `forward` or `lookup_table` policy passed to the stack with its next
    /// hop's or table's slow-path mark: the stack's forwarding follows the policy (see
    /// `datapath::slow_path`).
    pub via_stack: Option<ViaStack>,
    pub rewritten: Rewritten,
}

/// How the stack forwards a packet the data path handed it for a `forward` or
/// `lookup_table` policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ViaStack {
    /// The policy it follows.
    pub policy: Option<String>,
    /// The policy's next hop (`forward`), and the routing table and mark that lead the
    /// stack there.
    pub next_hop: Option<String>,
    /// The name of the policy's table (`lookup_table`), whose id is `table`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup_table: Option<String>,
    pub table: u32,
    pub mark: u32,
    pub mask: u32,
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(super) fn nonce() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(13))
        .unwrap_or(0x5eed);
    (t ^ std::process::id().rotate_left(7)) | 1
}

pub(super) fn prog_err(what: &str) -> impl FnOnce(aya::programs::ProgramError) -> AttachError {
    let what = what.to_owned();
    move |source| AttachError::Program { what, source }
}

/// The frame of `p` with IPv4 TTL or IPv6 hop limit `ttl`, addressed to `input`'s MAC.
pub(super) fn frame_to(p: &PacketFields<Ifindex>, input: &iface::Iface, ttl: u8) -> Vec<u8> {
    frame::build(
        p,
        &FrameOptions {
            dst_mac: input.mac,
            ttl,
            ..Default::default()
        },
    )
}

/// The input interface a `route get` names, in the calling thread's network namespace.
pub(super) fn input(iif: &str) -> Result<iface::Iface, AttachError> {
    iface::lookup(iif).map_err(|source| AttachError::NoInterface {
        name: iif.to_owned(),
        config: "the command line".to_owned(),
        source,
    })
}

/// Runs `prog` once with `opts` on a thread pinned to one CPU, and reads that CPU's
/// decision record (`what`: the program, for errors).
pub(super) fn run_on_one_cpu<P>(
    prog: &P,
    opts: TestRunOptions<'_>,
    decisions: &PerCpuArray<MapData, Decision>,
    what: &str,
) -> Result<(TestRunResult, Decision), AttachError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult> + Sync,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let cpu = pin_to_current_cpu()?;
            let r = prog
                .test_run(opts)
                .map_err(prog_err(&format!("BPF_PROG_TEST_RUN of {what}")))?;
            let per_cpu = decisions.get(&0, 0).map_err(|source| {
                AttachError::Table(super::tables::TableError::Map {
                    op: "read",
                    map: MAP_DECISION,
                    source,
                })
            })?;
            Ok((r, per_cpu.get(cpu).copied().unwrap_or_default()))
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Attached {
    /// Runs the pinned program on a frame with `fields` arriving on interface `iif` (of the
    /// calling thread's network namespace) and says what it did.
    /// `ttl` is the frame's IPv4 TTL or IPv6 hop limit.
    pub fn explain(
        &self,
        iif: &str,
        fields: &PacketFields<Ifindex>,
        ttl: u8,
    ) -> Result<Explanation, AttachError> {
        let input = input(iif)?;
        let prog_path = self.layout.prog();
        let prog = if prog_path.exists() {
            SchedClassifier::from_pin(&prog_path).map_err(prog_err(&format!(
                "opening the pinned program {}",
                prog_path.display()
            )))?
        } else {
            // Attached by hand with tc: no program pin, but a program on the pinned maps.
            let info = super::attach::hand_programs(&self.layout.pin_dir)
                .into_iter()
                .next()
                .ok_or_else(|| AttachError::NoHandProgram {
                    dir: self.layout.pin_dir.display().to_string(),
                })?;
            let name = match info.name_as_str() {
                Some(PROG_DATAPATH_OLD) => PROG_DATAPATH_OLD,
                _ => PROG_DATAPATH,
            };
            SchedClassifier::from_program_info(info, name.into())
                .map_err(prog_err("opening the data path program tc loaded"))?
        };
        let decisions = self.decisions()?;
        let p = PacketFields {
            iif: input.ifindex,
            ..*fields
        };
        let frame = frame_to(&p, &input, ttl);
        for _attempt in 0..5 {
            // The policy names come from the set whose tables answer.
            let active = self.active_file()?;
            let nonce = nonce();
            let mut ctx_in = [0u8; SKB_CTX];
            ctx_in[CTX_MARK..CTX_MARK + 4].copy_from_slice(&p.mark.to_ne_bytes());
            ctx_in[CTX_IFINDEX..CTX_IFINDEX + 4].copy_from_slice(&input.ifindex.to_ne_bytes());
            ctx_in[CTX_CB0..CTX_CB0 + 4].copy_from_slice(&nonce.to_ne_bytes());
            for (i, word) in GET_MAGIC.iter().enumerate() {
                let at = CTX_CB0 + 4 * (i + 1);
                ctx_in[at..at + 4].copy_from_slice(&word.to_ne_bytes());
            }
            let mut ctx_out = [0u8; SKB_CTX];
            let mut data_out = vec![0u8; frame.len() + 64];
            let opts = TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut data_out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                repeat: 1,
                ..Default::default()
            };
            let (ret, decision) = run_on_one_cpu(&prog, opts, &decisions, "the data path")?;
            if decision.nonce != nonce {
                continue; // a real packet overwrote the record; run again
            }
            if self.maps.serial()? != active.generation {
                continue; // an apply flipped generations during the run
            }
            data_out.truncate(ret.data_size_out as usize);
            return Ok(self.describe(
                &active,
                &p,
                &decision,
                ret.return_value as i32,
                &data_out,
                &ctx_out,
            ));
        }
        Err(AttachError::Sys(SysError::io(
            "reading the data path's decision",
            std::io::Error::other(
                "another packet or an apply overwrote it five times in a row; try again",
            ),
        )))
    }

    /// The pinned decision record (`ROUTE_DECISION`).
    pub(super) fn decisions(&self) -> Result<PerCpuArray<MapData, Decision>, AttachError> {
        let path = self.layout.pin_dir.join(MAP_DECISION);
        MapData::from_pin(&path)
            .and_then(Map::from_map_data)
            .and_then(PerCpuArray::try_from)
            .map_err(|source| {
                AttachError::Table(super::tables::TableError::Pin {
                    path: path.display().to_string(),
                    source,
                })
            })
    }

    pub(super) fn describe(
        &self,
        active: &ActiveFile,
        p: &PacketFields<Ifindex>,
        d: &Decision,
        verdict: i32,
        out: &[u8],
        ctx_out: &[u8],
    ) -> Explanation {
        let policy = (d.matched != 0)
            .then(|| active.policy_of_slot(d.slot).map(str::to_owned))
            .flatten();
        let action = pktpath_common::route::action_name(d.matched, d.action);
        let redirected = verdict == TC_ACT_REDIRECT && d.egress_ifindex != 0;
        let egress = redirected.then(|| {
            iface::name_of(d.egress_ifindex)
                .unwrap_or_else(|| format!("ifindex {}", d.egress_ifindex))
        });
        let next_hop = (redirected && d.matched != 0 && d.action == ACTION_FORWARD)
            .then(|| {
                self.topology
                    .next_hops
                    .get((d.nexthop / 2) as usize)
                    .map(|h| h.name.clone())
            })
            .flatten();
        let verdict_text = match verdict {
            TC_ACT_OK => "pass".to_owned(),
            TC_ACT_SHOT => "drop".to_owned(),
            TC_ACT_REDIRECT => "redirect".to_owned(),
            other => format!("tc verdict {other}"),
        };
        let (ttl, tos) = if p.family() == FAMILY_V4 {
            (
                out.get(14 + 8).copied().unwrap_or(0),
                out.get(14 + 1).copied().unwrap_or(0),
            )
        } else {
            let tc = u16::from_be_bytes([
                out.get(14).copied().unwrap_or(0),
                out.get(15).copied().unwrap_or(0),
            ]) >> 4;
            (out.get(14 + 7).copied().unwrap_or(0), tc as u8)
        };
        let mark = u32::from_ne_bytes(ctx_out[CTX_MARK..CTX_MARK + 4].try_into().expect("4 bytes"));
        let slow = &self.topology.slow_path;
        let via_stack = (d.matched != 0 && d.flags & DECISION_VIA_STACK != 0)
            .then(|| match d.action {
                ACTION_FORWARD => {
                    let hop = (d.nexthop / 2) as usize;
                    Some(ViaStack {
                        policy: policy.clone(),
                        next_hop: self.topology.next_hops.get(hop).map(|h| h.name.clone()),
                        lookup_table: None,
                        table: slow.table(hop),
                        mark: mark & slow.mark_mask,
                        mask: slow.mark_mask,
                    })
                }
                ACTION_TABLE => {
                    // A table's entry follows the next hops' two each (policy::table_entry).
                    let j = (d.nexthop as usize).checked_sub(2 * self.topology.next_hops.len());
                    let t = j.and_then(|j| self.topology.tables.get(j))?;
                    Some(ViaStack {
                        policy: policy.clone(),
                        next_hop: None,
                        lookup_table: Some(t.name.clone()),
                        table: t.id,
                        mark: mark & slow.mark_mask,
                        mask: slow.mark_mask,
                    })
                }
                _ => None,
            })
            .flatten();
        Explanation {
            generation: active.generation,
            policy,
            priority: (d.matched != 0).then_some(d.priority),
            action,
            egress,
            next_hop,
            verdict: verdict_text,
            via_stack,
            rewritten: Rewritten {
                ttl,
                dscp: tos >> 2,
                mark,
                dst_mac: mac(out.get(0..6).unwrap_or(&[])),
                src_mac: mac(out.get(6..12).unwrap_or(&[])),
            },
        }
    }
}

/// Pins the calling thread to the CPU it runs on; returns that CPU.
pub(super) fn pin_to_current_cpu() -> Result<usize, AttachError> {
    // SAFETY: no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        return Err(SysError::last("sched_getcpu()").into());
    }
    // SAFETY: an all-zero cpu_set_t is an empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size given; 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(SysError::last(format!("sched_setaffinity(cpu {cpu})")).into());
    }
    // The thread may have moved between the two calls; ask again after pinning.
    // SAFETY: no arguments.
    let now = unsafe { libc::sched_getcpu() };
    Ok(if now >= 0 { now as usize } else { cpu as usize })
}

//! The programs the classify part runs with BPF_PROG_TEST_RUN (the data path, the floor,
//! the linear scan), the frames it gives them, and what the kernel says about the data
//! path: its decision for a frame (the `route get` record) and its maps' memory.

use std::{collections::HashMap, time::Instant};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, MapInfo, PerCpuArray},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use pktpath_common::{
    baseline::{
        GLOBAL_FLOOR_IFINDEX, MAP_LINEAR_COUNT, MAP_LINEAR_RULES, MAX_LINEAR_RULES, PROG_FLOOR,
        PROG_LINEAR,
    },
    route::{Decision, GET_MAGIC, MAP_ARENA, MAP_DECISION, PROG_DATAPATH, RuleMatch},
};
use pktpath_core::{
    loader::{self, GlobalValue, Object},
    route::datapath::{
        classifier::Tables,
        frame::{self, FrameOptions},
        tables::DatapathMaps,
    },
    route::packet::{Ifindex, PacketFields},
};
use pktpath_tests::objects::{self, TestObject};

/// Size of `struct __sk_buff`, and offsets of the fields a test run sets.
const SKB_CTX: usize = 192;
const CTX_MARK: usize = 8;
const CTX_IFINDEX: usize = 40;
const CTX_CB0: usize = 48;

/// A frame and the context it arrives with (input interface, packet mark).
pub struct Frame {
    data: Vec<u8>,
    ctx: [u8; SKB_CTX],
}

impl Frame {
    pub fn new(p: &PacketFields<Ifindex>) -> Self {
        let mut ctx = [0u8; SKB_CTX];
        ctx[CTX_MARK..CTX_MARK + 4].copy_from_slice(&p.mark.to_ne_bytes());
        ctx[CTX_IFINDEX..CTX_IFINDEX + 4].copy_from_slice(&p.iif.to_ne_bytes());
        Frame {
            data: frame::build(p, &FrameOptions::default()),
            ctx,
        }
    }
}

/// A program to time.
#[derive(Clone, Copy, Debug)]
pub enum Prog {
    Datapath,
    Floor,
    Linear,
}

/// What the data path decided for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The priority of the rule that matched.
    pub priority: Option<u32>,
    /// The TC verdict.
    pub verdict: i32,
}

/// The three programs, loaded, and the data path's maps.
pub struct Programs {
    datapath: Ebpf,
    pub maps: DatapathMaps,
    floor: Ebpf,
    linear: Ebpf,
    /// Ids of the data path object's maps.
    map_ids: Vec<u32>,
    nonce: u32,
}

/// Loads the classifier program `prog` of a loaded object.
fn load_prog(mut ebpf: Ebpf, prog: &str) -> anyhow::Result<Ebpf> {
    let p: &mut SchedClassifier = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog}"))?
        .try_into()?;
    p.load().with_context(|| format!("verifier on {prog}"))?;
    Ok(ebpf)
}

/// A field of a BPF object's /proc/self/fdinfo entry.
fn fdinfo_field(fd: &str, name: &str) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// The BPF maps this process holds open: map id and the kernel's `memlock` figure (bytes
/// charged for the map, entries included), from /proc/self/fdinfo.
fn open_maps() -> anyhow::Result<HashMap<u32, u64>> {
    let mut maps = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").context("read /proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed since the listing
        };
        if target.as_os_str() != "anon_inode:bpf-map" {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().into_owned();
        if let (Some(id), Some(memlock)) =
            (fdinfo_field(&fd, "map_id:"), fdinfo_field(&fd, "memlock:"))
        {
            maps.insert(id as u32, memlock);
        }
    }
    Ok(maps)
}

impl Programs {
    /// Loads the data path, the floor (redirecting to ifindex 1) and the linear scan.
    pub fn load() -> anyhow::Result<Self> {
        let before = open_maps()?;
        let datapath = loader::load(Object::Datapath, &[]).context("load Datapath")?;
        let mut datapath = load_prog(datapath, PROG_DATAPATH)?;
        let map_ids: Vec<u32> = open_maps()?
            .into_keys()
            .filter(|id| !before.contains_key(id))
            .collect();
        let names: Vec<String> = map_ids
            .iter()
            .map(|&id| {
                MapInfo::from_id(id)
                    .map(|i| i.name_as_str().unwrap_or_default().to_owned())
                    .unwrap_or_default()
            })
            .collect();
        anyhow::ensure!(
            names.iter().any(|n| n == MAP_ARENA),
            "the data path's arena was not found among its maps {names:?}"
        );
        let maps = DatapathMaps::from_ebpf(&mut datapath)?;
        let floor = objects::load(
            TestObject::Floor,
            &[(GLOBAL_FLOOR_IFINDEX, GlobalValue::U32(1))],
        )?;
        let floor = load_prog(floor, PROG_FLOOR)?;
        let linear = load_prog(objects::load(TestObject::Linear, &[])?, PROG_LINEAR)?;
        Ok(Self {
            datapath,
            maps,
            floor,
            linear,
            map_ids,
            nonce: 0,
        })
    }

    /// Empties both generations, then applies `tables`; the time of that last apply, in ms.
    /// (Into an empty generation, so the figure does not depend on the set before, and
    /// the maps then hold this set alone.)
    pub fn apply(&mut self, tables: &Tables) -> anyhow::Result<f64> {
        let empty = Tables::default();
        self.maps.apply(&empty)?;
        self.maps.apply(&empty)?;
        let t = Instant::now();
        self.maps.apply(tables)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    /// Bytes the kernel charges for the data path object's maps, and for the arena chunks
    /// of the active generation (the trees).
    pub fn map_bytes(&self) -> anyhow::Result<(u64, u64)> {
        let open = open_maps()?;
        let mut maps = 0;
        for id in &self.map_ids {
            maps += *open
                .get(id)
                .with_context(|| format!("data path map {id} is no longer open"))?;
        }
        let mut tables = 0;
        for chunk in self.maps.active_chunk_maps()? {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            let fd = aya::maps::IterableMap::map(&chunk)
                .fd()
                .as_fd()
                .as_raw_fd()
                .to_string();
            tables += fdinfo_field(&fd, "memlock:").context("memlock of an arena chunk")?;
        }
        Ok((maps, tables))
    }

    /// Writes the linear scan's rules: IPv4 rules then IPv6 rules, and their counts.
    pub fn set_linear(
        &mut self,
        (rules, counts): &(Vec<RuleMatch>, [u32; 2]),
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            rules.len() <= MAX_LINEAR_RULES as usize,
            "{} rules exceed the linear scan's {MAX_LINEAR_RULES}",
            rules.len()
        );
        let mut table: Array<_, RuleMatch> = Array::try_from(
            self.linear
                .map_mut(MAP_LINEAR_RULES)
                .context(MAP_LINEAR_RULES)?,
        )?;
        for (i, r) in rules.iter().enumerate() {
            table.set(i as u32, r, 0)?;
        }
        let mut count: Array<_, u32> = Array::try_from(
            self.linear
                .map_mut(MAP_LINEAR_COUNT)
                .context(MAP_LINEAR_COUNT)?,
        )?;
        count.set(0, counts[0], 0)?;
        count.set(1, counts[1], 0)?;
        Ok(())
    }

    fn program(&self, prog: Prog) -> anyhow::Result<&SchedClassifier> {
        let (ebpf, name) = match prog {
            Prog::Datapath => (&self.datapath, PROG_DATAPATH),
            Prog::Floor => (&self.floor, PROG_FLOOR),
            Prog::Linear => (&self.linear, PROG_LINEAR),
        };
        Ok(ebpf.program(name).context(name)?.try_into()?)
    }

    /// Mean ns per run of each frame, each run `repeat` times.
    pub fn time(&self, prog: Prog, frames: &[Frame], repeat: u32) -> anyhow::Result<Vec<f64>> {
        let p = self.program(prog)?;
        frames
            .iter()
            .map(|f| {
                let r = p.test_run(TestRunOptions {
                    data_in: Some(&f.data),
                    ctx_in: Some(&f.ctx),
                    repeat,
                    ..Default::default()
                })?;
                Ok(r.duration.as_nanos() as f64)
            })
            .collect()
    }

    /// The data path's decision for `frame`, from the record a `route get` test run makes
    /// (a nonce in `cb[0]` and the marks beside it; the program is attached nowhere, so no
    /// other packet writes a record).
    pub fn decide(&mut self, frame: &Frame) -> anyhow::Result<Decided> {
        self.nonce += 1;
        let nonce = self.nonce;
        let mut ctx = frame.ctx;
        ctx[CTX_CB0..CTX_CB0 + 4].copy_from_slice(&nonce.to_ne_bytes());
        for (i, word) in GET_MAGIC.iter().enumerate() {
            let at = CTX_CB0 + 4 * (i + 1);
            ctx[at..at + 4].copy_from_slice(&word.to_ne_bytes());
        }
        let r = self.program(Prog::Datapath)?.test_run(TestRunOptions {
            data_in: Some(&frame.data),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        })?;
        let records: PerCpuArray<_, Decision> =
            PerCpuArray::try_from(self.datapath.map(MAP_DECISION).context(MAP_DECISION)?)?;
        let d = records
            .get(&0, 0)?
            .iter()
            .find(|d| d.nonce == nonce)
            .copied()
            .with_context(|| format!("no decision record with nonce {nonce}"))?;
        Ok(Decided {
            priority: (d.matched != 0).then_some(d.priority),
            verdict: r.return_value as i32,
        })
    }
}

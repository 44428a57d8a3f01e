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
    route::{
        Decision, FAMILY_V4, FAMILY_V6, GET_MAGIC, MAP_DECISION, MAP_RULES, MAP_RULES_V4,
        PROG_DATAPATH, RuleMatch,
    },
};
use pktpath_core::{
    datapath::{
        frame::{self, FrameOptions},
        policy::Interfaces,
        tables::DatapathMaps,
        tuples::{self, Tables},
    },
    loader::{self, GlobalValue, Object},
    route::model,
};

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

/// The data path's fields of a reference-model header, on the interfaces `links`.
pub fn fields(h: &model::PacketFields, links: &Interfaces) -> tuples::PacketFields {
    let bytes = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(a) => {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&a.octets());
            x
        }
        std::net::IpAddr::V6(a) => a.octets(),
    };
    tuples::PacketFields {
        family: if h.src.is_ipv4() {
            FAMILY_V4
        } else {
            FAMILY_V6
        },
        iif: links.links[h.iif.0].ifindex,
        src: bytes(h.src),
        dst: bytes(h.dst),
        proto: h.proto,
        sport: h.sport.unwrap_or(0),
        dport: h.dport.unwrap_or(0),
        dscp: h.dscp,
        mark: h.mark,
    }
}

impl Frame {
    pub fn new(p: &tuples::PacketFields) -> Self {
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
    /// Ids of the data path object's maps, and whether each is a rule hash.
    map_ids: Vec<(u32, bool)>,
    nonce: u32,
}

/// Loads an object and its classifier program.
fn load(object: Object, prog: &str, globals: &[(&str, GlobalValue)]) -> anyhow::Result<Ebpf> {
    let mut ebpf = loader::load(object, globals).with_context(|| format!("load {object:?}"))?;
    let p: &mut SchedClassifier = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog}"))?
        .try_into()?;
    p.load().with_context(|| format!("verifier on {prog}"))?;
    Ok(ebpf)
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
        let info_path = std::path::Path::new("/proc/self/fdinfo").join(entry.file_name());
        let Ok(info) = std::fs::read_to_string(&info_path) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) {
            maps.insert(id as u32, memlock);
        }
    }
    Ok(maps)
}

impl Programs {
    /// Loads the data path, the floor (redirecting to ifindex 1) and the linear scan.
    pub fn load() -> anyhow::Result<Self> {
        let before = open_maps()?;
        let mut datapath = load(Object::Datapath, PROG_DATAPATH, &[])?;
        let mut map_ids = Vec::new();
        for id in open_maps()?
            .into_keys()
            .filter(|id| !before.contains_key(id))
        {
            let info = MapInfo::from_id(id).with_context(|| format!("map {id}"))?;
            let name = info.name_as_str().unwrap_or_default();
            map_ids.push((id, name == MAP_RULES || name == MAP_RULES_V4));
        }
        anyhow::ensure!(
            map_ids.iter().filter(|(_, rules)| *rules).count() == 2,
            "the data path's rule maps were not found among its maps {map_ids:?}"
        );
        let maps = DatapathMaps::from_ebpf(&mut datapath)?;
        let floor = load(
            Object::Floor,
            PROG_FLOOR,
            &[(GLOBAL_FLOOR_IFINDEX, GlobalValue::U32(1))],
        )?;
        let linear = load(Object::Linear, PROG_LINEAR, &[])?;
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

    /// Bytes the kernel charges for the data path's maps: all of them, and the two rule
    /// hashes alone.
    pub fn map_bytes(&self) -> anyhow::Result<(u64, u64)> {
        let open = open_maps()?;
        let (mut all, mut rules) = (0, 0);
        for (id, is_rules) in &self.map_ids {
            let bytes = *open
                .get(id)
                .with_context(|| format!("data path map {id} is no longer open"))?;
            all += bytes;
            if *is_rules {
                rules += bytes;
            }
        }
        Ok((all, rules))
    }

    /// Writes the linear scan's rules.
    pub fn set_linear(&mut self, rules: &[RuleMatch]) -> anyhow::Result<()> {
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
        count.set(0, rules.len() as u32, 0)?;
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

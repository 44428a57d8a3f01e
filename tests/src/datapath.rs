//! The data path program loaded on its own (not attached) and run on synthesized frames
//! with BPF_PROG_TEST_RUN: what the classification and odd-frame tests share.

use aya::{
    maps::Array,
    programs::{ProgramError, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use pktpath_common::route::MAP_XDP_EGRESS;
use pktpath_core::{
    loader::{self, Object},
    route::datapath::{loops::LoopKind, tables::DatapathMaps},
};

/// `struct __sk_buff` is 192 bytes; `mark` is at offset 8.
pub const SKB_CTX: usize = 192;
/// The verdicts the data path returns (`TC_ACT_*` of linux/pkt_cls.h).
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
/// The XDP verdicts (`XDP_*` of linux/bpf.h).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

/// A loaded data path program and its maps.
pub struct Datapath {
    pub ebpf: aya::Ebpf,
    pub maps: DatapathMaps,
    /// The variant of the programs loaded.
    pub kind: LoopKind,
}

/// The program variants the running kernel loads, as `pktpath doctor` finds: the
/// `bpf_loop` one always, the `may_goto` one where the probe says so.
pub fn loop_kinds() -> Vec<LoopKind> {
    let mut kinds = vec![LoopKind::BpfLoop];
    if pktpath_core::doctor::probe("may_goto").is_ok() {
        kinds.push(LoopKind::MayGoto);
    }
    kinds
}

impl Datapath {
    /// Loads the data path object and its program, the variant `route attach` would load
    /// (panics if the verifier refuses it).
    pub fn load() -> Self {
        Self::load_kind(LoopKind::for_kernel().expect("the loop variant"))
    }

    /// As [`Datapath::load`], the program of variant `kind`.
    pub fn load_kind(kind: LoopKind) -> Self {
        Self::try_load_kind(kind)
            .unwrap_or_else(|e| panic!("verifier rejected the data path ({kind:?}): {e:?}"))
    }

    /// As [`Datapath::load_kind`], with the kernel's refusal as an error.
    pub fn try_load_kind(kind: LoopKind) -> Result<Self, ProgramError> {
        let mut ebpf = loader::load(Object::Datapath, &[]).expect("load datapath object");
        let prog: &mut SchedClassifier = ebpf
            .program_mut(kind.tc_program())
            .unwrap()
            .try_into()
            .unwrap();
        prog.load()?;
        let maps = DatapathMaps::from_ebpf(&mut ebpf).expect("maps");
        Ok(Self { ebpf, maps, kind })
    }

    /// Loads the XDP program too, on the same maps (panics if the verifier refuses it).
    pub fn load_xdp(&mut self) {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(self.kind.xdp_program())
            .unwrap()
            .try_into()
            .unwrap();
        prog.load()
            .unwrap_or_else(|e| panic!("verifier rejected the XDP program: {e:?}"));
    }

    /// Lets the XDP program redirect into `ifindexes` (as attach does for devices that
    /// take XDP frames).
    pub fn allow_xdp_egress(&mut self, ifindexes: &[u32]) {
        let mut map: Array<_, u32> = self
            .ebpf
            .map_mut(MAP_XDP_EGRESS)
            .expect("the XDP egress map")
            .try_into()
            .expect("an array");
        for &i in ifindexes {
            map.set(i, 1, 0).expect("allow an XDP egress");
        }
    }

    /// The loaded XDP program ([`Datapath::load_xdp`]).
    pub fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(self.kind.xdp_program())
            .expect("the XDP program")
            .try_into()
            .expect("an XDP program")
    }

    /// Runs the XDP program on `frame` (arriving on loopback); returns (verdict, frame after).
    pub fn run_xdp(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut data_out = vec![0u8; frame.len() + 64];
        let r = self
            .xdp()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut data_out),
                repeat: 1,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("XDP test run on a {}-byte frame: {e:?}", frame.len()));
        data_out.truncate(r.data_size_out as usize);
        (r.return_value, data_out)
    }

    /// How many instructions the verifier processed to accept the program (None on a
    /// kernel that does not say).
    pub fn verified_instructions(&self) -> Option<u32> {
        self.program().info().ok()?.verified_instruction_count()
    }

    /// The loaded program.
    fn program(&self) -> &SchedClassifier {
        self.ebpf
            .program(self.kind.tc_program())
            .expect("the data path program")
            .try_into()
            .expect("a classifier")
    }

    /// Runs the program on `frame` with `mark`; returns (verdict, mark after, frame after).
    pub fn run(&self, frame: &[u8], mark: u32) -> (u32, u32, Vec<u8>) {
        self.try_run(frame, mark)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on a {}-byte frame: {e:?}", frame.len()))
    }

    /// As [`Datapath::run`], with the kernel's refusal of the test run as an error (it
    /// refuses frames too short for the headers their ethertype announces).
    pub fn try_run(&self, frame: &[u8], mark: u32) -> Result<(u32, u32, Vec<u8>), ProgramError> {
        let prog = self.program();
        let mut ctx_in = [0u8; SKB_CTX];
        ctx_in[8..12].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = [0u8; SKB_CTX];
        let mut data_out = vec![0u8; frame.len() + 64];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat: 1,
            ..Default::default()
        })?;
        data_out.truncate(r.data_size_out as usize);
        let mark_out = u32::from_ne_bytes(ctx_out[8..12].try_into().unwrap());
        Ok((r.return_value, mark_out, data_out))
    }
}

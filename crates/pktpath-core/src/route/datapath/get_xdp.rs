//! `route get --hook xdp`: what the XDP program does with one packet (BPF_PROG_TEST_RUN on
//! the pinned `prog_xdp`), and, when it passes the packet on, what the TC program then
//! does with it (as `route get` without the hook).
//!
//! As for TC (see `get`), the program notes its decision in `ROUTE_DECISION` when the run
//! carries a nonce: here in the frame's XDP metadata (`GET_MAGIC` and the nonce, 12 bytes
//! before the frame), which real frames do not carry. The run arrives on the given input
//! interface (`xdp_md.ingress_ifindex`) and counts like one packet where XDP decides it.

use aya::programs::{TestRunOptions, Xdp};
use aya_obj::programs::XdpAttachType;
use pktpath_common::route::GET_MAGIC;
use serde::Serialize;

use super::{
    attach::{AttachError, Attached},
    get::{
        Explanation, SKB_CTX, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, frame_to, input, nonce,
        prog_err, run_on_one_cpu,
    },
};
use crate::{
    route::packet::{Ifindex, PacketFields},
    sys::SysError,
};

/// `XDP_*` verdicts (linux/bpf.h).
const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
/// `struct xdp_md`: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex.
const XDP_MD: usize = 24;
const META: usize = 12;

/// What the XDP hook does with a packet, and TC after it when XDP passes it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct XdpExplanation {
    /// XDP's decision: `verdict` is `redirect`, `drop`, `pass to tc` or `aborted`.
    pub xdp: Explanation,
    /// The TC program's, for a packet XDP passed on.
    pub tc: Option<Explanation>,
}

impl Attached {
    /// Runs the pinned XDP program on a frame with `fields` arriving on `iif`, then (when
    /// it passes the packet on) the TC program, and says what they did.
    pub fn explain_xdp(
        &self,
        iif: &str,
        fields: &PacketFields<Ifindex>,
        ttl: u8,
    ) -> Result<XdpExplanation, AttachError> {
        let input = input(iif)?;
        let path = self.layout.xdp_prog();
        if !path.exists() {
            return Err(AttachError::NoXdp {
                dir: self.layout.pin_dir.display().to_string(),
            });
        }
        let prog = Xdp::from_pin(&path, XdpAttachType::Interface).map_err(prog_err(&format!(
            "opening the pinned XDP program {}",
            path.display()
        )))?;
        let decisions = self.decisions()?;
        let p = PacketFields {
            iif: input.ifindex,
            // XDP sees no mark.
            mark: 0,
            ..*fields
        };
        let frame = frame_to(&p, &input, ttl);
        for _attempt in 0..5 {
            let active = self.active_file()?;
            let nonce = nonce();
            let mut data_in = Vec::with_capacity(META + frame.len());
            for w in [GET_MAGIC[0], GET_MAGIC[1], nonce] {
                data_in.extend_from_slice(&w.to_ne_bytes());
            }
            data_in.extend_from_slice(&frame);
            let mut ctx_in = [0u8; XDP_MD];
            ctx_in[0..4].copy_from_slice(&(META as u32).to_ne_bytes());
            ctx_in[4..8].copy_from_slice(&(data_in.len() as u32).to_ne_bytes());
            ctx_in[12..16].copy_from_slice(&input.ifindex.to_ne_bytes());
            let mut data_out = vec![0u8; data_in.len() + 64];
            let opts = TestRunOptions {
                data_in: Some(&data_in),
                data_out: Some(&mut data_out),
                ctx_in: Some(&ctx_in),
                repeat: 1,
                ..Default::default()
            };
            let (ret, decision) = run_on_one_cpu(&prog, opts, &decisions, "the XDP program")?;
            if decision.nonce != nonce || self.maps.serial()? != active.generation {
                continue; // another packet or an apply came between: run again
            }
            // The output starts at the metadata.
            data_out.truncate(ret.data_size_out as usize);
            let out = data_out.get(META..).unwrap_or_default();
            let as_tc = match ret.return_value {
                XDP_PASS => TC_ACT_OK,
                XDP_DROP => TC_ACT_SHOT,
                XDP_REDIRECT => TC_ACT_REDIRECT,
                _ => -1,
            };
            let mut xdp = self.describe(&active, &p, &decision, as_tc, out, &[0u8; SKB_CTX]);
            xdp.verdict = match ret.return_value {
                XDP_PASS => "pass to tc".to_owned(),
                XDP_DROP => "drop".to_owned(),
                XDP_REDIRECT => "redirect".to_owned(),
                XDP_ABORTED => "aborted".to_owned(),
                other => format!("xdp verdict {other}"),
            };
            let tc = if ret.return_value == XDP_PASS {
                Some(self.explain(iif, fields, ttl)?)
            } else {
                None
            };
            return Ok(XdpExplanation { xdp, tc });
        }
        Err(AttachError::Sys(SysError::io(
            "reading the XDP program's decision",
            std::io::Error::other(
                "another packet or an apply overwrote it five times in a row; try again",
            ),
        )))
    }
}

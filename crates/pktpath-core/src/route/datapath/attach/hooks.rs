//! The two ways into TC hooks ([`TcMode`]) behind one type: how one hook is attached, how
//! to tell whether a hook is still in place, and where it is recorded (TCX: a link pinned
//! in the pin directory; netlink: a cls_bpf filter, and the clsact qdisc added for it, in
//! `attach.json`).

use aya::programs::{
    LinkOrder, SchedClassifier,
    links::FdLink,
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions},
};

use super::{
    AttachError, Direction, Layout, TcMode, filter_present, pinned_prog_id,
    state::{AttachState, NlFilter, NlQdisc},
};
use crate::sys::{iface, tc, tcxquery};

/// One hook: an interface name and a direction.
pub(super) type Hook = (String, Direction);

/// The TC backend of the data path at `layout`.
pub(super) struct TcBackend<'a> {
    layout: &'a Layout,
    mode: TcMode,
}

impl<'a> TcBackend<'a> {
    pub(super) fn new(layout: &'a Layout, mode: TcMode) -> Self {
        Self { layout, mode }
    }

    /// Splits `hooks` into those still running the pinned program and those missing (TCX:
    /// whether the link pin exists and the interface's hook runs the program; netlink:
    /// whether the recorded filter is on its hook with the pinned program's id).
    pub(super) fn in_place(
        &self,
        state: &AttachState,
        hooks: Vec<Hook>,
    ) -> Result<(Vec<Hook>, Vec<Hook>), AttachError> {
        let prog_id = match self.mode {
            TcMode::Tcx | TcMode::Netlink => pinned_prog_id(self.layout)?,
            TcMode::Tc => return Err(self.by_hand()),
        };
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for (name, d) in hooks {
            let found = match self.mode {
                // The pin of a link outlives the interface it was on: an interface deleted
                // and created again under its name has a hook without the program.
                TcMode::Tcx => {
                    self.layout.link(&name, d).exists()
                        && tcxquery::tcx_prog_ids(iface::index(&name)?, d == Direction::Ingress)?
                            .contains(&prog_id)
                }
                TcMode::Netlink => match state
                    .filters
                    .iter()
                    .find(|f| f.interface == name && f.direction == d)
                {
                    Some(f) => filter_present(f, prog_id)?,
                    None => false,
                },
                TcMode::Tc => return Err(self.by_hand()),
            };
            if found {
                present.push((name, d));
            } else {
                missing.push((name, d));
            }
        }
        Ok((present, missing))
    }

    /// Attaches `prog` on hook `dir` of `name` and records it so that it outlives this
    /// process and detach finds it (TCX: the link pinned; netlink: the filter, replacing a
    /// stale record of the same hook, written to `attach.json`).
    pub(super) fn attach(
        &self,
        prog: &mut SchedClassifier,
        state: &mut AttachState,
        name: &str,
        dir: Direction,
    ) -> Result<(), AttachError> {
        match self.mode {
            TcMode::Tcx => {
                // A link left from an interface deleted since: its pin goes, and the link
                // with it (nothing else holds it).
                let stale = self.layout.link(name, dir);
                if stale.exists() {
                    std::fs::remove_file(&stale)
                        .map_err(super::io_err("remove stale link pin", &stale))?;
                }
                attach_link(prog, self.layout, name, dir)
            }
            TcMode::Netlink => {
                state
                    .filters
                    .retain(|f| !(f.interface == name && f.direction == dir));
                attach_filter(prog, self.layout, name, dir, state)
            }
            TcMode::Tc => Err(self.by_hand()),
        }
    }

    /// Hooks made by hand are the operator's.
    fn by_hand(&self) -> AttachError {
        AttachError::ByHand {
            dir: self.layout.pin_dir.display().to_string(),
        }
    }
}

/// Attaches `prog` on hook `dir` of `iface` and takes the link out of the program, so that
/// dropping the program does not detach it.
fn attach_and_take(
    prog: &mut SchedClassifier,
    iface: &str,
    dir: Direction,
    options: TcAttachOptions,
    what: &str,
) -> Result<SchedClassifierLink, AttachError> {
    let err = |source| AttachError::Program {
        what: what.to_owned(),
        source,
    };
    let id = prog
        .attach_with_options(iface, dir.attach_type(), options)
        .map_err(err)?;
    prog.take_link(id).map_err(err)
}

fn attach_link(
    prog: &mut SchedClassifier,
    layout: &Layout,
    iface: &str,
    dir: Direction,
) -> Result<(), AttachError> {
    let what = format!("TCX {} attach on {iface}", dir.name());
    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
    let link = attach_and_take(prog, iface, dir, options, &what)?;
    let fd: FdLink = link.try_into().map_err(|source| AttachError::Link {
        what: format!("{what}: the link is not a TCX link"),
        source,
    })?;
    let path = layout.link(iface, dir);
    fd.pin(&path).map_err(|source| AttachError::Pin {
        what: format!(
            "pinning the {} link of {iface} at {}",
            dir.name(),
            path.display()
        ),
        source,
    })?;
    Ok(())
}

/// Adds the clsact qdisc to `name` unless it has one, then a cls_bpf direct-action filter
/// running `prog` on hook `dir` (priority and handle picked by the kernel); both are
/// recorded in `state`.
fn attach_filter(
    prog: &mut SchedClassifier,
    layout: &Layout,
    name: &str,
    dir: Direction,
    state: &mut AttachState,
) -> Result<(), AttachError> {
    let ifindex = iface::index(name)?;
    // Recorded before it is added, so that a writer killed in between is rolled back
    // (detach removes a recorded qdisc only when no filter is left on it).
    let qdisc = NlQdisc {
        interface: name.to_owned(),
        ifindex,
    };
    let recorded = !state.clsact_created.contains(&qdisc);
    if recorded {
        state.clsact_created.push(qdisc);
        state.write(layout)?;
    }
    if !tc::add_clsact(ifindex)? && recorded {
        state.clsact_created.pop();
        state.write(layout)?;
    }
    let what = format!("netlink clsact {} attach on {name}", dir.name());
    let options = TcAttachOptions::Netlink(NlOptions::default());
    let link = attach_and_take(prog, name, dir, options, &what)?;
    let (priority, handle) = match (link.priority(), link.handle()) {
        (Ok(p), Ok(h)) => (p, u32::from(h)),
        (Err(source), _) | (_, Err(source)) => return Err(AttachError::Program { what, source }),
    };
    // Dropping the link would delete the filter: it must outlive this process, and is
    // found again through the state file.
    std::mem::forget(link);
    state.filters.push(NlFilter {
        interface: name.to_owned(),
        ifindex,
        direction: dir,
        priority,
        handle,
    });
    // A writer killed before this write is rolled back by program id (see `recover`).
    state.write(layout)
}

//! Removing an attached data path: what [`detach`] does, and what the next writer does to
//! finish a detach or roll back an attach that a killed writer left (see `recover`).

use std::path::{Path, PathBuf};

use aya::programs::links::PinnedLink;
use serde::Serialize;

use super::{
    AttachError, CONFIG_FILE, Direction, Layout, TcMode, filter_present, io_err,
    lock::Writer,
    pinned_prog_id,
    state::{AttachState, Phase},
};
use crate::{
    route::datapath::slow_path,
    sys::{
        SysError,
        caps::{Capability, Privileges},
        iface, tc,
    },
};

/// What [`detach`] removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DetachReport {
    pub pin_dir: String,
    pub mode: TcMode,
    /// The hooks the program was removed from (`ifname/direction`).
    pub links: Vec<String>,
    pub pins: usize,
    /// Netlink mode: interfaces whose clsact qdisc (added by attach) was removed.
    pub clsact_removed: Vec<String>,
    /// The slow path's ip rules and routes removed, and the tables they were in.
    pub slow_path: slow_path::Removed,
    pub slow_path_tables: Vec<u32>,
    /// What was done about writers killed before they finished (see [`Writer::lock`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
}

/// Removes the data path attached at the writer's layout: links first (the program stops
/// running on every interface), then the program and map pins, the state files and both
/// directories.
pub fn detach(writer: &Writer) -> Result<DetachReport, AttachError> {
    let layout = writer.layout();
    let pin_dir = &layout.pin_dir;
    let state_dir = layout.state_dir();
    if !pin_dir.exists() {
        return Err(AttachError::NotAttached {
            dir: pin_dir.display().to_string(),
        });
    }
    if !state_dir.join(CONFIG_FILE).exists() {
        return Err(AttachError::Foreign {
            dir: pin_dir.display().to_string(),
            state: state_dir.join(CONFIG_FILE).display().to_string(),
        });
    }
    let mut state = AttachState::read(layout)?;
    if !state.slow_path.is_empty() && !Privileges::current().has(Capability::NetAdmin) {
        // Refused before anything changes: the kernel would refuse to remove the rules.
        return Err(SysError::io(
            "removing the slow path's ip rules and routes",
            std::io::Error::from_raw_os_error(libc::EPERM),
        )
        .into());
    }
    // From here a killed detach is finished by the next writer.
    state.phase = Phase::Detaching;
    state.write(layout)?;
    let mut report = remove_all(layout, &state)?;
    report.recovered = writer.recovered().to_vec();
    Ok(report)
}

/// Removes whatever of the data path at `layout` exists: hooks (recorded filters, and in
/// netlink mode any filter on the recorded interfaces running the pinned program), pins,
/// the state directory, and the state root once empty.
pub(super) fn remove_all(
    layout: &Layout,
    state: &AttachState,
) -> Result<DetachReport, AttachError> {
    let pin_dir = &layout.pin_dir;
    let mut report = DetachReport {
        pin_dir: pin_dir.display().to_string(),
        mode: state.mode,
        links: Vec::new(),
        pins: 0,
        clsact_removed: Vec::new(),
        slow_path: slow_path::Removed::default(),
        slow_path_tables: state.slow_path.tables(),
        recovered: Vec::new(),
    };
    // First: what a user without CAP_NET_ADMIN cannot remove fails before anything went.
    report.slow_path = slow_path::remove(&state.slow_path)?;
    if state.mode == TcMode::Netlink {
        detach_filters(layout, state, &mut report)?;
    }
    if state.mode == TcMode::Tc {
        // Attached by hand: the filters and the pins tc made are the operator's (the pin
        // directory may hold other objects' maps); pktpath forgets the data path.
        return remove_state(layout, report);
    }
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(pin_dir) {
        Ok(dir) => dir
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_err("list", pin_dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err("list", pin_dir)(e)),
    };
    entries.sort();
    // Links first, explicitly detached (not only unpinned), so no packet meets a program
    // whose maps are going away.
    for path in entries.iter().filter(|p| is_link_pin(p)) {
        let link = PinnedLink::from_pin(path).map_err(|source| AttachError::Link {
            what: format!("opening the pinned link {}", path.display()),
            source,
        })?;
        let fd = link.unpin().map_err(io_err("unpin link", path))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let name = name.trim_start_matches("link_");
        report.links.push(match name.rsplit_once('_') {
            Some((iface, dir)) => format!("{iface}/{dir}"),
            None => name.to_owned(),
        });
        aya::programs::links::Link::detach(fd).map_err(|source| AttachError::Program {
            what: format!("detaching the link {}", path.display()),
            source,
        })?;
        report.pins += 1;
    }
    for path in entries.iter().filter(|p| !is_link_pin(p)) {
        std::fs::remove_file(path).map_err(io_err("unpin", path))?;
        report.pins += 1;
    }
    if pin_dir.exists() {
        std::fs::remove_dir(pin_dir).map_err(io_err("remove pin directory", pin_dir))?;
    }
    remove_state(layout, report)
}

/// Removes the state directory of the data path at `layout`.
fn remove_state(layout: &Layout, report: DetachReport) -> Result<DetachReport, AttachError> {
    let state_dir = layout.state_dir();
    match std::fs::remove_dir_all(&state_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err("remove state directory", &state_dir)(e));
        }
        _ => {}
    }
    Ok(report)
}

/// Netlink mode: deletes the filters running the pinned program on the interfaces attach
/// recorded (those it recorded, and any it added before it was killed), then each clsact
/// qdisc attach added, unless a filter someone else added is still on it.
fn detach_filters(
    layout: &Layout,
    state: &AttachState,
    report: &mut DetachReport,
) -> Result<(), AttachError> {
    // Filters go before the program pin: without that pin, none of ours is left.
    if !layout.prog().exists() {
        return detach_qdiscs(state, report);
    }
    let prog_id = pinned_prog_id(layout)?;
    for f in &state.filters {
        report
            .links
            .push(format!("{}/{}", f.interface, f.direction.name()));
        if filter_present(f, prog_id)? {
            tc::del_filter(
                f.ifindex,
                f.direction == Direction::Egress,
                f.priority,
                f.handle,
            )?;
        } else {
            log::info!(
                "the {} filter on {} is already gone",
                f.direction.name(),
                f.interface
            );
        }
    }
    for name in &state.interfaces {
        let Ok(ifindex) = iface::index(name) else {
            continue;
        };
        for egress in [false, true] {
            for x in tc::filters(ifindex, egress)?
                .iter()
                .filter(|x| x.kind == "bpf" && x.prog_id == Some(prog_id))
            {
                tc::del_filter(ifindex, egress, x.priority, x.handle)?;
                let dir = if egress { "egress" } else { "ingress" };
                report.links.push(format!("{name}/{dir}"));
            }
        }
    }
    detach_qdiscs(state, report)
}

fn detach_qdiscs(state: &AttachState, report: &mut DetachReport) -> Result<(), AttachError> {
    for q in &state.clsact_created {
        if iface::index(&q.interface).ok() != Some(q.ifindex) {
            continue; // the device (and its qdisc) went away
        }
        let others = tc::filters(q.ifindex, false)?.len() + tc::filters(q.ifindex, true)?.len();
        if others > 0 {
            log::warn!(
                "keeping the clsact qdisc on {}: {others} filters not added by pktpath are on it",
                q.interface
            );
            continue;
        }
        tc::del_clsact(q.ifindex)?;
        report.clsact_removed.push(q.interface.clone());
    }
    Ok(())
}

fn is_link_pin(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
}

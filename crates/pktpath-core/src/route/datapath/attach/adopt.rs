//! A data path attached by hand: the object of `pktpath route object` loaded with
//! `tc filter add ... bpf direct-action obj FILE`, its maps pinned by name by tc (libbpf)
//! under the pin directory (`/sys/fs/bpf/tc/globals`). [`adopt`] takes it in: it checks
//! the pinned maps are this pktpath's, records the static configuration in a state
//! directory as `route attach` does (mode [`TcMode::Tc`]), fills the next hops, loads the
//! decision taps' program (tc loads only the program it attaches), and says
//! which configured hooks run no filter of the object. From then on `apply`, `show`,
//! `stats` and `get` work on it as on an attached one; the filters stay the operator's.

use std::path::Path;

use aya::{maps::MapInfo, programs::ProgramInfo};
use pktpath_common::route::{MAP_STATE, PROG_DATAPATH, PROG_DATAPATH_OLD};

use super::{
    AttachError, CONFIG_FILE, Direction, TcMode, fill_tables, io_err, load_tap,
    lock::Writer,
    open, resolve, same_topology,
    state::{AttachState, create_private_dir, write_atomic},
    wanted_hooks,
};
use crate::{
    loader::{self, Object},
    route::datapath::{object, policy::Interfaces, slow_path, tables::TableError},
    route::{compile::Topology, config::Source},
    sys::tc,
};

/// What [`adopt`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Whether this call took the data path in (false: it was already).
    pub new: bool,
    /// Configured hooks (`ifname/direction`) that run no filter of the object.
    pub unhooked: Vec<String>,
}

/// Takes in the data path attached by hand at the writer's pin directory, for the static
/// configuration at `config`; a data path taken in before must have the same one.
pub fn adopt(writer: &Writer, config: &Path) -> Result<Adopted, AttachError> {
    let layout = writer.layout();
    let dir = layout.pin_dir.display().to_string();
    let source = Source::read(config)?;
    let topology = Topology::from_source(&source)?;
    let ifaces = resolve(&topology)?;
    let state_config = layout.state(CONFIG_FILE);
    let new = !state_config.exists();
    if new {
        check_maps(&layout.pin_dir)?;
    } else if !same_topology(&open(layout)?.topology, &topology) {
        return Err(AttachError::OtherConfig { dir });
    } else if AttachState::read(layout)?.mode != TcMode::Tc {
        // Attached by `route attach`: its hooks are links or filters of its own.
        return Ok(Adopted::default());
    }
    let unhooked = check_hooks(layout.pin_dir.as_path(), &topology, &ifaces)?;
    if new {
        let state_dir = layout.state_dir();
        create_private_dir(&state_dir).map_err(io_err("create state directory", &state_dir))?;
        let slow = slow_path::plan(&topology, &ifaces);
        slow_path::check_free(&slow, &topology.file)?;
        let mut state = AttachState::new(TcMode::Tc);
        state.interfaces = topology.interfaces.iter().map(|i| i.name.clone()).collect();
        state.slow_path = slow;
        state.write(layout)?;
        // Recorded first: `route detach` removes it (this taking in has no rollback of its
        // own; a failure from here on leaves a data path detach clears).
        slow_path::install(&state.slow_path)?;
        fill_tables(layout, &topology, &ifaces)?;
        load_tap_into(&layout.pin_dir)?;
        // Last: the data path counts as taken in once its configuration is there.
        write_atomic(&state_config, source.text())?;
    }
    Ok(Adopted { new, unhooked })
}

/// Each map the object pins must be there, as this pktpath's object defines it (a map
/// pinned by an older object has another size: tc would refuse to attach this one, and
/// apply would write what it does not read).
fn check_maps(pin_dir: &Path) -> Result<(), AttachError> {
    let dir = pin_dir.display().to_string();
    for def in object::pinned_maps()? {
        let path = pin_dir.join(&def.name);
        if !path.exists() {
            return Err(AttachError::NoHandMaps { dir, map: def.name });
        }
        let info = MapInfo::from_pin(&path).map_err(|source| {
            AttachError::Table(TableError::Pin {
                path: path.display().to_string(),
                source,
            })
        })?;
        let found = (info.key_size(), info.value_size(), info.max_entries());
        if found != (def.key_size, def.value_size, def.max_entries) {
            return Err(AttachError::OlderMaps {
                dir,
                map: def.name,
                found: format!("{}/{}/{}", found.0, found.1, found.2),
                want: format!("{}/{}/{}", def.key_size, def.value_size, def.max_entries),
            });
        }
    }
    Ok(())
}

/// Loads the tap program on the pinned maps and puts it where the data path tail-calls it,
/// as `route attach` does: tc loads only the program it attaches, and without the tap
/// `pktpath trace --route-pin-dir` would hear no decisions. The pinned program array keeps
/// it loaded.
fn load_tap_into(pin_dir: &Path) -> Result<(), AttachError> {
    let paths: Vec<(String, std::path::PathBuf)> = object::pinned_maps()?
        .into_iter()
        .map(|m| {
            let path = pin_dir.join(&m.name);
            (m.name, path)
        })
        .collect();
    let mut loader = aya::EbpfLoader::new();
    for (name, path) in &paths {
        // Every one exists (`check_maps`): aya opens it instead of creating a map.
        loader.map_pin_path(name.as_str(), path.as_path());
    }
    let mut ebpf = loader::load_with_loader(loader, Object::Datapath, None, &[], &[])?;
    load_tap(&mut ebpf)
}

/// The loaded data path programs (`pktpath_tc`) that use the maps pinned at `pin_dir`:
/// one per `tc filter add ... obj`.
pub(crate) fn hand_programs(pin_dir: &Path) -> Vec<ProgramInfo> {
    let state_map = pin_dir.join(MAP_STATE);
    let Ok(map_id) = MapInfo::from_pin(&state_map).map(|i| i.id()) else {
        return Vec::new();
    };
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            [Some(PROG_DATAPATH), Some(PROG_DATAPATH_OLD)].contains(&p.name_as_str())
                && p.map_ids()
                    .ok()
                    .flatten()
                    .is_some_and(|ids| ids.contains(&map_id))
        })
        .collect()
}

/// The configured hooks where no filter runs a program using the pinned maps; an error for
/// such a filter attached without direct-action (its return codes would be read as
/// classids, not actions).
fn check_hooks(
    pin_dir: &Path,
    topology: &Topology,
    ifaces: &Interfaces,
) -> Result<Vec<String>, AttachError> {
    let ours: Vec<u32> = hand_programs(pin_dir).iter().map(|p| p.id()).collect();
    let mut unhooked = Vec::new();
    for (name, d) in wanted_hooks(topology) {
        let Some(i) = topology.interfaces.iter().position(|i| i.name == name) else {
            continue;
        };
        let ifindex = ifaces.links[i].ifindex;
        let filters = tc::filters(ifindex, d == Direction::Egress)?;
        let mine: Vec<_> = filters
            .iter()
            .filter(|f| f.prog_id.is_some_and(|id| ours.contains(&id)))
            .collect();
        if let Some(f) = mine.iter().find(|f| !f.direct_action) {
            return Err(AttachError::NotDirectAction {
                hook: format!("{name}/{}", d.name()),
                priority: f.priority,
            });
        }
        if mine.is_empty() {
            unhooked.push(format!("{name}/{}", d.name()));
        }
    }
    Ok(unhooked)
}

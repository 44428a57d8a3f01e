//! The data path object for iproute2: `pktpath route object` writes it, an operator attaches
//! it by hand with `tc filter add dev IF ingress bpf direct-action obj FILE`.
//!
//! It is the object pktpath embeds, with one difference: its maps say "pin by name". The
//! embedded object's map definitions carry a placeholder pinning value
//! ([`PIN_PLACEHOLDER`]) that aya reads as no pinning (`route attach` pins the maps itself
//! under its `--pin-dir`; tests load throwaway maps). Here that value is rewritten in the
//! object's BTF to libbpf's `LIBBPF_PIN_BY_NAME`, so that tc (through libbpf) pins each map
//! by name under `/sys/fs/bpf/tc/globals/`, and every interface the object is attached to
//! shares them. `pktpath route apply --pin-dir /sys/fs/bpf/tc/globals` fills them there.

use object::{Object as _, ObjectSection as _};
use pktpath_common::route::{PIN_BY_NAME, PIN_PLACEHOLDER};

use crate::{
    btf::{Btf, BtfError, Kind},
    loader::Object,
};

/// Where iproute2 (with libbpf) pins the maps of objects it loads for TC.
pub const TC_PIN_DIR: &str = "/sys/fs/bpf/tc/globals";

/// Why the object for tc could not be made (a pktpath built wrong: not a user error).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("the embedded data path object is not a readable ELF file")]
    Elf(#[from] object::Error),
    #[error("the embedded data path object has no .BTF section")]
    NoBtf,
    #[error("the embedded data path object's BTF is unreadable")]
    Btf(#[from] BtfError),
    #[error("the embedded data path object has no map with a pinning placeholder")]
    NoPinnedMaps,
}

/// The data path object with its maps pinned by name, and how many map definitions say so.
pub fn tc_object() -> Result<(Vec<u8>, usize), ObjectError> {
    let mut bytes = Object::Datapath.bytes().to_vec();
    let file = object::File::parse(&*bytes)?;
    let section = file.section_by_name(".BTF").ok_or(ObjectError::NoBtf)?;
    let (start, size) = section.file_range().ok_or(ObjectError::NoBtf)?;
    let (start, size) = (start as usize, size as usize);
    let btf = Btf::from_bytes(bytes[start..start + size].to_vec())?;
    let (maps, at) = placeholders(&btf)?;
    if maps == 0 {
        return Err(ObjectError::NoPinnedMaps);
    }
    for pos in at {
        bytes[start + pos..start + pos + 4].copy_from_slice(&PIN_BY_NAME.to_le_bytes());
    }
    Ok((bytes, maps))
}

/// A pinned map as the data path object defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub key_size: u32,
    /// For a map of maps: 4 (it holds map ids).
    pub value_size: u32,
    pub max_entries: u32,
}

/// The maps the data path object pins, read from the BTF of its `.maps` variables (a size
/// the definition does not give, a ring buffer's key say, is 0).
pub fn pinned_maps() -> Result<Vec<MapDef>, ObjectError> {
    let file = object::File::parse(Object::Datapath.bytes())?;
    let section = file.section_by_name(".BTF").ok_or(ObjectError::NoBtf)?;
    let btf = Btf::from_bytes(section.data()?.to_vec())?;
    let mut out = Vec::new();
    for id in 1..btf.len() as u32 {
        if btf.kind(id)? != Kind::Var {
            continue;
        }
        let def = btf.strip(btf.target(id)?)?;
        if btf.kind(def)? != Kind::Struct {
            continue;
        }
        let members = btf.members(def)?;
        if !members.iter().any(|m| m.name == "pinning") {
            continue;
        }
        // Each member is `*const T`: the value is T's size, or an array's length.
        let target = |name: &str| -> Result<Option<u32>, BtfError> {
            match members.iter().find(|m| m.name == name) {
                Some(m) => Ok(Some(btf.target(m.type_id)?)),
                None => Ok(None),
            }
        };
        let size = |name: &str| -> Result<u32, BtfError> {
            target(name)?.map_or(Ok(0), |t| btf.size_of(t))
        };
        let max_entries = match target("max_entries")? {
            Some(t) => btf.array_len(t)?.0,
            None => 0,
        };
        // `values: [*const Inner; 0]`, the inner map template of a map of maps.
        let value_size = if members.iter().any(|m| m.name == "values") {
            4
        } else {
            size("value")?
        };
        out.push(MapDef {
            name: btf.type_name(id)?.to_owned(),
            key_size: size("key")?,
            value_size,
            max_entries,
        });
    }
    Ok(out)
}

/// How many maps (`.maps` variables) have a definition (a struct with a `pinning` member)
/// whose pinning is the placeholder, and where the placeholder's array lengths sit in the
/// blob (maps of one type share a definition, and definitions may share one array type).
fn placeholders(btf: &Btf) -> Result<(usize, Vec<usize>), BtfError> {
    let mut defs = Vec::new();
    let mut at = Vec::new();
    for id in 1..btf.len() as u32 {
        if btf.kind(id)? != Kind::Struct {
            continue;
        }
        for m in btf.members(id)? {
            // `pinning: *const [i32; N]`: N is the value (see pktpath_ebpf::pinned).
            if m.name != "pinning" || btf.kind(m.type_id)? != Kind::Ptr {
                continue;
            }
            let array = btf.target(m.type_id)?;
            if btf.kind(array)? != Kind::Array {
                continue;
            }
            let (n, pos) = btf.array_len(array)?;
            if n == PIN_PLACEHOLDER {
                defs.push(id);
                if !at.contains(&pos) {
                    at.push(pos);
                }
            }
        }
    }
    let mut maps = 0;
    for id in 1..btf.len() as u32 {
        if btf.kind(id)? == Kind::Var && defs.contains(&btf.strip(btf.target(id)?)?) {
            maps += 1;
        }
    }
    Ok((maps, at))
}

#[cfg(test)]
mod tests {
    use pktpath_common::route::{
        MAP_ARENA, MAP_DECISION, MAP_IFACE_STATS, MAP_IFACE_STATS_HIGH, MAP_NEXTHOPS,
        MAP_POLICY_STATS, MAP_STATE, MAP_TREES, MAP_XDP_EGRESS, TAP_MAP, TAP_PROG_MAP,
        TAP_RINGS_MAP, TAP_SCRATCH_MAP, TAP_SOCKS_MAP, XDP_TAP_PROG_MAP, XDP_TAP_SCRATCH_MAP,
    };

    use super::*;

    #[test]
    fn the_pinned_map_definitions_are_read_with_their_sizes() {
        use pktpath_common::route::{GENERATIONS, MAX_CHUNKS, MAX_NEXTHOPS, NextHop, RouteState};
        let maps = pinned_maps().unwrap();
        assert_eq!(maps.len(), 17, "{maps:?}");
        let get = |name: &str| maps.iter().find(|m| m.name == name).unwrap().clone();
        assert_eq!(
            get(MAP_STATE),
            MapDef {
                name: MAP_STATE.into(),
                key_size: 4,
                value_size: size_of::<RouteState>() as u32,
                max_entries: 1,
            }
        );
        let nh = get(MAP_NEXTHOPS);
        assert_eq!(
            (nh.value_size, nh.max_entries),
            (size_of::<NextHop>() as u32, MAX_NEXTHOPS)
        );
        let arena = get(MAP_ARENA);
        assert_eq!(
            (arena.key_size, arena.value_size, arena.max_entries),
            (4, 4, GENERATIONS * MAX_CHUNKS)
        );
    }

    /// The `.maps` variables of an object and the pinning value of each.
    fn pinning_by_map(bytes: &[u8]) -> Vec<(String, u32)> {
        let file = object::File::parse(bytes).unwrap();
        let btf = Btf::from_bytes(
            file.section_by_name(".BTF")
                .unwrap()
                .data()
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        let mut out = Vec::new();
        for id in 1..btf.len() as u32 {
            if btf.kind(id).unwrap() != Kind::Var {
                continue;
            }
            let name = btf.type_name(id).unwrap().to_owned();
            let def = btf.strip(btf.target(id).unwrap()).unwrap();
            let Ok(members) = btf.members(def) else {
                continue;
            };
            for m in members.iter().filter(|m| m.name == "pinning") {
                let (n, _) = btf.array_len(btf.target(m.type_id).unwrap()).unwrap();
                out.push((name.clone(), n));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_map_of_the_tc_object_is_pinned_by_name_and_the_embedded_one_by_none() {
        let (bytes, maps) = tc_object().unwrap();
        let all = [
            MAP_ARENA,
            MAP_DECISION,
            MAP_IFACE_STATS,
            MAP_IFACE_STATS_HIGH,
            MAP_NEXTHOPS,
            MAP_POLICY_STATS,
            MAP_STATE,
            MAP_TREES,
            TAP_MAP,
            TAP_PROG_MAP,
            TAP_RINGS_MAP,
            TAP_SCRATCH_MAP,
            TAP_SOCKS_MAP,
            MAP_XDP_EGRESS,
            XDP_TAP_PROG_MAP,
            XDP_TAP_SCRATCH_MAP,
            "ROUTE_SCRATCH",
        ];
        // The two program arrays share one definition (`ProgramArray<1, 0>`): both count.
        assert_eq!(maps, all.len());
        let mut want: Vec<(String, u32)> = all.iter().map(|m| (m.to_string(), 1)).collect();
        want.sort();
        assert_eq!(pinning_by_map(&bytes), want);
        let embedded = pinning_by_map(Object::Datapath.bytes());
        assert!(
            embedded.iter().all(|(_, n)| *n == PIN_PLACEHOLDER),
            "{embedded:?}"
        );
        assert_eq!(embedded.len(), all.len());
    }
}

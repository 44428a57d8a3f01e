//! What the next writer does about one that was killed before it finished. The kernel
//! released the dead writer's lock; what it left is read from the state it wrote before
//! each step:
//!
//! - an attach (`attach.json` in phase `attaching`) is rolled back: every hook running the
//!   pinned program on the interfaces it named, the clsact qdiscs it recorded (when no
//!   filter is left on them), the pins and the state go;
//! - a detach (phase `detaching`) is finished the same way;
//! - an apply killed before its flip is rolled back (the set before it keeps running), one
//!   killed after its flip is finished (its set runs); either way the inactive generation's
//!   tables are released.

use super::{
    ATTACH_FILE, AttachError, CONFIG_FILE, Layout,
    detach::{DetachReport, remove_all},
    io_err, running,
    state::{AttachState, Phase},
};
use crate::route::datapath::tables::DatapathMaps;

/// Recovers what a killed writer left at `layout`; says what was done, one line each.
pub(super) fn run(layout: &Layout) -> Result<Vec<String>, AttachError> {
    let state_dir = layout.state_dir();
    if !state_dir.exists() {
        return Ok(Vec::new());
    }
    if !layout.state(ATTACH_FILE).exists() {
        // Attach writes attach.json before it creates anything else.
        if layout.state(CONFIG_FILE).exists() || layout.pin_dir.exists() {
            return Ok(Vec::new());
        }
        std::fs::remove_dir_all(&state_dir).map_err(io_err("remove", &state_dir))?;
        return Ok(vec![format!(
            "removed {}, left by an attach killed before it created anything",
            state_dir.display()
        )]);
    }
    let state = AttachState::read(layout)?;
    let line = match state.phase {
        Phase::Attaching => Some(format!(
            "rolled back an attach that was interrupted: {}",
            removed(&remove_all(layout, &state)?)
        )),
        Phase::Detaching => Some(format!(
            "finished a detach that was interrupted: {}",
            removed(&remove_all(layout, &state)?)
        )),
        // Maps that do not open (a data path from an older pktpath) hold no interrupted
        // apply of this one: that must not stop a detach.
        Phase::Attached if layout.pin_dir.exists() => {
            match DatapathMaps::from_pins(&layout.pin_dir) {
                Ok(mut maps) => running::recover_apply(layout, &mut maps)?,
                Err(e) => {
                    log::warn!("not looking for an interrupted apply: {e}");
                    None
                }
            }
        }
        Phase::Attached => None,
    };
    Ok(line.into_iter().collect())
}

/// Rolls back the attach at `layout` (a failed one, in the process that ran it).
pub(super) fn roll_back_attach(layout: &Layout) -> Result<(), AttachError> {
    let state = AttachState::read(layout)?;
    remove_all(layout, &state).map(|_| ())
}

fn removed(r: &DetachReport) -> String {
    let mut text = format!("removed {} pins", r.pins);
    if !r.links.is_empty() {
        text += &format!(", hooks on {}", r.links.join(", "));
    }
    if !r.clsact_removed.is_empty() {
        text += &format!(", the clsact qdisc on {}", r.clsact_removed.join(", "));
    }
    if r.slow_path.rules + r.slow_path.routes > 0 {
        text += &format!(
            ", the slow path's {} ip rules and {} routes",
            r.slow_path.rules, r.slow_path.routes
        );
    }
    text
}

//! `--state-dir DIR` (or `PKTPATH_STATE_DIR`): where the route verbs, and trace and demo
//! where they open a data path, keep the state files of attached data paths.

use std::path::{Path, PathBuf};

use pktpath_core::route::datapath::{attach::Layout, state_root};

/// The state directory option, flattened into the commands that open a data path.
#[derive(Debug, Clone, clap::Args)]
pub struct StateDirArg {
    /// Directory for the state files of attached data paths (one subdirectory per pin
    /// directory, readable by its owner only). Default: systemd's $RUNTIME_DIRECTORY (its
    /// first entry), else /run/pktpath. A user other than root needs a directory it can
    /// write (e.g. --state-dir /run/user/$UID/pktpath). Every verb on one data path must
    /// be given the same directory.
    #[arg(
        long = "state-dir",
        global = true,
        value_name = "DIR",
        env = "PKTPATH_STATE_DIR"
    )]
    state_dir: Option<PathBuf>,
}

impl StateDirArg {
    /// The state root chosen: the option, `RUNTIME_DIRECTORY`, or /run/pktpath.
    pub fn root(&self) -> PathBuf {
        state_root::choose(self.state_dir.as_deref())
    }

    /// The layout of the data path pinned at `pin_dir`, its state under [`Self::root`].
    pub fn layout(&self, pin_dir: &Path) -> Layout {
        Layout::new(pin_dir).with_state_root(self.root())
    }
}

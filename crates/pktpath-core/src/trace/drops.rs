//! Naming drop reasons: the kernel's own `enum skb_drop_reason`, read from its BTF, with the
//! `SKB_DROP_REASON_` prefix stripped (`NO_SOCKET`, `NETFILTER_DROP`, ...).

use std::collections::HashMap;

use crate::btf::{Btf, BtfError};

/// The kernel enum `kfree_skb`'s reason argument takes its values from.
pub const DROP_REASON_ENUM: &str = "skb_drop_reason";
const PREFIX: &str = "SKB_DROP_REASON_";

/// The drop reason names of one kernel.
#[derive(Debug, Default, Clone)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    /// Reads `enum skb_drop_reason` from `btf`.
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        let names = btf
            .enum_by_name(DROP_REASON_ENUM)?
            .into_iter()
            .filter_map(|(name, value)| {
                let value = u32::try_from(value).ok()?;
                let short = name.strip_prefix(PREFIX).unwrap_or(&name).to_owned();
                Some((value, short))
            })
            .collect();
        Ok(Self { names })
    }

    /// How many reasons the kernel defines.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no reason is known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The reason's name, or its number (`REASON_1234`) when this kernel does not name it
    /// (subsystem reasons carry a subsystem id in their high bits).
    pub fn name(&self, value: u32) -> String {
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("REASON_{value}"))
    }

    /// The value of a reason by its short name.
    pub fn value(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find_map(|(&v, n)| (n == name).then_some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> DropReasons {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/vmlinux-6.18.btf"
        );
        let btf = Btf::from_file(path).expect("recorded BTF");
        DropReasons::from_btf(&btf).expect("enum skb_drop_reason")
    }

    #[test]
    fn reasons_come_from_the_recorded_kernel_enum() {
        let r = recorded();
        assert!(r.len() > 50, "only {} reasons", r.len());
        // Values as the 6.18 kernel defines them (include/net/dropreason-core.h order).
        assert_eq!(r.name(2), "NOT_SPECIFIED");
        assert_eq!(r.name(3), "NO_SOCKET");
        let nf = r.value("NETFILTER_DROP").expect("NETFILTER_DROP");
        assert_eq!(r.name(nf), "NETFILTER_DROP");
        assert!(
            r.value("SKB_DROP_REASON_NO_SOCKET").is_none(),
            "prefix stripped"
        );
    }

    #[test]
    fn unknown_values_are_shown_as_numbers() {
        assert_eq!(recorded().name(0x7fff_0001), "REASON_2147418113");
        assert_eq!(DropReasons::default().name(3), "REASON_3");
    }
}

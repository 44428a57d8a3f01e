//! A filter expression's guard for IPv4 packets: a few tests of the header's addresses,
//! protocol or ports, one of which an IPv4 packet must pass for the expression to match
//! it. User space derives it from the compiled
//! [`FilterProgram`](crate::filter::FilterProgram); a tracer hook that finds an IPv4 packet
//! failing it rejects the packet after a load or two of its header, before the remembered
//! verdicts or the expression (a narrow filter on a busy host rejects almost every packet
//! it sees, and the remembered verdict's hash and compare were most of that).

/// Most tests a guard holds; an expression that would need more has none.
pub const GUARD_ATOMS: usize = 4;

/// [`GuardAtom::dirs`]: the test applies to the source address (header bytes 12-15).
pub const GUARD_SRC: u32 = 1;
/// [`GuardAtom::dirs`]: the test applies to the destination address (bytes 16-19).
pub const GUARD_DST: u32 = 2;
/// [`GuardAtom::dirs`]: the test applies to bytes 8-11 (TTL, protocol, checksum), masked
/// to the protocol.
pub const GUARD_PROTO: u32 = 4;

/// [`GuardAtom::dirs`]: the test applies to the source port, the first two bytes of the
/// word after the IPv4 header (at 4 times its IHL). The atom's `mask` and `value` sit in
/// those two bytes.
pub const GUARD_SPORT: u32 = 8;
/// [`GuardAtom::dirs`]: the test applies to the destination port, the word's last two
/// bytes (its halves swapped, so the same `mask` and `value` as a source port's apply).
pub const GUARD_DPORT: u32 = 16;
/// Either port.
pub const GUARD_PORTS: u32 = GUARD_SPORT | GUARD_DPORT;

/// `word & mask == value` on the header words `dirs` names (a test of the source or the
/// destination address, of either, of the protocol, or of a port). Words hold the header
/// bytes in network order, read as a native-endian `u32` (what a load of the header gives).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GuardAtom {
    /// [`GUARD_SRC`], [`GUARD_DST`] or both; [`GUARD_PROTO`]; [`GUARD_SPORT`],
    /// [`GUARD_DPORT`] or both.
    pub dirs: u32,
    pub mask: u32,
    pub value: u32,
}

/// The guard of a tracer's filter expression (global `PKTPATH_FILTER_V4_GUARD`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V4Guard {
    /// 1 when the guard applies; 0 lets every IPv4 packet through to the expression.
    pub on: u32,
    /// Atoms in use. With `on` and none, no IPv4 packet can match (e.g. `ip6`).
    pub count: u32,
    /// The `dirs` of all atoms together: which header words a hook must read.
    pub words: u32,
    pub atoms: [GuardAtom; GUARD_ATOMS],
}
crate::assert_size!(GuardAtom, 12);
crate::assert_size!(V4Guard, 12 + 12 * GUARD_ATOMS);
crate::impl_pod!(GuardAtom, V4Guard);

impl V4Guard {
    /// The guard that lets everything through.
    pub const OFF: Self = Self {
        on: 0,
        count: 0,
        words: 0,
        atoms: [GuardAtom {
            dirs: 0,
            mask: 0,
            value: 0,
        }; GUARD_ATOMS],
    };

    /// Whether an IPv4 packet whose header holds `proto` (bytes 8-11), `src` and `dst`, and
    /// `ports` after it (as loaded) passes: the guard is off, or one of its tests holds.
    #[inline(always)]
    pub fn passes(&self, proto: u32, src: u32, dst: u32, ports: u32) -> bool {
        self.on == 0 || self.holds(proto, src, dst, ports)
    }

    /// Whether one of the guard's tests holds for those header words (what a hook asks once
    /// it knows the guard is on).
    #[inline(always)]
    pub fn holds(&self, proto: u32, src: u32, dst: u32, ports: u32) -> bool {
        let mut i = 0;
        while i < GUARD_ATOMS {
            if i as u32 >= self.count {
                break;
            }
            let a = &self.atoms[i];
            if (a.dirs & GUARD_SRC != 0 && src & a.mask == a.value)
                || (a.dirs & GUARD_DST != 0 && dst & a.mask == a.value)
                || (a.dirs & GUARD_PROTO != 0 && proto & a.mask == a.value)
                || (a.dirs & GUARD_SPORT != 0 && ports & a.mask == a.value)
                || (a.dirs & GUARD_DPORT != 0 && ports.rotate_right(16) & a.mask == a.value)
            {
                return true;
            }
            i += 1;
        }
        false
    }
}

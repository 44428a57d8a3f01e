//! The classifier walk both hooks share: decision tree search over the active generation
//! of the tables (see pktpath_common::route and docs/classifier.md), in a loop the
//! verifier checks once: a `may_goto` loop where the kernel has that instruction (6.9),
//! a `bpf_loop` callback elsewhere (each of the object's programs comes in both variants,
//! see `LoopKind`).

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{bindings::bpf_fib_lookup, helpers::generated::bpf_loop};
use pktpath_common::route::{
    CHUNK_SLOT_BITS, CHUNK_SLOTS, CLASS_SLICES, Chunk, ClassKey, FAMILY_V4, KEY_CLASS,
    LEAF_SEGMENT, MAX_CHUNKS, MAX_DEPTH, MAX_PENDING, MAX_TREES, MAX_WALKS, NODE_CLASS, NODE_FAR,
    NODE_LEAF, NODE_SIDE, NODE_WORD, Node, PRUNE_PER_STEP, RuleMatch, RuleValue, SIDE_SLOTS,
    WALKS_PER_CALL,
};
use pktpath_ebpf::{
    looping::can_loop,
    packet::Parsed,
    rule::{candidate_matches, fill_key},
};

use crate::{ROUTE_ARENA, ROUTE_STATE, ROUTE_TREES, SCRATCH};

/// Per-CPU scratch space: the BPF stack (512 bytes) is too small for the key words and
/// the FIB lookup parameters on top of the parsed packet.
#[repr(C)]
pub struct Scratch {
    pub key: ClassKey,
    pub search: SearchState,
    pub fib: bpf_fib_lookup,
}

/// What a classification has found so far, and the subtrees still to walk. Kept in the
/// per-CPU scratch map rather than on the stack: the verifier does not track values it
/// reads from map memory, so it need not follow each combination of them through the
/// walk's loops.
#[repr(C)]
pub struct SearchState {
    /// 1 when `best` and `value` hold a match.
    found: u32,
    best: u32,
    value: u32,
    /// Entries of `pending` in use.
    pending_len: u32,
    /// Steps of the search left (a step walks one subtree; see [`MAX_WALKS`]).
    steps_left: u32,
    _pad: u32,
    pending: [Pending; MAX_PENDING as usize],
}

const _: () = assert!(
    MAX_PENDING.is_power_of_two() && MAX_TREES.is_power_of_two() && MAX_TREES <= MAX_PENDING
);

/// A subtree to walk, and the best priority of its rules (0: unknown).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    node: Node,
    min_priority: u32,
    _pad: u32,
}

/// The arena of the generation a packet classifies against.
#[derive(Clone, Copy)]
struct Arena {
    /// Index of the generation's first chunk in ROUTE_ARENA.
    base: u32,
}

impl Arena {
    /// The chunk holding arena slot `slot`, for the reads of one walk (a walk reads one
    /// chunk, see `NODE_FAR`) or of the value picked.
    ///
    /// Looked up afresh each time, and never inside a walk's loops: the verifier knows each
    /// lookup's pointer as its own, and a pointer that outlived a walk, or came from one of
    /// several lookups, made it check what follows once per place it could have come from.
    /// A chunk kept from walk to walk (looked up only when the next walk needed another)
    /// made it check each walk once per way the walk before had ended, which two walks per
    /// call of the loop's callback could not afford (docs/classifier.md has the counts).
    #[inline(always)]
    fn reader(self, slot: u32) -> Option<Reader> {
        Some(Reader {
            chunk: ROUTE_ARENA
                .get(self.base + (slot >> CHUNK_SLOT_BITS))?
                .get_ptr(0)?,
        })
    }
}

/// Reads of one arena chunk.
struct Reader {
    chunk: *const Chunk,
}

impl Reader {
    /// The chunk, and the index in it of arena slot `slot` (which the encoder put in it).
    #[inline(always)]
    fn at(&self, slot: u32) -> (*const Chunk, usize) {
        (self.chunk, (slot & (CHUNK_SLOTS - 1)) as usize)
    }

    /// The node in arena slot `slot`.
    #[inline(always)]
    fn node(&self, slot: u32) -> Option<Node> {
        let (chunk, i) = self.at(slot);
        // SAFETY: a map value of CHUNK_SLOTS words; `i` is below that.
        let word = unsafe { (*chunk).slots[i] };
        // SAFETY: a Node is 8 bytes of plain data.
        Some(unsafe { core::mem::transmute::<u64, Node>(word) })
    }

    /// The 64-byte line of 8 slots starting at `slot` (a multiple of 8).
    #[inline(always)]
    fn line(&self, slot: u32) -> Option<*const u64> {
        let (chunk, i) = self.at(slot);
        // Masked so that the verifier sees the whole line inside the value.
        let i = i & (CHUNK_SLOTS as usize - 8);
        // SAFETY: a map value of CHUNK_SLOTS words; `i + 8` is at most that.
        Some(unsafe { (&raw const (*chunk).slots).cast::<u64>().add(i) })
    }
}

struct SearchCtx {
    key: *const ClassKey,
    state: *mut SearchState,
    v6: bool,
    /// The generation's arena.
    arena: Arena,
}

/// How the search loops over the subtrees it walks. Each program of the data path object
/// comes in both variants; user space loads the one the kernel can run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LoopKind {
    /// `may_goto` (kernel 6.9): a step costs a counter's decrement, and a step walks one
    /// subtree.
    MayGoto,
    /// `bpf_loop` (5.17): a step is a call of a callback, which costs about 11 ns on a
    /// kernel with retpolines and the SRSO mitigation (twice an inner node), so a call
    /// walks up to [`WALKS_PER_CALL`] subtrees.
    BpfLoop,
}

/// Decision tree search over the active generation; the best (lowest) priority wins.
///
/// The family's roots go on a stack of subtrees to walk; each step of the loop walks one
/// from its root to a leaf, pushes the side subtrees of the nodes it passes, and checks
/// the leaf's rules. The verifier checks one walk once rather than once per subtree.
#[inline(always)]
pub fn classify(kind: LoopKind, p: &Parsed, ifindex: u32, mark: u32) -> Option<*const RuleValue> {
    let state = ROUTE_STATE.get(0)?;
    let generation = state.active & 1;
    let tables = ROUTE_TREES.get(generation)?;
    let family = (p.family != FAMILY_V4) as usize;
    let count = (*tables.counts.get(family)?).min(MAX_TREES);
    if count == 0 {
        return None;
    }
    let roots = tables.roots.get(family)?;
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, used by this program run only.
    let (key, state) = unsafe { (&mut (*scratch).key, &mut (*scratch).search) };
    fill_key(key, p, ifindex, mark);
    state.found = 0;
    state.best = u32::MAX;
    state.value = 0;
    state.pending_len = 0;
    state.steps_left = MAX_WALKS;
    let class = key.words[KEY_CLASS] as usize;
    // Pushed last first, so that they are walked best first. Indexes are masked so that
    // the verifier sees them in bounds (MAX_TREES is a power of 2).
    for i in 0..MAX_TREES {
        if i >= count {
            break;
        }
        let root = &roots[((count - 1 - i) & (MAX_TREES - 1)) as usize];
        let slot = &mut state.pending[(i & (MAX_PENDING - 1)) as usize];
        slot.node = root.node;
        slot.min_priority = *root.bounds.get(class)?;
        state.pending_len = i + 1;
    }
    let base = generation * MAX_CHUNKS;
    // Written field by field and used in place (see `pktpath_ebpf::mem`).
    let mut slot = MaybeUninit::<SearchCtx>::uninit();
    let c = slot.as_mut_ptr();
    // SAFETY: every field is written before the reference is made.
    let ctx = unsafe {
        (&raw mut (*c).key).write(key);
        (&raw mut (*c).state).write(state);
        (&raw mut (*c).v6).write(family == 1);
        (&raw mut (*c).arena).write(Arena { base });
        &mut *c
    };
    match kind {
        LoopKind::MayGoto => {
            // The loop's state lives in the scratch map, not in registers (`can_loop` is
            // also a compiler barrier): the verifier finds the same state at every step's
            // head and checks the body once.
            while can_loop() {
                if step::<1>(ctx) != 0 {
                    break;
                }
            }
        }
        // SAFETY: `walk_call` has the callback signature bpf_loop expects; `ctx` outlives
        // it.
        LoopKind::BpfLoop => unsafe {
            bpf_loop(
                MAX_WALKS,
                walk_call as *mut c_void,
                (&raw mut *ctx).cast(),
                0,
            );
        },
    }
    // SAFETY: as above.
    let state = unsafe { &*ctx.state };
    if state.found == 0 {
        return None;
    }
    let slot = tables.values + 4 * state.value;
    let line = ctx.arena.reader(slot)?.line(slot & !7)?;
    // SAFETY: values sit at 32-byte strides in their lines: offset 0 or 32 of 64 bytes.
    Some(unsafe {
        line.cast::<u8>()
            .add(((slot / 4) % 2) as usize * 32)
            .cast::<RuleValue>()
    })
}

/// `bpf_loop` callback: a step of [`WALKS_PER_CALL`] walks.
extern "C" fn walk_call(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the SearchCtx `classify` passed, alive for the whole loop.
    step::<WALKS_PER_CALL>(unsafe { &mut *ctx.cast::<SearchCtx>() })
}

/// One step of the search: walks up to `WALKS` subtrees from the top of the stack;
/// returns 1 to stop.
#[inline(always)]
fn step<const WALKS: u32>(ctx: &mut SearchCtx) -> i64 {
    // SAFETY: `key` and `state` point into this CPU's scratch slot, alive for the whole
    // search.
    let (key, state) = unsafe { (&*ctx.key, &mut *ctx.state) };
    if state.steps_left == 0 {
        return 1;
    }
    state.steps_left -= 1;
    // Before each walk it pops subtrees until one whose rules can beat the match in hand,
    // up to PRUNE_PER_STEP of them (about 2 ns each): most side subtrees popped at 100k
    // policies are pruned. (Dropping them after a walk instead, which would also save the
    // step that finds them last, made the verifier check that loop once per way a walk
    // ends: too much.)
    'walks: for w in 0..WALKS {
        if w > 0 && walk_end(state) != 0 {
            return 1;
        }
        let mut n = Node::default();
        let mut pruned = true;
        for _ in 0..PRUNE_PER_STEP {
            let len = state.pending_len;
            if len == 0 || len > MAX_PENDING {
                return 1;
            }
            let top = len - 1;
            state.pending_len = top;
            // Masked so that the verifier sees the index in bounds (MAX_PENDING is a
            // power of 2).
            let entry = state.pending[(top & (MAX_PENDING - 1)) as usize];
            if state.found == 0 || entry.min_priority < state.best {
                n = entry.node;
                pruned = false;
                break;
            }
        }
        if pruned {
            return 0;
        }
        let Some(arena) = ctx.arena.reader(n.base) else {
            return 1;
        };
        for _ in 0..MAX_DEPTH {
            if n.op & NODE_LEAF != 0 {
                break;
            }
            let side = if n.op & NODE_SIDE != 0 { SIDE_SLOTS } else { 0 };
            if side != 0 {
                let Some(sub) = arena.node(n.base) else {
                    return 1;
                };
                // The side's bound for this packet's class, one per slot after its root (a
                // shift by the class to pick half a slot took the verifier 250k more
                // instructions).
                let class = key.words[KEY_CLASS];
                let Some(bound) = arena.node(n.base + 1 + class) else {
                    return 1;
                };
                // The builder keeps the stack within MAX_PENDING. (Not pushing a side that
                // cannot beat the match in hand would save its pop, but testing that here
                // doubled the verifier's work, past its limit.)
                let len = state.pending_len;
                if len < MAX_PENDING {
                    let slot = &mut state.pending[(len & (MAX_PENDING - 1)) as usize];
                    slot.node = sub;
                    // SAFETY: the slots after a side root hold its bounds, as u64s.
                    slot.min_priority = unsafe { core::mem::transmute::<Node, u64>(bound) } as u32;
                    state.pending_len = len + 1;
                }
            }
            let w = key.words[(n.op & NODE_WORD) as usize];
            let mut slice = (w >> n.shift) & n.mask as u32;
            if n.op & NODE_CLASS != 0 {
                slice = slice * CLASS_SLICES + key.words[KEY_CLASS];
            }
            let Some(next) = arena.node(n.base + side + slice) else {
                return 1;
            };
            n = next;
            if n.op & NODE_FAR != 0 {
                // The path goes on in another chunk: walked next, as a walk of its own.
                let len = state.pending_len;
                if len < MAX_PENDING {
                    let slot = &mut state.pending[(len & (MAX_PENDING - 1)) as usize];
                    slot.node = Node {
                        op: n.op & !NODE_FAR,
                        ..n
                    };
                    slot.min_priority = 0;
                    state.pending_len = len + 1;
                }
                continue 'walks;
            }
        }
        if n.op & NODE_LEAF == 0 {
            return 1; // deeper than the builder makes trees
        }
        let count = n.mask as u32;
        let mut checked = 0u32;
        for i in 0..LEAF_SEGMENT {
            if i >= count {
                break;
            }
            let Some(line) = arena.line(n.base + 8 * i) else {
                return 1;
            };
            // SAFETY: a leaf's lines hold RuleMatches (64 bytes, plain data).
            let r = unsafe { &*line.cast::<RuleMatch>() };
            if state.found != 0 && r.priority >= state.best {
                continue 'walks; // a leaf's rules are sorted: none later can win
            }
            if candidate_matches(r, ctx.v6, key) {
                state.found = 1;
                state.best = r.priority;
                state.value = r.value_index();
                continue 'walks;
            }
            checked = i + 1;
        }
        if count > checked && checked == LEAF_SEGMENT {
            // The rest of a long leaf, walked next.
            let len = state.pending_len;
            if len < MAX_PENDING {
                let slot = &mut state.pending[(len & (MAX_PENDING - 1)) as usize];
                slot.node = Node {
                    op: NODE_LEAF,
                    shift: 0,
                    mask: (count - LEAF_SEGMENT) as u16,
                    base: n.base + 8 * LEAF_SEGMENT,
                };
                slot.min_priority = 0;
                state.pending_len = len + 1;
            }
        }
    }
    walk_end(state)
}

/// What a step returns to the loop: stop when no subtree is left, rather than pay a step
/// to find the stack empty.
#[inline(always)]
fn walk_end(state: &SearchState) -> i64 {
    i64::from(state.pending_len == 0)
}

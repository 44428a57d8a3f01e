//! Deliveries that look like drops: a raw socket (ping's, say) gets a clone of a packet,
//! and the kernel then frees the original with a drop reason because no other socket
//! wanted it (an echo reply freed by `ping_rcv` as `NO_SOCKET`). Both happen in one pass of
//! the receive path on one CPU, microseconds apart: `sk_data_ready` notes, in a per-CPU
//! slot of the caller's, the data buffer of a clone just queued to an IP socket, and a free
//! with a drop reason of a cloned packet with that buffer, on that CPU and soon after, is
//! the delivery it is. Shared by the tracer (which shows it as a delivery) and the drop
//! monitor (which does not count it).

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::PerCpuArray};

use crate::kernel::{Offsets, load_at, read_at};

/// `AF_INET`, `AF_INET6`.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// How long after its clone was queued the original's free counts as the delivery's. The
/// two are microseconds apart; a buffer reused for a new packet within this time, on the
/// same CPU, that is cloned too and dropped, is the only case misjudged.
const WINDOW_NS: u64 = 1_000_000;

/// The last clone queued to an IP socket on this CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Noted {
    /// Its data buffer (`sk_buff.head`); 0 once taken.
    head: u64,
    /// `bpf_ktime_get_ns` when it was queued.
    at_ns: u64,
}

/// At `sk_data_ready(sk)`: when the skb `sk` queued last is a clone, notes its data
/// buffer in this CPU's slot of `slot`.
#[inline(always)]
pub fn note(off: Offsets, sk: u64, slot: &PerCpuArray<Noted>) -> Result<(), i32> {
    if !off.set() || sk == 0 {
        return Err(-1);
    }
    let family: u16 = load_at(sk, off.sock_family());
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let skb: u64 = load_at(sk, off.sock_receive_queue_prev());
    // An empty queue's `prev` is the queue itself (a stream socket may have taken the
    // data into another queue).
    if skb == 0 || skb == sk + u64::from(off.sock_receive_queue()) {
        return Ok(());
    }
    // The byte of the `cloned` bitfield: a load the verifier checks against the byte's
    // bitfields (a helper read of it cost about 35 ns per drop on a kernel with SRSO).
    let cloned: u8 = load_at(skb, off.skb_cloned_byte());
    if u32::from(cloned) & off.skb_cloned_mask() == 0 {
        return Ok(());
    }
    let head: u64 = load_at(skb, off.skb_head());
    let noted = slot.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: this CPU's slot; a program that preempted this one on the CPU at worst
    // leaves its own clone noted instead.
    unsafe {
        *noted = Noted {
            head,
            // SAFETY: no preconditions.
            at_ns: bpf_ktime_get_ns(),
        }
    };
    Ok(())
}

/// The count of skbs sharing the data in `skb_shared_info.dataref` (the high half counts
/// header-less references).
const SKB_DATAREF_MASK: u32 = 0xffff;

/// At a free with a drop reason: whether `skb` is the original of the clone this CPU
/// noted last (forgotten then). Only a cloned skb can be; most drops are of skbs never
/// cloned, and cost no more than that check.
#[inline(always)]
pub fn take(off: Offsets, skb: u64, slot: &PerCpuArray<Noted>) -> bool {
    let cloned: u8 = load_at(skb, off.skb_cloned_byte());
    if u32::from(cloned) & off.skb_cloned_mask() == 0 {
        return false;
    }
    let head: u64 = load_at(skb, off.skb_head());
    let Some(noted) = slot.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot, as in `note`.
    unsafe {
        // SAFETY: no preconditions.
        let now = bpf_ktime_get_ns();
        if head != 0 && (*noted).head == head && now.wrapping_sub((*noted).at_ns) < WINDOW_NS {
            // The clone still holds the data: this is its original. A buffer that only has
            // the address of the clone's (freed and reused since, its `cloned` bit left
            // from a tap that has let go) has no other reference.
            let end: u32 = load_at(skb, off.skb_end());
            let dataref: u32 = read_at(head + u64::from(end), off.shinfo_dataref()).unwrap_or(0);
            if dataref & SKB_DATAREF_MASK > 1 {
                (*noted).head = 0;
                return true;
            }
        }
    }
    false
}

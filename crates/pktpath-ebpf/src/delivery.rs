//! Deliveries that look like drops: a raw socket (ping's, a packet capture's) gets a clone
//! of a packet, and the kernel then frees the original with a drop reason because no other
//! socket wanted it (an echo reply freed by `ping_rcv` as `NO_SOCKET`). `sk_data_ready`
//! notes the data buffer of each clone queued to an IP socket in an LRU map of the
//! caller's; a free with a drop reason whose buffer is there is the delivery it is. Shared
//! by the tracer (which shows it as a delivery) and the drop monitor (which does not count
//! it).

use aya_ebpf::maps::LruHashMap;

use crate::kernel::{Offsets, load_at, read_at};

/// `AF_INET`, `AF_INET6`.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// At `sk_data_ready(sk)`: when the skb `sk` queued last is a clone, notes its data
/// buffer (`sk_buff.head`) in `noted`.
#[inline(always)]
pub fn note(off: Offsets, sk: u64, noted: &LruHashMap<u64, u32>) -> Result<(), i32> {
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
    // A bit in a bitfield byte: read with the helper, which any address may be passed to.
    let cloned: u8 = read_at(skb, off.skb_cloned_byte())?;
    if u32::from(cloned) & off.skb_cloned_mask() == 0 {
        return Ok(());
    }
    let head: u64 = load_at(skb, off.skb_head());
    noted.insert(head, 1, 0).map_err(|_| -1)
}

/// At a free with a drop reason: whether `skb` shares its data with a clone `note` saw
/// delivered (forgotten then: the buffer is freed with it). Only a cloned skb can be such
/// an original: a buffer noted for a packet that was then consumed (never freed with a
/// reason, so never forgotten here) and reused for a new packet must not make that new
/// packet's drop a delivery. Most drops are of skbs never cloned, and cost no lookup.
#[inline(always)]
pub fn take(off: Offsets, skb: u64, noted: &LruHashMap<u64, u32>) -> bool {
    let cloned: u8 = read_at(skb, off.skb_cloned_byte()).unwrap_or(0);
    if u32::from(cloned) & off.skb_cloned_mask() == 0 {
        return false;
    }
    let head: u64 = load_at(skb, off.skb_head());
    // SAFETY: the value is only tested for presence, never read through.
    if head != 0 && unsafe { noted.get(head) }.is_some() {
        let _ = noted.remove(head);
        true
    } else {
        false
    }
}

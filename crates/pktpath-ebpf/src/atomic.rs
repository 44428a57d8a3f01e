//! An atomic add, which `core` does not offer on the BPF targets (they declare no
//! compare-and-swap, and `core` gates every read-modify-write on it), written as the BPF
//! instruction itself.

/// Adds `v` to the u64 at `p`, atomically with respect to every CPU (`BPF_ATOMIC |
/// BPF_ADD`, the kernel's `lock xadd` on x86); a wrapping add, so `u64::MAX` subtracts one.
///
/// # Safety
///
/// `p` must point to a u64 in map memory the program may write.
#[inline(always)]
pub unsafe fn add(p: *mut u64, v: u64) {
    // SAFETY: the caller's promise; the instruction touches only `*p`.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        );
    }
}

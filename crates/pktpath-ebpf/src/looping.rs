//! Loops the verifier checks once, without a call per iteration.

/// Whether a loop may go on: the `may_goto` instruction (kernel 6.9), which the verifier
/// takes as a loop's head and checks the body behind once, and which at run time counts
/// down a budget the kernel keeps (and stops the loop when it is spent).
///
/// Also a compiler barrier (the asm may touch memory): values a loop carries from one
/// iteration to the next are read again from memory, not kept in registers, so the
/// verifier finds the same state at every iteration's head.
#[inline(always)]
pub fn can_loop() -> bool {
    let go: u64;
    // SAFETY: may_goto only jumps, within the asm.
    unsafe {
        core::arch::asm!(
            "{go} = 0",
            "may_goto 2f",
            "{go} = 1",
            "2:",
            go = out(reg) go,
            options(nostack),
        );
    }
    go != 0
}

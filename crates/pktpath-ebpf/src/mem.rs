//! Copies and fills of fixed-size values, a word at a time.
//!
//! The BPF backend lowers a plain copy or fill of an array or struct (`a = *b`,
//! `a = [0; 16]`, `T::default()`) to a call to the object's `memmove` or `memset`, which
//! move one byte per iteration: some 8 instructions per byte of every trace event's header
//! copy. These move whole words `W` (`u32`, `u64`) through volatile stores, which LLVM does
//! not merge back into such a call.

/// Copies `*src` to `*dst` one `W` at a time.
///
/// # Safety
///
/// `T` is plain data (any bit pattern valid) whose size is a multiple of `W`'s; both
/// pointers are valid for `T` and aligned for `W` (a map value, a ring buffer record, or a
/// field at a multiple of `W`'s size in one).
#[inline(always)]
pub unsafe fn copy<W: Copy, T>(dst: *mut T, src: *const T) {
    const { assert!(size_of::<T>().is_multiple_of(size_of::<W>())) };
    let (d, s) = (dst.cast::<W>(), src.cast::<W>());
    let mut i = 0;
    while i < size_of::<T>() / size_of::<W>() {
        // SAFETY: in bounds and aligned, as the caller promises.
        unsafe { d.add(i).write_volatile(s.add(i).read()) };
        i += 1;
    }
}

/// Zeroes `*dst` one `W` at a time.
///
/// # Safety
///
/// As for [`copy`]; all-zero is a valid `T` and a valid `W`.
#[inline(always)]
pub unsafe fn zero<W: Copy, T>(dst: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(size_of::<W>())) };
    let d = dst.cast::<W>();
    let mut i = 0;
    while i < size_of::<T>() / size_of::<W>() {
        // SAFETY: in bounds and aligned, as the caller promises; zero is a valid `W`.
        unsafe { d.add(i).write_volatile(core::mem::zeroed()) };
        i += 1;
    }
}

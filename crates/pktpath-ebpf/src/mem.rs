//! Copies and fills of fixed-size values, a word at a time.
//!
//! The BPF backend lowers a plain copy or fill of an array or struct (`a = *b`,
//! `a = [0; 16]`, `T::default()`) to a call to the object's `memmove` or `memset`, which
//! move one byte per iteration: the 96-byte header copy of every trace event cost some 800
//! instructions. These move whole words through volatile accesses, which LLVM does not merge
//! back into such a call.

/// Copies `*src` to `*dst` eight bytes at a time.
///
/// # Safety
///
/// Both pointers are valid for `N` bytes and 8-byte aligned (a map value, a ring buffer
/// record, or a field at a multiple of 8 in one); `N` is a multiple of 8.
#[inline(always)]
pub unsafe fn copy8<const N: usize>(dst: *mut [u8; N], src: *const [u8; N]) {
    const { assert!(N.is_multiple_of(8)) };
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    let mut i = 0;
    while i < N / 8 {
        // SAFETY: in bounds and aligned, as the caller promises.
        unsafe { d.add(i).write_volatile(s.add(i).read()) };
        i += 1;
    }
}

/// Zeroes `*dst` eight bytes at a time.
///
/// # Safety
///
/// As for [`copy8`].
#[inline(always)]
pub unsafe fn zero8<const N: usize>(dst: *mut [u8; N]) {
    const { assert!(N.is_multiple_of(8)) };
    let d = dst.cast::<u64>();
    let mut i = 0;
    while i < N / 8 {
        // SAFETY: in bounds and aligned, as the caller promises.
        unsafe { d.add(i).write_volatile(0) };
        i += 1;
    }
}

/// Copies a plain-data value of 4-byte words (`T` 4-byte aligned, its size a multiple of 4)
/// a word at a time.
///
/// # Safety
///
/// `T` is plain data (any bit pattern valid) with size a multiple of 4 and alignment of at
/// least 4; both pointers are valid and aligned for `T`.
#[inline(always)]
pub unsafe fn copy_words<T: Copy>(dst: *mut T, src: *const T) {
    const { assert!(size_of::<T>().is_multiple_of(4) && align_of::<T>() >= 4) };
    let (d, s) = (dst.cast::<u32>(), src.cast::<u32>());
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: in bounds and aligned, as the caller promises.
        unsafe { d.add(i).write_volatile(s.add(i).read()) };
        i += 1;
    }
}

/// Zeroes a plain-data value of 4-byte words a word at a time.
///
/// # Safety
///
/// As for [`copy_words`]; all-zero is a valid `T`.
#[inline(always)]
pub unsafe fn zero_words<T: Copy>(dst: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(4) && align_of::<T>() >= 4) };
    let d = dst.cast::<u32>();
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: in bounds and aligned, as the caller promises.
        unsafe { d.add(i).write_volatile(0) };
        i += 1;
    }
}

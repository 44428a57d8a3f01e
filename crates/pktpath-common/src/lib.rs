//! Types shared by the eBPF programs and user space, defined once.
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of `bool` and of implicit padding: each
//! type carries explicit `_pad` fields where needed and a compile-time size assertion, so
//! the kernel side and the user side agree byte for byte.
#![no_std]

pub mod baseline;
pub mod drops;
pub mod filter;
pub mod guard;
pub mod hop;
pub mod kernel;
pub mod net;
pub mod probe;
pub mod route;
pub mod trace;

/// Asserts at compile time that a shared type has the size both sides expect.
#[macro_export]
macro_rules! assert_size {
    ($ty:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
    };
}

/// Implements `aya::Pod` for shared types when built for user space.
#[macro_export]
#[doc(hidden)]
macro_rules! impl_pod {
    ($($ty:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is #[repr(C)], Copy, made of integers and integer arrays only,
            // and has no implicit padding (checked by `assert_size!`).
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

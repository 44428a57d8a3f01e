//! BTF map definitions that carry libbpf's `pinning` attribute, for objects that iproute2's
//! `tc ... bpf obj FILE` loads as well as aya.
//!
//! Why not aya's `btf_maps` types alone: their definition struct has no `pinning` member,
//! and the macro that makes them is private to aya-ebpf. libbpf reads a map's definition
//! from the member names of its BTF struct, so the struct must be flat: a wrapper holding
//! aya's struct would hide its members. Each type here is therefore aya's struct with one
//! more member, `pinning`, and dereferences to aya's type for the map operations: those
//! only take the static's address (the map's relocation), never read its fields.
//!
//! `pinning` holds [`PIN_PLACEHOLDER`], which aya reads as no pinning and which
//! `pktpath route object` rewrites to `LIBBPF_PIN_BY_NAME` in the object it writes for tc.
//! Inner map templates (of [`ArrayOfMaps`]) stay aya's types: inner maps are never pinned.

use core::ops::Deref;

use aya_ebpf::{bindings::bpf_map_type, btf_maps};
use pktpath_common::route::PIN_PLACEHOLDER;

/// Defines a pinned map type: the struct (aya's members plus `pinning`), `new`, `Sync` and
/// `Deref` to the aya type `$aya`.
macro_rules! pinned_map {
    (
        $(#[$doc:meta])*
        $name:ident<$($ty:ident,)* ; $($konst:ident),*> => $aya:ty,
        $map_type:ident, key: $key:ty, value: $value:ty $(, inner: $inner:ty)?
    ) => {
        $(#[$doc])*
        // repr(C): the members in declared order, as libbpf and aya read them from BTF.
        #[repr(C)]
        pub struct $name<$($ty,)* $(const $konst: usize,)*> {
            r#type: *const [i32; bpf_map_type::$map_type as usize],
            key: *const $key,
            value: *const $value,
            max_entries: *const [i32; MAX_ENTRIES],
            map_flags: *const [i32; FLAGS],
            pinning: *const [i32; PIN_PLACEHOLDER as usize],
            $(values: [*const $inner; 0],)?
        }

        // SAFETY: placeholder pointers the loader reads from BTF; never dereferenced, so
        // there is no shared state (as for aya's own map types).
        unsafe impl<$($ty,)* $(const $konst: usize,)*> Sync for $name<$($ty,)* $($konst,)*> {}

        impl<$($ty,)* $(const $konst: usize,)*> $name<$($ty,)* $($konst,)*> {
            /// The definition the loader fills in.
            pub const fn new() -> Self {
                Self {
                    r#type: core::ptr::null(),
                    key: core::ptr::null(),
                    value: core::ptr::null(),
                    max_entries: core::ptr::null(),
                    map_flags: core::ptr::null(),
                    pinning: core::ptr::null(),
                    $(values: [] as [*const $inner; 0],)?
                }
            }
        }

        impl<$($ty,)* $(const $konst: usize,)*> Default for $name<$($ty,)* $($konst,)*> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<$($ty,)* $(const $konst: usize,)*> Deref for $name<$($ty,)* $($konst,)*> {
            type Target = $aya;

            #[inline(always)]
            fn deref(&self) -> &$aya {
                // SAFETY: aya's type is a repr(C) struct of the first five members here
                // (placeholder pointers, plus a zero-sized `values` for maps of maps); its
                // methods use only the address, which is this static's.
                unsafe { &*core::ptr::from_ref(self).cast::<$aya>() }
            }
        }
    };
}

pinned_map!(
    /// A pinned `BPF_MAP_TYPE_ARRAY`.
    Array<T, ; MAX_ENTRIES, FLAGS> => btf_maps::Array<T, MAX_ENTRIES, FLAGS>,
    BPF_MAP_TYPE_ARRAY, key: u32, value: T
);

pinned_map!(
    /// A pinned `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PerCpuArray<T, ; MAX_ENTRIES, FLAGS> => btf_maps::PerCpuArray<T, MAX_ENTRIES, FLAGS>,
    BPF_MAP_TYPE_PERCPU_ARRAY, key: u32, value: T
);

pinned_map!(
    /// A pinned `BPF_MAP_TYPE_PERCPU_HASH`.
    PerCpuHashMap<K, V, ; MAX_ENTRIES, FLAGS> => btf_maps::PerCpuHashMap<K, V, MAX_ENTRIES, FLAGS>,
    BPF_MAP_TYPE_PERCPU_HASH, key: K, value: V
);

pinned_map!(
    /// A pinned `BPF_MAP_TYPE_PROG_ARRAY`.
    ProgramArray<; MAX_ENTRIES, FLAGS> => btf_maps::ProgramArray<MAX_ENTRIES, FLAGS>,
    BPF_MAP_TYPE_PROG_ARRAY, key: u32, value: u32
);

pinned_map!(
    /// A pinned `BPF_MAP_TYPE_SOCKMAP`.
    SockMap<; MAX_ENTRIES, FLAGS> => btf_maps::SockMap<MAX_ENTRIES, FLAGS>,
    BPF_MAP_TYPE_SOCKMAP, key: u32, value: u32
);

pinned_map!(
    /// A pinned `BPF_MAP_TYPE_ARRAY_OF_MAPS` whose inner maps are of type `V`.
    ArrayOfMaps<V, ; MAX_ENTRIES, FLAGS> => btf_maps::ArrayOfMaps<V, MAX_ENTRIES, FLAGS>,
    BPF_MAP_TYPE_ARRAY_OF_MAPS, key: u32, value: u32, inner: V
);

/// A `BPF_MAP_TYPE_RINGBUF` definition as libbpf reads it: the type and the size only.
/// Used as an inner map template (never pinned). aya's `btf_maps::RingBuf` also declares
/// the value type beside a zero `value_size`, which libbpf refuses as a conflicting value
/// size; records go in with [`btf_maps::RingBuf::output_untyped`].
#[repr(C)]
pub struct RingBuf<const MAX_ENTRIES: usize> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_RINGBUF as usize],
    max_entries: *const [i32; MAX_ENTRIES],
}

// SAFETY: as for the map types above.
unsafe impl<const MAX_ENTRIES: usize> Sync for RingBuf<MAX_ENTRIES> {}

impl<const MAX_ENTRIES: usize> Deref for RingBuf<MAX_ENTRIES> {
    type Target = btf_maps::RingBuf<u8, MAX_ENTRIES, 0>;

    #[inline(always)]
    fn deref(&self) -> &Self::Target {
        // SAFETY: as for the map types above: aya's methods use only the address.
        unsafe { &*core::ptr::from_ref(self).cast::<Self::Target>() }
    }
}

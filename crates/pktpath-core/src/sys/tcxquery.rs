//! BPF_PROG_QUERY on a TCX hook: how many programs run there, their ids and the hook's
//! revision, without opening them (aya's `SchedClassifier::query_tcx` opens each program by id, which
//! needs CAP_SYS_ADMIN). Needs CAP_NET_ADMIN; a kernel without TCX answers EINVAL.

use super::{SysError, bpfmap::bpf_call};

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// The `BPF_PROG_QUERY` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

const _: () = assert!(size_of::<QueryAttr>() == 64);

fn attach_type(ingress: bool) -> u32 {
    if ingress {
        BPF_TCX_INGRESS
    } else {
        BPF_TCX_EGRESS
    }
}

/// The TCX hook of interface `ifindex` (ingress or egress): the number of programs attached
/// and the hook's revision.
pub fn tcx_query(ifindex: u32, ingress: bool) -> Result<(u32, u64), SysError> {
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: attach_type(ingress),
        ..QueryAttr::default()
    };
    // SAFETY: the attribute is ours and outlives the call; with no id buffers given the
    // kernel only writes the count and revision into it.
    unsafe {
        bpf_call(BPF_PROG_QUERY, &mut attr, || {
            format!(
                "bpf(BPF_PROG_QUERY, tcx {}, ifindex {ifindex})",
                if ingress { "ingress" } else { "egress" }
            )
        })
    }?;
    Ok((attr.count, attr.revision))
}

/// The ids of the programs attached to the TCX hook of interface `ifindex`, in the order
/// they run.
pub fn tcx_prog_ids(ifindex: u32, ingress: bool) -> Result<Vec<u32>, SysError> {
    let (count, _) = tcx_query(ifindex, ingress)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    // Room for a few attached between the two calls (the kernel says ENOSPC beyond it).
    let mut ids = vec![0u32; count as usize + 8];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: attach_type(ingress),
        prog_ids: ids.as_mut_ptr() as u64,
        count: ids.len() as u32,
        ..QueryAttr::default()
    };
    // SAFETY: the attribute and the id buffer are ours and outlive the call; the kernel
    // writes at most `count` ids into the buffer, then the count it wrote.
    unsafe {
        bpf_call(BPF_PROG_QUERY, &mut attr, || {
            format!(
                "bpf(BPF_PROG_QUERY, tcx {} program ids, ifindex {ifindex})",
                if ingress { "ingress" } else { "egress" }
            )
        })
    }?;
    ids.truncate(attr.count as usize);
    Ok(ids)
}

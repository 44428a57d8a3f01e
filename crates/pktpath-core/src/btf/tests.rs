//! BTF parsing and offset resolution, without root: a synthetic blob that exercises
//! anonymous unions, nested structs, typedefs and bitfields, and this kernel's recorded BTF.

use super::{Btf, BtfError, Kind, offsets};

/// Builds small BTF blobs for tests.
#[derive(Default)]
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn header(
        &mut self,
        name: &str,
        kind: u32,
        vlen: u32,
        kind_flag: bool,
        size_or_type: u32,
    ) -> u32 {
        let name_off = self.str(name);
        let info = (kind << 24) | vlen | if kind_flag { 1 << 31 } else { 0 };
        for w in [name_off, info, size_or_type] {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.header(name, 1, 0, false, size);
        self.types.extend_from_slice(&(size * 8).to_le_bytes());
        id
    }

    fn ptr(&mut self, to: u32) -> u32 {
        self.header("", 2, 0, false, to)
    }

    fn typedef(&mut self, name: &str, to: u32) -> u32 {
        self.header(name, 8, 0, false, to)
    }

    /// Members as (name, type, bit offset, bitfield size).
    fn composite(
        &mut self,
        kind: u32,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32, u32)],
    ) -> u32 {
        let bitfields = members.iter().any(|m| m.3 != 0);
        let id = self.header(name, kind, members.len() as u32, bitfields, size);
        for &(mname, ty, off, bits) in members {
            let name_off = self.str(mname);
            let raw = if bitfields { (bits << 24) | off } else { off };
            for w in [name_off, ty, raw] {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        id
    }

    fn enumeration(&mut self, name: &str, values: &[(&str, u32)]) -> u32 {
        let id = self.header(name, 6, values.len() as u32, false, 4);
        for &(n, v) in values {
            let name_off = self.str(n);
            self.types.extend_from_slice(&name_off.to_le_bytes());
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        id
    }

    fn build(self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        for w in [
            24u32,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// struct outer {
///     u32 a;                                  // 0
///     union { struct { u32 x; u32 y; }; u64 z; };  // 8
///     u8 flag:3, other:5;                     // byte 16
///     struct inner { u16 p; u32 q; } n;       // 20
///     possible t;                             // 28 (typedef of anonymous struct)
/// };
fn synthetic() -> Btf {
    let mut b = Builder::new();
    let u8t = b.int("u8", 1);
    let u16t = b.int("u16", 2);
    let u32t = b.int("u32", 4);
    let u64t = b.int("u64", 8);
    let xy = b.composite(4, "", 8, &[("x", u32t, 0, 0), ("y", u32t, 32, 0)]);
    let un = b.composite(5, "", 8, &[("", xy, 0, 0), ("z", u64t, 0, 0)]);
    let inner = b.composite(4, "inner", 8, &[("p", u16t, 0, 0), ("q", u32t, 32, 0)]);
    let voidp = b.ptr(0);
    let anon_net = b.composite(4, "", 8, &[("net", voidp, 0, 0)]);
    let possible = b.typedef("possible", anon_net);
    b.composite(
        4,
        "outer",
        40,
        &[
            ("a", u32t, 0, 0),
            ("", un, 64, 0),
            ("flag", u8t, 128, 3),
            ("other", u8t, 131, 5),
            ("n", inner, 160, 0),
            ("t", possible, 224, 0),
        ],
    );
    b.enumeration("colour", &[("RED", 0), ("GREEN", 7)]);
    Btf::from_bytes(b.build()).expect("synthetic BTF parses")
}

#[test]
fn plain_members_have_their_byte_offsets() {
    let btf = synthetic();
    assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
    assert_eq!(btf.member_offset("outer", "n").unwrap(), 20);
}

#[test]
fn members_inside_anonymous_unions_and_structs_are_found() {
    let btf = synthetic();
    assert_eq!(btf.member_offset("outer", "x").unwrap(), 8);
    assert_eq!(btf.member_offset("outer", "y").unwrap(), 12);
    assert_eq!(btf.member_offset("outer", "z").unwrap(), 8);
}

#[test]
fn dotted_paths_walk_nested_structs_and_typedefs() {
    let btf = synthetic();
    assert_eq!(btf.member_offset("outer", "n.q").unwrap(), 24);
    assert_eq!(btf.member_offset("outer", "t.net").unwrap(), 28);
    assert_eq!(btf.member_offset("possible", "net").unwrap(), 0);
    let loc = btf.member_location("outer", "n.q").unwrap();
    assert_eq!(loc.size, 4);
}

#[test]
fn bitfields_report_bit_positions_and_refuse_byte_reads() {
    let btf = synthetic();
    let flag = btf.member_location("outer", "flag").unwrap();
    assert_eq!((flag.bit_offset, flag.bitfield_size), (128, 3));
    let other = btf.member_location("outer", "other").unwrap();
    assert_eq!((other.bit_offset, other.bitfield_size), (131, 5));
    assert!(matches!(
        btf.member_offset("outer", "flag"),
        Err(BtfError::Bitfield { .. })
    ));
}

#[test]
fn missing_things_are_named_in_errors() {
    let btf = synthetic();
    let err = btf
        .member_offset("outer", "n.nope")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("outer.n"), "{err}");
    let err = btf.member_offset("nosuch", "a").unwrap_err().to_string();
    assert!(err.contains("nosuch"), "{err}");
    let err = btf.member_offset("outer", "a.b").unwrap_err().to_string();
    assert!(err.contains("not a struct"), "{err}");
}

#[test]
fn enums_decode_names_and_values() {
    let btf = synthetic();
    let values = btf.enum_by_name("colour").unwrap();
    assert_eq!(values, vec![("RED".to_owned(), 0), ("GREEN".to_owned(), 7)]);
    assert_eq!(btf.find("colour", Kind::Enum).len(), 1);
}

#[test]
fn malformed_blobs_are_rejected() {
    assert!(Btf::from_bytes(vec![0; 8]).is_err());
    let mut blob = synthetic_blob_with_bad_magic();
    assert!(Btf::from_bytes(blob.clone()).is_err());
    blob.truncate(30);
    assert!(Btf::from_bytes(blob).is_err());
}

fn synthetic_blob_with_bad_magic() -> Vec<u8> {
    let mut b = Builder::new();
    b.int("u32", 4);
    let mut blob = b.build();
    blob[0] = 0;
    blob
}

fn recorded_kernel() -> Btf {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/vmlinux-6.18.btf"
    );
    Btf::from_file(path).expect("recorded 6.18 BTF parses")
}

/// Expected values were printed by gcc's offsetof() over a vmlinux.h that bpftool
/// generated from the same BTF: an independent reading of the same layout.
#[test]
fn kernel_offsets_match_the_c_compilers_layout_on_6_18() {
    let btf = recorded_kernel();
    let off = offsets::resolve(&btf).expect("all offsets resolve");
    assert_eq!(off.skb_size, 224);
    assert_eq!(off.skb_len, 112);
    assert_eq!(off.skb_data_len, 116);
    assert_eq!(off.skb_data, 200);
    assert_eq!(off.skb_head, 192);
    assert_eq!(off.skb_end, 188);
    assert_eq!(off.skb_mac_header, 182);
    assert_eq!(off.skb_network_header, 180);
    assert_eq!(off.skb_transport_header, 178);
    assert_eq!(off.skb_protocol, 176);
    assert_eq!(off.skb_mark, 164);
    assert_eq!(off.skb_dev, 16);
    assert_eq!(off.skb_skb_iif, 144);
    assert_eq!(off.skb_hash, 148);
    assert_eq!(off.skb_tstamp, 32);
    assert_eq!(off.net_device_name, 280);
    assert_eq!(off.net_device_ifindex, 224);
    assert_eq!(off.net_device_nd_net, 264);
    assert_eq!(off.possible_net_t_net, 0);
    assert_eq!(off.net_ns_inum, 176);
    // sk_data_ready's reads: `cloned` is one bit, handed over as its byte and mask.
    let cloned = btf.member_location("sk_buff", "cloned").unwrap();
    assert_eq!(cloned.bitfield_size, 1);
    assert_eq!(
        off.skb_cloned_byte * 8 + off.skb_cloned_mask.trailing_zeros(),
        cloned.bit_offset
    );
    assert_eq!(off.skb_cloned_mask.count_ones(), 1);
    assert_eq!(off.sock_receive_queue_prev, off.sock_receive_queue + 8);
    assert_eq!(off.sock_family, 16);
}

#[test]
fn kernel_bitfields_and_drop_reasons_are_readable() {
    let btf = recorded_kernel();
    let pkt_type = btf.member_location("sk_buff", "pkt_type").unwrap();
    assert_eq!(pkt_type.bitfield_size, 3);
    let reasons = btf.enum_by_name("skb_drop_reason").unwrap();
    let names: Vec<&str> = reasons.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "SKB_DROP_REASON_NOT_SPECIFIED",
        "SKB_DROP_REASON_NO_SOCKET",
        "SKB_DROP_REASON_NETFILTER_DROP",
    ] {
        assert!(
            names.contains(&want),
            "{want} missing from enum skb_drop_reason"
        );
    }
}

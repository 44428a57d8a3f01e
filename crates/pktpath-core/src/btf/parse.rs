//! BTF blob parsing: header, type section, string section; lookups by name.

use std::path::Path;

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_MIN_LEN: usize = 24;

/// Errors reading BTF or finding a type or member in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source} (is CONFIG_DEBUG_INFO_BTF set?)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("type `{0}` is not in the kernel's BTF")]
    NoSuchType(String),
    #[error("`{ty}` has no member `{member}`")]
    NoSuchMember { ty: String, member: String },
    #[error("`{ty}.{member}` is not a struct or union, so `{rest}` cannot be inside it")]
    NotComposite {
        ty: String,
        member: String,
        rest: String,
    },
    #[error("`{ty}.{path}` is a bitfield; read it with its bit offset, not as bytes")]
    Bitfield { ty: String, path: String },
}

/// The kinds of BTF type, numbered as in the kernel's `BTF_KIND_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(v: u32) -> Option<Self> {
        use Kind::*;
        Some(match v {
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => Datasec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }
}

/// One member of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Empty for an anonymous member.
    pub name: String,
    pub type_id: u32,
    /// Offset from the start of the enclosing type, in bits.
    pub bit_offset: u32,
    /// Width in bits when the member is a bitfield, else 0.
    pub bitfield_size: u32,
}

/// Where a (possibly nested) member lives inside its outermost struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLocation {
    /// Offset from the start of the outermost struct, in bits.
    pub bit_offset: u32,
    /// Width in bits when the member is a bitfield, else 0.
    pub bitfield_size: u32,
    /// Size in bytes of the member's type (after typedefs and qualifiers).
    pub size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: Kind,
    vlen: u16,
    kind_flag: bool,
    /// `size` for sized kinds, `type` for referencing kinds.
    size_or_type: u32,
    /// Byte offset of the kind-specific data that follows the common header.
    extra: usize,
}

/// A parsed BTF blob.
pub struct Btf {
    data: Vec<u8>,
    types: Vec<Type>, // index = type id; 0 is void
    strings_start: usize,
    strings_len: usize,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .finish()
    }
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {off}")))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(super::VMLINUX_BTF)
    }

    /// Reads a raw BTF blob (such as a copy of /sys/kernel/btf/vmlinux) from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(data)
    }

    /// Parses a raw, little-endian BTF blob.
    pub fn from_bytes(data: Vec<u8>) -> Result<Self, BtfError> {
        if data.len() < HEADER_MIN_LEN {
            return Err(BtfError::Malformed("shorter than a BTF header".into()));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != BTF_MAGIC {
            return Err(BtfError::Malformed(format!(
                "bad magic {magic:#x} (big-endian BTF is not supported)"
            )));
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings_start = hdr_len + str_off;
        if types_end > data.len() || strings_start + str_len > data.len() {
            return Err(BtfError::Malformed(
                "sections extend past the end of the blob".into(),
            ));
        }

        let mut types = vec![Type {
            name_off: 0,
            kind: Kind::Int,
            vlen: 0,
            kind_flag: false,
            size_or_type: 0,
            extra: 0,
        }];
        let mut pos = types_start;
        while pos < types_end {
            let name_off = u32_at(&data, pos)?;
            let info = u32_at(&data, pos + 4)?;
            let size_or_type = u32_at(&data, pos + 8)?;
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind).ok_or_else(|| {
                BtfError::Malformed(format!("unknown kind {raw_kind} at byte {pos}"))
            })?;
            let vlen = (info & 0xffff) as u16;
            let extra = pos + 12;
            let n = vlen as usize;
            let extra_len = match kind {
                Kind::Int | Kind::Var | Kind::DeclTag => 4,
                Kind::Array => 12,
                Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 12 * n,
                Kind::Enum | Kind::FuncProto => 8 * n,
                _ => 0,
            };
            types.push(Type {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                extra,
            });
            pos = extra + extra_len;
        }
        if pos != types_end {
            return Err(BtfError::Malformed(
                "type section does not end on a type boundary".into(),
            ));
        }

        // No name index: building one (a String per named type) cost more than the few
        // dozen scans a trace start-up makes (see `find`).
        Ok(Self {
            data,
            types,
            strings_start,
            strings_len: str_len,
        })
    }

    /// Number of types, void included.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether the blob holds no types beyond void.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    fn string(&self, off: u32) -> Result<&str, BtfError> {
        let start = self.strings_start + off as usize;
        let end_limit = self.strings_start + self.strings_len;
        let bytes = self
            .data
            .get(start..end_limit)
            .ok_or_else(|| BtfError::Malformed(format!("string offset {off} out of range")))?;
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..len])
            .map_err(|_| BtfError::Malformed(format!("string at {off} is not UTF-8")))
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| BtfError::Malformed(format!("type id {id} out of range")))
    }

    /// The name of a type (empty when anonymous).
    pub fn type_name(&self, id: u32) -> Result<&str, BtfError> {
        self.string(self.ty(id)?.name_off)
    }

    /// The kind of a type.
    pub fn kind(&self, id: u32) -> Result<Kind, BtfError> {
        Ok(self.ty(id)?.kind)
    }

    /// Ids of the types with this name and kind.
    ///
    /// A scan over the types comparing name bytes in place (well under a millisecond for a
    /// kernel's ~130k types), so parsing builds no index.
    pub fn find(&self, name: &str, kind: Kind) -> Vec<u32> {
        let want = name.as_bytes();
        let strings = &self.data[self.strings_start..self.strings_start + self.strings_len];
        let named = |off: u32| {
            let at = off as usize;
            strings.get(at..at + want.len()) == Some(want)
                && strings.get(at + want.len()) == Some(&0)
        };
        self.types
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, t)| t.kind == kind && t.name_off != 0 && named(t.name_off))
            .map(|(id, _)| id as u32)
            .collect()
    }

    /// The struct (or union) with this name that has members (not a forward declaration),
    /// or the one a typedef of this name stands for (`possible_net_t`).
    pub fn composite(&self, name: &str) -> Result<u32, BtfError> {
        let direct = self
            .find(name, Kind::Struct)
            .into_iter()
            .chain(self.find(name, Kind::Union))
            .find(|&id| self.types[id as usize].vlen > 0);
        if let Some(id) = direct {
            return Ok(id);
        }
        for id in self.find(name, Kind::Typedef) {
            let inner = self.strip(id)?;
            let t = self.ty(inner)?;
            if matches!(t.kind, Kind::Struct | Kind::Union) && t.vlen > 0 {
                return Ok(inner);
            }
        }
        Err(BtfError::NoSuchType(name.to_owned()))
    }

    /// Follows typedefs, qualifiers and type tags to the underlying type.
    pub fn strip(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed(format!(
            "type chain from {id} is too long"
        )))
    }

    /// Size in bytes of a type (after typedefs and qualifiers).
    pub fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let id = self.strip(id)?;
        let t = self.ty(id)?;
        Ok(match t.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                t.size_or_type
            }
            Kind::Ptr => 8,
            Kind::Array => {
                let elem = u32_at(&self.data, t.extra)?;
                let n = u32_at(&self.data, t.extra + 8)?;
                self.size_of(elem)? * n
            }
            _ => 0,
        })
    }

    /// The type a pointer points to, or a variable has.
    pub fn target(&self, id: u32) -> Result<u32, BtfError> {
        let t = self.ty(id)?;
        if !matches!(t.kind, Kind::Ptr | Kind::Var) {
            return Err(BtfError::Malformed(format!(
                "type {id} is not a pointer or variable"
            )));
        }
        Ok(t.size_or_type)
    }

    /// An array's element count, and where that count sits in the blob (a byte offset, for
    /// a caller that rewrites it: see `route::datapath::object`).
    pub fn array_len(&self, id: u32) -> Result<(u32, usize), BtfError> {
        let t = self.ty(id)?;
        if t.kind != Kind::Array {
            return Err(BtfError::Malformed(format!("type {id} is not an array")));
        }
        let at = t.extra + 8;
        Ok((u32_at(&self.data, at)?, at))
    }

    /// The members of a struct or union.
    pub fn members(&self, id: u32) -> Result<Vec<Member>, BtfError> {
        let t = self.ty(id)?;
        if !matches!(t.kind, Kind::Struct | Kind::Union) {
            return Err(BtfError::Malformed(format!(
                "type {id} is not a struct or union"
            )));
        }
        (0..t.vlen as usize)
            .map(|i| {
                let at = t.extra + 12 * i;
                let name = self.string(u32_at(&self.data, at)?)?.to_owned();
                let type_id = u32_at(&self.data, at + 4)?;
                let raw = u32_at(&self.data, at + 8)?;
                let (bit_offset, bitfield_size) = if t.kind_flag {
                    (raw & 0x00ff_ffff, raw >> 24)
                } else {
                    (raw, 0)
                };
                Ok(Member {
                    name,
                    type_id,
                    bit_offset,
                    bitfield_size,
                })
            })
            .collect()
    }

    /// The enumerators of an enum (32- or 64-bit), as (name, value).
    pub fn enumerators(&self, id: u32) -> Result<Vec<(String, i64)>, BtfError> {
        let t = self.ty(self.strip(id)?)?;
        let n = t.vlen as usize;
        match t.kind {
            Kind::Enum => (0..n)
                .map(|i| {
                    let at = t.extra + 8 * i;
                    let name = self.string(u32_at(&self.data, at)?)?.to_owned();
                    let raw = u32_at(&self.data, at + 4)?;
                    // kind_flag set means signed values.
                    let v = if t.kind_flag {
                        raw as i32 as i64
                    } else {
                        raw as i64
                    };
                    Ok((name, v))
                })
                .collect(),
            Kind::Enum64 => (0..n)
                .map(|i| {
                    let at = t.extra + 12 * i;
                    let name = self.string(u32_at(&self.data, at)?)?.to_owned();
                    let lo = u32_at(&self.data, at + 4)? as u64;
                    let hi = u32_at(&self.data, at + 8)? as u64;
                    Ok((name, ((hi << 32) | lo) as i64))
                })
                .collect(),
            _ => Err(BtfError::Malformed(format!("type {id} is not an enum"))),
        }
    }

    /// The enumerators of the enum with this name.
    pub fn enum_by_name(&self, name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        let id = self
            .find(name, Kind::Enum)
            .into_iter()
            .chain(self.find(name, Kind::Enum64))
            .next()
            .ok_or_else(|| BtfError::NoSuchType(format!("enum {name}")))?;
        self.enumerators(id)
    }

    /// Finds `name` among the members of composite `id`, looking inside anonymous struct and
    /// union members too. Returns the member and its bit offset from the start of `id`.
    fn find_member(&self, id: u32, name: &str) -> Result<Option<(Member, u32)>, BtfError> {
        for m in self.members(id)? {
            if m.name == name {
                let off = m.bit_offset;
                return Ok(Some((m, off)));
            }
            if m.name.is_empty() {
                let inner = self.strip(m.type_id)?;
                if matches!(self.ty(inner)?.kind, Kind::Struct | Kind::Union)
                    && let Some((found, off)) = self.find_member(inner, name)?
                {
                    return Ok(Some((found, m.bit_offset + off)));
                }
            }
        }
        Ok(None)
    }

    /// Locates a member by a dotted path (`"ns.inum"`) inside the named struct, through
    /// nested and anonymous structs and unions.
    pub fn member_location(
        &self,
        struct_name: &str,
        path: &str,
    ) -> Result<MemberLocation, BtfError> {
        let mut id = self.composite(struct_name)?;
        let mut bit_offset = 0;
        let mut parts = path.split('.').peekable();
        let mut walked = String::new();
        while let Some(part) = parts.next() {
            let (member, off) =
                self.find_member(id, part)?
                    .ok_or_else(|| BtfError::NoSuchMember {
                        ty: format!("struct {struct_name}{walked}"),
                        member: part.to_owned(),
                    })?;
            bit_offset += off;
            walked.push('.');
            walked.push_str(part);
            let member_ty = self.strip(member.type_id)?;
            if parts.peek().is_none() {
                return Ok(MemberLocation {
                    bit_offset,
                    bitfield_size: member.bitfield_size,
                    size: self.size_of(member_ty)?,
                });
            }
            if !matches!(self.ty(member_ty)?.kind, Kind::Struct | Kind::Union) {
                let rest: Vec<&str> = parts.collect();
                return Err(BtfError::NotComposite {
                    ty: format!("struct {struct_name}"),
                    member: walked.trim_start_matches('.').to_owned(),
                    rest: rest.join("."),
                });
            }
            id = member_ty;
        }
        Err(BtfError::NoSuchMember {
            ty: format!("struct {struct_name}"),
            member: path.to_owned(),
        })
    }

    /// Byte offset of a non-bitfield member, by dotted path.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let loc = self.member_location(struct_name, path)?;
        if loc.bitfield_size != 0 || loc.bit_offset % 8 != 0 {
            return Err(BtfError::Bitfield {
                ty: struct_name.to_owned(),
                path: path.to_owned(),
            });
        }
        Ok(loc.bit_offset / 8)
    }
}

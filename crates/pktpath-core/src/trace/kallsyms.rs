//! Symbolizing kernel code addresses through /proc/kallsyms: the nearest symbol at or below
//! the address, plus the offset (`udp_queue_rcv_one_skb+0x2f`).

use std::path::Path;

/// Where the kernel lists its symbols.
pub const PROC_KALLSYMS: &str = "/proc/kallsyms";

/// Reading the symbol table failed.
#[derive(Debug, thiserror::Error)]
#[error("reading kernel symbols from {path} failed")]
pub struct KallsymsError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// The kernel's code symbols, sorted by address.
#[derive(Debug, Default, Clone)]
pub struct Kallsyms {
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads /proc/kallsyms. Without privilege the kernel shows every address as 0; the
    /// table is then empty and nothing is symbolized.
    pub fn from_proc() -> Result<Self, KallsymsError> {
        Self::from_file(PROC_KALLSYMS)
    }

    /// Reads a file in /proc/kallsyms format.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KallsymsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KallsymsError {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(&text))
    }

    /// Parses /proc/kallsyms text (`ADDRESS TYPE NAME [MODULE]` per line), keeping code
    /// symbols (types t, T, w, W) with a non-zero address. Malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut it = line.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let ty = it.next()?;
                let name = it.next()?;
                let module = it.next();
                if addr == 0 || !matches!(ty, "t" | "T" | "w" | "W") {
                    return None;
                }
                Some((
                    addr,
                    match module {
                        Some(m) => format!("{name} {m}"),
                        None => name.to_owned(),
                    },
                ))
            })
            .collect();
        syms.sort_by_key(|&(a, _)| a);
        Self { syms }
    }

    /// How many symbols are known.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// Whether no symbol is known (e.g. addresses hidden from an unprivileged reader).
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// `name+0xoff` for a code address, or None when it lies below every symbol.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let i = self.syms.partition_point(|&(a, _)| a <= addr);
        let (base, name) = self.syms.get(i.checked_sub(1)?)?;
        Some(format!("{name}+{:#x}", addr - base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> Kallsyms {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/kallsyms-6.18.txt"
        );
        Kallsyms::from_file(path).expect("recorded kallsyms excerpt")
    }

    #[test]
    fn nearest_lower_symbol_with_offset() {
        let k = recorded();
        assert!(k.len() > 10, "excerpt parsed: {}", k.len());
        assert_eq!(
            k.symbolize(0xffffffff820a64d0 + 0x2f).as_deref(),
            Some("udp_queue_rcv_one_skb+0x2f")
        );
        assert_eq!(
            k.symbolize(0xffffffff820a64d0).as_deref(),
            Some("udp_queue_rcv_one_skb+0x0")
        );
    }

    #[test]
    fn data_symbols_and_zero_addresses_are_ignored() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _text\n\
             ffffffff81000100 D some_data\n\
             0000000000000000 T hidden\n\
             garbage line\n\
             ffffffff81000200 t local_fn\n",
        );
        assert_eq!(k.len(), 2);
        assert_eq!(
            k.symbolize(0xffffffff81000180).as_deref(),
            Some("_text+0x180")
        );
        assert_eq!(
            k.symbolize(0xffffffff81000201).as_deref(),
            Some("local_fn+0x1")
        );
        assert_eq!(k.symbolize(0x1000), None);
        assert!(Kallsyms::parse("0000000000000000 T x\n").is_empty());
    }
}

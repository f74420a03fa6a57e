//! Kernel text symbols (/proc/kallsyms): drop locations as `function+0xoffset`, and the
//! function names `--functions` patterns match.

/// Kernel text symbols from /proc/kallsyms, for drop locations.
#[derive(Default)]
pub struct Kallsyms {
    /// (address, name), sorted by address.
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/kallsyms").unwrap_or_default())
    }

    /// Parses kallsyms text, keeping text symbols (`t`/`T`).
    pub fn parse(text: &str) -> Self {
        // Fixed layout `ADDR TYPE NAME[\t[module]]`; ~200k lines, parsed on every start, so
        // bytes rather than char iterators.
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let b = line.as_bytes();
                let sp = b.iter().position(|&c| c == b' ')?;
                let ty = *b.get(sp + 1)?;
                if (ty != b't' && ty != b'T') || b.get(sp + 2) != Some(&b' ') {
                    return None;
                }
                let addr = u64::from_str_radix(&line[..sp], 16).ok()?;
                let rest = &line[sp + 3..];
                let name = rest.split('\t').next()?.trim_end();
                (addr != 0 && !name.is_empty()).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort_unstable_by_key(|(a, _)| *a);
        Kallsyms { syms }
    }

    /// Every text symbol name, in address order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.syms.iter().map(|(_, n)| n.as_str())
    }

    /// `function+0xoffset`, or the raw address when unknown (kallsyms hidden: kptr_restrict).
    pub fn symbolize(&self, addr: u64) -> String {
        let idx = self.syms.partition_point(|(a, _)| *a <= addr);
        match idx.checked_sub(1).map(|i| &self.syms[i]) {
            Some((start, name)) => format!("{name}+0x{:x}", addr - start),
            None => format!("0x{addr:x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_symbolizes_inside_functions_and_skips_data() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t ip_rcv_core\nffffffff81000200 D some_data\nffffffff81000300 T ip_forward\nffffffffc0001000 t nft_do_chain\t[nf_tables]\n",
        );
        assert_eq!(k.symbolize(0xffffffffc0001010), "nft_do_chain+0x10");
        assert_eq!(k.symbolize(0xffffffff81000142), "ip_rcv_core+0x42");
        assert_eq!(k.symbolize(0xffffffff81000300), "ip_forward+0x0");
        assert_eq!(k.symbolize(0x10), "0x10");
    }
}

//! nftables rules that drop or reject, read over NETLINK_NETFILTER (NFT_MSG_GETTABLE,
//! GETCHAIN, GETRULE dumps) without running `nft`.
//!
//! Rules arrive as register-machine expressions (payload/meta loads, bitwise masks, compares,
//! an immediate verdict). [`decode_rule`] turns them back into text close to what `nft list
//! ruleset` prints (`ip6 daddr fd00::/64 drop`, `tcp dport 443 reject`): enough for a human to
//! find the rule, and for the diagnosis to see which address a rule names.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{attrs, Netlink, SysError};
use crate::node::netns::NetnsRef;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFT_TABLE_F_DORMANT: u32 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_BREAK: i32 = -2;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// How a rule discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    Drop,
    Reject,
    /// A base chain whose policy is drop.
    Policy,
}

/// A rule (or base-chain policy) that drops or rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRule {
    /// `inet`, `ip`, `ip6`, `bridge`, `netdev`, `arp`.
    pub family: String,
    pub table: String,
    pub chain: String,
    pub handle: Option<u64>,
    pub discard: Discard,
    /// The rule as nft would print it (`ip6 daddr fd00::/64 drop`), or `policy drop`.
    pub text: String,
}

/// `table inet filter chain forward: ip6 daddr fd00::/64 drop # handle 4`.
impl fmt::Display for DropRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "table {} {} chain {}: {}",
            self.family, self.table, self.chain, self.text
        )?;
        if let Some(h) = self.handle {
            write!(f, " # handle {h}")?;
        }
        Ok(())
    }
}

/// A chain as the chain dump describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftChain {
    pub family: u8,
    pub table: String,
    pub name: String,
    /// Base chains (attached to a hook) have a policy.
    pub policy: Option<i32>,
}

/// A decoded rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub handle: Option<u64>,
    pub text: String,
    pub discard: Option<Discard>,
}

/// Rules of `ns` that drop or reject, and base chains with policy drop, chain by chain in the
/// kernel's order (a chain's policy before its rules). Dormant tables are left out: they do
/// not filter. A kernel without nf_tables has none.
pub fn drop_rules(ns: &NetnsRef) -> Result<Vec<DropRule>, SysError> {
    let mut nl = Netlink::open(ns, netlink_sys::protocols::NETLINK_NETFILTER)?;
    let dump = |nl: &mut Netlink, msg: u16, answer: u16| match nl.request(
        (NFNL_SUBSYS_NFTABLES << 8) | msg,
        true,
        &[0, 0, 0, 0],
    ) {
        Ok(replies) => Ok(replies
            .into_iter()
            .filter(|r| r.kind == (NFNL_SUBSYS_NFTABLES << 8) | answer)
            .map(|r| r.payload)
            .collect::<Vec<_>>()),
        // No nf_tables in this kernel: no rules.
        Err(SysError::Kernel(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::ENOENT)) => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    };
    let dormant: Vec<(u8, String)> = dump(&mut nl, NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE)?
        .iter()
        .filter_map(|p| decode_table(p))
        .filter(|(_, _, flags)| flags & NFT_TABLE_F_DORMANT != 0)
        .map(|(family, name, _)| (family, name))
        .collect();
    let chains: Vec<NftChain> = dump(&mut nl, NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN)?
        .iter()
        .filter_map(|p| decode_chain(p))
        .collect();
    let rules: Vec<NftRule> = dump(&mut nl, NFT_MSG_GETRULE, NFT_MSG_NEWRULE)?
        .iter()
        .filter_map(|p| decode_rule(p))
        .collect();
    Ok(collect_drops(&chains, &rules)
        .into_iter()
        .filter(|d| {
            !dormant
                .iter()
                .any(|(f, t)| family_name(*f) == d.family && *t == d.table)
        })
        .collect())
}

/// Chain by chain: a drop policy, then the rules that discard.
pub fn collect_drops(chains: &[NftChain], rules: &[NftRule]) -> Vec<DropRule> {
    let mut out = Vec::new();
    let as_drop = |r: &NftRule, discard| DropRule {
        family: family_name(r.family).into(),
        table: r.table.clone(),
        chain: r.chain.clone(),
        handle: r.handle,
        discard,
        text: r.text.clone(),
    };
    let in_chain =
        |r: &NftRule, c: &NftChain| r.family == c.family && r.table == c.table && r.chain == c.name;
    for c in chains {
        if c.policy == Some(NF_DROP) {
            out.push(DropRule {
                family: family_name(c.family).into(),
                table: c.table.clone(),
                chain: c.name.clone(),
                handle: None,
                discard: Discard::Policy,
                text: "policy drop".into(),
            });
        }
        for r in rules.iter().filter(|r| in_chain(r, c)) {
            if let Some(d) = r.discard {
                out.push(as_drop(r, d));
            }
        }
    }
    // Rules of a chain the chain dump missed (changed in between).
    for r in rules
        .iter()
        .filter(|r| !chains.iter().any(|c| in_chain(r, c)))
    {
        if let Some(d) = r.discard {
            out.push(as_drop(r, d));
        }
    }
    out
}

/// An nfgenmsg family as nft names it.
pub fn family_name(family: u8) -> &'static str {
    match family {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        NFPROTO_IPV6 => "ip6",
        _ => "unknown",
    }
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

fn string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

/// NFT_MSG_NEWTABLE payload: (family, name, flags).
pub fn decode_table(payload: &[u8]) -> Option<(u8, String, u32)> {
    let family = *payload.first()?;
    let a = payload.get(4..)?;
    Some((
        family,
        string(attr(a, NFTA_TABLE_NAME)?),
        attr(a, NFTA_TABLE_FLAGS).and_then(be32).unwrap_or(0),
    ))
}

/// NFT_MSG_NEWCHAIN payload.
pub fn decode_chain(payload: &[u8]) -> Option<NftChain> {
    let family = *payload.first()?;
    let a = payload.get(4..)?;
    let base = attr(a, NFTA_CHAIN_HOOK).is_some();
    Some(NftChain {
        family,
        table: string(attr(a, NFTA_CHAIN_TABLE)?),
        name: string(attr(a, NFTA_CHAIN_NAME)?),
        policy: attr(a, NFTA_CHAIN_POLICY)
            .and_then(be32)
            .map(|p| p as i32)
            .filter(|_| base),
    })
}

/// One expression of a rule, as far as it is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load `len` bytes at `offset` of header `base` (0 link, 1 network, 2 transport).
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    Meta {
        dreg: u32,
        key: u32,
    },
    Ct {
        dreg: u32,
        key: u32,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Range {
        sreg: u32,
        op: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Lookup {
        sreg: u32,
        set: String,
        inverted: bool,
        verdict_map: bool,
    },
    Verdict {
        code: i32,
        chain: Option<String>,
    },
    Reject {
        kind: u32,
        code: u8,
    },
    /// xtables compatibility (iptables-nft): `match`/`target` with its extension name.
    Xt {
        target: bool,
        name: String,
    },
    Counter,
    Other(String),
}

/// NFT_MSG_NEWRULE payload (nfgenmsg, then attributes) to a rule with its text.
pub fn decode_rule(payload: &[u8]) -> Option<NftRule> {
    let family = *payload.first()?;
    let a = payload.get(4..)?;
    let exprs: Vec<Expr> = attr(a, NFTA_RULE_EXPRESSIONS)
        .map(|list| {
            attrs(list)
                .filter(|(k, _)| *k == NFTA_LIST_ELEM)
                .map(|(_, e)| decode_expr(e))
                .collect()
        })
        .unwrap_or_default();
    let (text, discard) = render(family, &exprs);
    Some(NftRule {
        family,
        table: string(attr(a, NFTA_RULE_TABLE)?),
        chain: string(attr(a, NFTA_RULE_CHAIN)?),
        handle: attr(a, NFTA_RULE_HANDLE).and_then(be64),
        text,
        discard,
    })
}

/// One NFTA_LIST_ELEM of a rule's expressions.
pub fn decode_expr(elem: &[u8]) -> Expr {
    let name = attr(elem, NFTA_EXPR_NAME).map(string).unwrap_or_default();
    let d = attr(elem, NFTA_EXPR_DATA).unwrap_or(&[]);
    let n = |k| attr(d, k).and_then(be32).unwrap_or(0);
    let value = |k| {
        attr(d, k)
            .and_then(|v| attr(v, NFTA_DATA_VALUE))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    };
    match name.as_str() {
        // A payload with a source register writes the packet (mangle): not a match.
        "payload" if attr(d, 5).is_none() => Expr::Payload {
            dreg: n(1),
            base: n(2),
            offset: n(3),
            len: n(4),
        },
        "meta" if attr(d, 1).is_some() => Expr::Meta {
            dreg: n(1),
            key: n(2),
        },
        "ct" if attr(d, 1).is_some() => Expr::Ct {
            dreg: n(1),
            key: n(2),
        },
        "bitwise" if n(6) == 0 => Expr::Bitwise {
            sreg: n(1),
            dreg: n(2),
            mask: value(4),
        },
        "cmp" => Expr::Cmp {
            sreg: n(1),
            op: n(2),
            data: value(3),
        },
        "range" => Expr::Range {
            sreg: n(1),
            op: n(2),
            from: value(3),
            to: value(4),
        },
        "lookup" => Expr::Lookup {
            sreg: n(2),
            set: attr(d, 1).map(string).unwrap_or_default(),
            inverted: n(5) & 1 != 0,
            verdict_map: attr(d, 3).and_then(be32) == Some(0),
        },
        "immediate" if n(1) == 0 => {
            let verdict = attr(d, 2).and_then(|v| attr(v, NFTA_DATA_VERDICT));
            match verdict {
                Some(v) => Expr::Verdict {
                    code: attr(v, NFTA_VERDICT_CODE).and_then(be32).unwrap_or(0) as i32,
                    chain: attr(v, NFTA_VERDICT_CHAIN).map(string),
                },
                None => Expr::Other(name),
            }
        }
        "reject" => Expr::Reject {
            kind: n(1),
            code: attr(d, 2).and_then(|v| v.first().copied()).unwrap_or(0),
        },
        "target" | "match" => Expr::Xt {
            target: name == "target",
            name: attr(d, 1).map(string).unwrap_or_default(),
        },
        "counter" => Expr::Counter,
        _ => Expr::Other(name),
    }
}

/// What a register holds: a field of the packet or its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    /// Address field (`ip daddr`), compared with the first `prefix` bits.
    Addr {
        name: String,
        v6: bool,
        prefix: u32,
    },
    /// A 1-byte protocol number (`ip protocol`, `meta l4proto`): sets the layer-4 context.
    L4Proto(String),
    /// `meta nfproto`: sets the layer-3 context.
    NfProto,
    /// A port or other big-endian number.
    Number(String),
    /// An interface name.
    IfName(String),
    /// `ct state` bits, under a mask when a bitwise expression selected some.
    CtState(Option<u32>),
    Raw(String),
}

/// A matched condition, and whether it is only a dependency nft prints implicitly.
struct Term {
    text: String,
    implied_by: Option<u32>,
}

const L3_DEP: u32 = 1;
const L4_DEP: u32 = 2;

/// The rule's text and how it discards (None: it does not).
pub fn render(family: u8, exprs: &[Expr]) -> (String, Option<Discard>) {
    let mut nfproto = match family {
        NFPROTO_IPV4 | NFPROTO_IPV6 => Some(family),
        _ => None,
    };
    let mut l4: Option<u8> = None;
    let mut regs: Vec<(u32, Field)> = Vec::new();
    let mut terms: Vec<Term> = Vec::new();
    let mut discard = None;
    let set_reg = |regs: &mut Vec<(u32, Field)>, r: u32, f: Field| {
        regs.retain(|(x, _)| *x != r);
        regs.push((r, f));
    };
    let reg = |regs: &Vec<(u32, Field)>, r: u32| {
        regs.iter()
            .find(|(x, _)| *x == r)
            .map(|(_, f)| f.clone())
            .unwrap_or(Field::Raw(format!("reg {r}")))
    };
    for e in exprs {
        match e {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => set_reg(
                &mut regs,
                *dreg,
                payload_field(nfproto, l4, *base, *offset, *len),
            ),
            Expr::Meta { dreg, key } => set_reg(&mut regs, *dreg, meta_field(*key)),
            Expr::Ct { dreg, key } => set_reg(
                &mut regs,
                *dreg,
                if *key == 0 {
                    Field::CtState(None)
                } else {
                    Field::Raw(format!("ct key {key}"))
                },
            ),
            Expr::Bitwise { sreg, dreg, mask } => {
                let mut f = reg(&regs, *sreg);
                match &mut f {
                    Field::Addr { prefix, .. } => *prefix = (*prefix).min(leading_ones(mask)),
                    Field::CtState(m) if mask.len() == 4 => {
                        *m = Some(u32::from_ne_bytes(mask[..4].try_into().expect("4 bytes")))
                    }
                    _ => {}
                }
                set_reg(&mut regs, *dreg, f);
            }
            Expr::Cmp { sreg, op, data } => {
                let f = reg(&regs, *sreg);
                let implied_by = match f {
                    Field::NfProto => {
                        nfproto = data.first().copied();
                        Some(L3_DEP)
                    }
                    Field::L4Proto(_) if *op == 0 => {
                        l4 = data.first().copied();
                        Some(L4_DEP)
                    }
                    _ => None,
                };
                let text = match f {
                    // `ct state established,related`: (state & mask) != 0.
                    Field::CtState(Some(mask)) if *op == 1 && data.iter().all(|b| *b == 0) => {
                        format!("ct state {}", ct_state_names(mask))
                    }
                    _ => format!("{}{}{}", field_name(&f), op_text(*op), value_text(&f, data)),
                };
                // `tcp sport 1000-2000` is `>= 1000` then `<= 2000` on the same register.
                let lower = format!("{} >= ", field_name(&f));
                if let (3, Some(last)) = (*op, terms.last_mut()) {
                    if let Some(from) = last.text.strip_prefix(&lower) {
                        last.text = format!("{} {from}-{}", field_name(&f), value_text(&f, data));
                        continue;
                    }
                }
                terms.push(Term { text, implied_by });
            }
            Expr::Range { sreg, op, from, to } => {
                let f = reg(&regs, *sreg);
                terms.push(Term {
                    text: format!(
                        "{}{}{}-{}",
                        field_name(&f),
                        op_text(*op),
                        value_text(&f, from),
                        value_text(&f, to)
                    ),
                    implied_by: None,
                });
            }
            Expr::Lookup {
                sreg,
                set,
                inverted,
                verdict_map,
            } => {
                let f = reg(&regs, *sreg);
                let text = if *verdict_map {
                    format!("{} vmap @{set}", field_name(&f))
                } else {
                    format!(
                        "{}{}@{set}",
                        field_name(&f),
                        if *inverted { " != " } else { " " }
                    )
                };
                terms.push(Term {
                    text,
                    implied_by: None,
                });
            }
            Expr::Verdict { code, chain } => {
                let text = match (*code, chain) {
                    (NF_DROP, _) => {
                        discard = Some(Discard::Drop);
                        "drop".to_string()
                    }
                    (NF_ACCEPT, _) => "accept".into(),
                    (NFT_CONTINUE, _) => "continue".into(),
                    (NFT_BREAK, _) => "break".into(),
                    (NFT_RETURN, _) => "return".into(),
                    (NFT_JUMP, Some(c)) => format!("jump {c}"),
                    (NFT_GOTO, Some(c)) => format!("goto {c}"),
                    (c, _) => format!("verdict {c}"),
                };
                terms.push(Term {
                    text,
                    implied_by: None,
                });
            }
            Expr::Reject { kind, code } => {
                discard = Some(Discard::Reject);
                terms.push(Term {
                    text: reject_text(family, nfproto, *kind, *code),
                    implied_by: None,
                });
            }
            Expr::Xt { target, name } => {
                if *target && (name == "REJECT" || name == "DROP") {
                    discard = Some(if name == "DROP" {
                        Discard::Drop
                    } else {
                        Discard::Reject
                    });
                }
                terms.push(Term {
                    text: format!("xt {} {name}", if *target { "target" } else { "match" }),
                    implied_by: None,
                });
            }
            Expr::Counter => {}
            Expr::Other(name) => terms.push(Term {
                text: name.clone(),
                implied_by: None,
            }),
        }
    }
    // Dependencies nft adds and does not print: `meta nfproto ipv6` before `ip6 daddr`,
    // `meta l4proto tcp` before `tcp dport`.
    let has = |prefixes: &[&str]| {
        terms
            .iter()
            .any(|t| t.implied_by.is_none() && prefixes.iter().any(|p| t.text.starts_with(p)))
    };
    let l3_shown = has(&["ip ", "ip6 "]);
    let l4_shown = has(&[
        "tcp ", "udp ", "sctp ", "dccp ", "udplite ", "icmp ", "icmpv6 ",
    ]);
    let text = terms
        .iter()
        .filter(|t| match t.implied_by {
            Some(L3_DEP) => !l3_shown,
            Some(L4_DEP) => !l4_shown,
            _ => true,
        })
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    (text, discard)
}

fn leading_ones(mask: &[u8]) -> u32 {
    let mut n = 0;
    for b in mask {
        n += b.leading_ones();
        if *b != 0xff {
            break;
        }
    }
    n
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        _ => p.to_string(),
    }
}

fn payload_field(nfproto: Option<u8>, l4: Option<u8>, base: u32, offset: u32, len: u32) -> Field {
    let addr = |name: &str, v6: bool, size: u32| Field::Addr {
        name: name.into(),
        v6,
        prefix: len.min(size) * 8,
    };
    match (base, nfproto) {
        (1, Some(NFPROTO_IPV4)) => match (offset, len) {
            (9, 1) => return Field::L4Proto("ip protocol".into()),
            (12, 1..=4) => return addr("ip saddr", false, 4),
            (16, 1..=4) => return addr("ip daddr", false, 4),
            _ => {}
        },
        (1, Some(NFPROTO_IPV6)) => match (offset, len) {
            (6, 1) => return Field::L4Proto("ip6 nexthdr".into()),
            (8, 1..=16) => return addr("ip6 saddr", true, 16),
            (24, 1..=16) => return addr("ip6 daddr", true, 16),
            _ => {}
        },
        (2, _) => {
            let proto = l4.map(proto_name).unwrap_or_else(|| "th".into());
            match (l4, offset, len) {
                (Some(1 | 58), 0, 1) => return Field::Number(format!("{proto} type")),
                (Some(1 | 58), 1, 1) => return Field::Number(format!("{proto} code")),
                (Some(1 | 58), ..) => {}
                (_, 0, 2) => return Field::Number(format!("{proto} sport")),
                (_, 2, 2) => return Field::Number(format!("{proto} dport")),
                _ => {}
            }
        }
        _ => {}
    }
    let base = match base {
        0 => "ll",
        1 => "nh",
        2 => "th",
        _ => "ih",
    };
    Field::Raw(format!("@{base},{},{}", offset * 8, len * 8))
}

fn meta_field(key: u32) -> Field {
    match key {
        0 => Field::Number("meta length".into()),
        1 => Field::Raw("meta protocol".into()),
        3 => Field::Number("meta mark".into()),
        4 => Field::Number("meta iif".into()),
        5 => Field::Number("meta oif".into()),
        6 => Field::IfName("iifname".into()),
        7 => Field::IfName("oifname".into()),
        10 => Field::Number("meta skuid".into()),
        11 => Field::Number("meta skgid".into()),
        15 => Field::NfProto,
        16 => Field::L4Proto("meta l4proto".into()),
        k => Field::Raw(format!("meta key {k}")),
    }
}

fn field_name(f: &Field) -> String {
    match f {
        Field::Addr { name, .. }
        | Field::L4Proto(name)
        | Field::Number(name)
        | Field::IfName(name)
        | Field::Raw(name) => name.clone(),
        Field::NfProto => "meta nfproto".into(),
        Field::CtState(_) => "ct state".into(),
    }
}

fn op_text(op: u32) -> &'static str {
    match op {
        0 => " ",
        1 => " != ",
        2 => " < ",
        3 => " <= ",
        4 => " > ",
        _ => " >= ",
    }
}

fn value_text(f: &Field, data: &[u8]) -> String {
    match f {
        Field::Addr { v6, prefix, .. } => {
            let size = if *v6 { 16 } else { 4 };
            let mut bytes = data.to_vec();
            bytes.resize(size, 0);
            let ip: IpAddr = if *v6 {
                let b: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
                Ipv6Addr::from(b).into()
            } else {
                let b: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
                Ipv4Addr::from(b).into()
            };
            if *prefix < size as u32 * 8 {
                format!("{ip}/{prefix}")
            } else {
                ip.to_string()
            }
        }
        Field::L4Proto(_) => data.first().map(|p| proto_name(*p)).unwrap_or_default(),
        Field::NfProto => match data.first() {
            Some(&NFPROTO_IPV4) => "ipv4".into(),
            Some(&NFPROTO_IPV6) => "ipv6".into(),
            Some(p) => p.to_string(),
            None => String::new(),
        },
        Field::Number(name) if name.starts_with("meta ") && data.len() == 4 => {
            // Host-order metadata (marks, ifindexes, uids).
            u32::from_ne_bytes(data.try_into().expect("4 bytes")).to_string()
        }
        Field::Number(_) if data.len() <= 8 && !data.is_empty() => data
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | *b as u64)
            .to_string(),
        Field::IfName(_) => format!("\"{}\"", string(data)),
        Field::CtState(_) if data.len() == 4 => {
            ct_state_names(u32::from_ne_bytes(data.try_into().expect("4 bytes")))
        }
        _ => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn ct_state_names(bits: u32) -> String {
    let names: Vec<&str> = [
        (1, "invalid"),
        (2, "established"),
        (4, "related"),
        (8, "new"),
        (64, "untracked"),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "0".into()
    } else {
        names.join(",")
    }
}

/// `reject` as nft prints it: the table family's default (icmpx in inet and bridge tables,
/// icmp or icmpv6 port-unreachable in ip and ip6 ones) is left out.
fn reject_text(family: u8, nfproto: Option<u8>, kind: u32, code: u8) -> String {
    let icmp_default = family == NFPROTO_IPV4 || family == NFPROTO_IPV6;
    match kind {
        1 => "reject with tcp reset".into(),
        0 if nfproto == Some(NFPROTO_IPV6) => {
            let name = match code {
                0 => "no-route",
                1 => "admin-prohibited",
                3 => "addr-unreachable",
                4 if icmp_default => return "reject".into(),
                4 => "port-unreachable",
                5 => "policy-fail",
                6 => "reject-route",
                _ => return format!("reject with icmpv6 code {code}"),
            };
            format!("reject with icmpv6 {name}")
        }
        0 => {
            let name = match code {
                0 => "net-unreachable",
                1 => "host-unreachable",
                2 => "prot-unreachable",
                3 if icmp_default => return "reject".into(),
                3 => "port-unreachable",
                9 => "net-prohibited",
                10 => "host-prohibited",
                13 => "admin-prohibited",
                _ => return format!("reject with icmp code {code}"),
            };
            format!("reject with icmp {name}")
        }
        _ => {
            let name = match code {
                0 => "no-route",
                1 if !icmp_default => return "reject".into(),
                1 => "port-unreachable",
                2 => "host-unreachable",
                3 => "admin-prohibited",
                _ => return format!("reject with icmpx code {code}"),
            };
            format!("reject with icmpx {name}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // NFT_MSG_NEWRULE payloads as Linux 6.18 sent them for rules nft 1.0.6 added (x86_64).
    // table inet t chain fw: `ip6 daddr fd77:2::2 drop` (handle 2).
    const INET_DADDR_DROP: &str = "0100000a060001007400000007000200667700000c0003000000000000000002f000040024000100090001006d6574610000000014000200080002000000000f08000100000000012c00010008000100636d700020000200080001000000000108000200000000000c000300050001000a000000340001000c0001007061796c6f6164002400020008000100000000010800020000000001080003000000001808000400000000103800010008000100636d70002c000200080001000000000108000200000000001800030014000100fd770002000000000000000000000002300001000e000100696d6d6564696174650000001c0002000800010000000000100002000c0002000800010000000000";
    // `ip saddr 10.0.0.0/8 tcp dport 443 reject` (icmp port-unreachable in an inet table).
    const INET_TCP_REJECT: &str = "0100000a060001007400000007000200667700000c00030000000000000000030c00060000000000000000028801040024000100090001006d6574610000000014000200080002000000000f08000100000000012c00010008000100636d700020000200080001000000000108000200000000000c0003000500010002000000340001000c0001007061796c6f6164002400020008000100000000010800020000000001080003000000000c08000400000000012c00010008000100636d700020000200080001000000000108000200000000000c000300050001000a00000024000100090001006d6574610000000014000200080002000000001008000100000000012c00010008000100636d700020000200080001000000000108000200000000000c0003000500010006000000340001000c0001007061796c6f6164002400020008000100000000010800020000000002080003000000000208000400000000022c00010008000100636d700020000200080001000000000108000200000000000c0003000600010001bb0000240001000b00010072656a65637400001400020008000100000000000500020003000000";
    // `ct state established,related accept`.
    const INET_CT_ACCEPT: &str = "0100000a060001007400000007000200667700000c00030000000000000000040c0006000000000000000003cc00040020000100070001006374000014000200080001000000000108000200000000004c0001000c00010062697477697365003c00020008000100000000010800020000000001080003000000000408000600000000000c00040008000100060000000c00050008000100000000002c00010008000100636d700020000200080001000000000108000200000000010c0003000800010000000000300001000e000100696d6d6564696174650000001c0002000800010000000000100002000c0002000800010000000001";
    // `ip6 saddr fd00:1:2::/60 udp sport 53 counter reject with icmpv6 admin-prohibited`: a
    // prefix that is not a whole number of bytes goes through a bitwise mask.
    const INET_PREFIX60_REJECT: &str = "0100000a060001007400000007000200667700000c00030000000000000000050c00060000000000000000042402040024000100090001006d6574610000000014000200080002000000000f08000100000000012c00010008000100636d700020000200080001000000000108000200000000000c000300050001000a000000340001000c0001007061796c6f616400240002000800010000000001080002000000000108000300000000080800040000000010640001000c00010062697477697365005400020008000100000000010800020000000001080003000000001008000600000000001800040014000100fffffffffffffff000000000000000001800050014000100000000000000000000000000000000003800010008000100636d70002c000200080001000000000108000200000000001800030014000100fd00000100020000000000000000000024000100090001006d6574610000000014000200080002000000001008000100000000012c00010008000100636d700020000200080001000000000108000200000000000c0003000500010011000000340001000c0001007061796c6f6164002400020008000100000000010800020000000002080003000000000008000400000000022c00010008000100636d700020000200080001000000000108000200000000000c00030006000100003500002c0001000c000100636f756e746572001c0002000c00010000000000000000000c0002000000000000000000240001000b00010072656a65637400001400020008000100000000000500020001000000";
    // table ip x chain o: `ip daddr 10.9.0.0/16 oifname "va" drop`.
    const IP_OIFNAME_DROP: &str = "0200000a0600010078000000060002006f0000000c0003000000000000000002f0000400340001000c0001007061796c6f6164002400020008000100000000010800020000000001080003000000001008000400000000022c00010008000100636d700020000200080001000000000108000200000000000c000300060001000a09000024000100090001006d6574610000000014000200080002000000000708000100000000013800010008000100636d70002c00020008000100000000010800020000000000180003001400010076610000000000000000000000000000300001000e000100696d6d6564696174650000001c0002000800010000000000100002000c0002000800010000000000";

    fn rule(h: &str) -> NftRule {
        decode_rule(&hex(h)).expect("decodes")
    }

    #[test]
    fn kernel_rules_read_as_nft_prints_them() {
        let r = rule(INET_DADDR_DROP);
        assert_eq!(
            (r.family, r.table.as_str(), r.chain.as_str(), r.handle),
            (1, "t", "fw", Some(2))
        );
        assert_eq!(r.text, "ip6 daddr fd77:2::2 drop");
        assert_eq!(r.discard, Some(Discard::Drop));

        let r = rule(INET_TCP_REJECT);
        assert_eq!(
            r.text,
            "ip saddr 10.0.0.0/8 tcp dport 443 reject with icmp port-unreachable"
        );
        assert_eq!((r.handle, r.discard), (Some(3), Some(Discard::Reject)));

        let r = rule(INET_CT_ACCEPT);
        assert_eq!(r.text, "ct state established,related accept");
        assert_eq!(r.discard, None);

        let r = rule(INET_PREFIX60_REJECT);
        assert_eq!(
            r.text,
            "ip6 saddr fd00:1:2::/60 udp sport 53 reject with icmpv6 admin-prohibited"
        );
        assert_eq!(r.discard, Some(Discard::Reject));

        let r = rule(IP_OIFNAME_DROP);
        assert_eq!(
            (r.family, r.table.as_str(), r.chain.as_str()),
            (2, "x", "o")
        );
        assert_eq!(r.text, "ip daddr 10.9.0.0/16 oifname \"va\" drop");
    }

    #[test]
    fn drops_are_listed_chain_by_chain_with_policies_first() {
        let chains = [
            NftChain {
                family: 1,
                table: "t".into(),
                name: "fw".into(),
                policy: Some(NF_DROP),
            },
            NftChain {
                family: 2,
                table: "x".into(),
                name: "o".into(),
                policy: Some(NF_ACCEPT),
            },
        ];
        let rules: Vec<NftRule> = [
            IP_OIFNAME_DROP,
            INET_DADDR_DROP,
            INET_CT_ACCEPT,
            INET_TCP_REJECT,
        ]
        .iter()
        .map(|h| rule(h))
        .collect();
        let text: Vec<String> = collect_drops(&chains, &rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "table inet t chain fw: policy drop",
                "table inet t chain fw: ip6 daddr fd77:2::2 drop # handle 2",
                "table inet t chain fw: ip saddr 10.0.0.0/8 tcp dport 443 reject with icmp port-unreachable # handle 3",
                "table ip x chain o: ip daddr 10.9.0.0/16 oifname \"va\" drop # handle 2",
            ]
        );
    }

    #[test]
    fn truncated_or_foreign_bytes_do_not_panic() {
        let full = hex(INET_PREFIX60_REJECT);
        for cut in 0..full.len() {
            let _ = decode_rule(&full[..cut]);
        }
        assert!(decode_rule(&[]).is_none());
        assert!(decode_chain(&[1, 0]).is_none());
        // A verdict map and an iptables-nft target are recognised by name.
        let (text, discard) = render(
            2,
            &[
                Expr::Xt {
                    target: false,
                    name: "conntrack".into(),
                },
                Expr::Xt {
                    target: true,
                    name: "REJECT".into(),
                },
            ],
        );
        assert_eq!(text, "xt match conntrack xt target REJECT");
        assert_eq!(discard, Some(Discard::Reject));
        let sport = Expr::Payload {
            dreg: 1,
            base: 2,
            offset: 0,
            len: 2,
        };
        let cmp = |op, port: u16| Expr::Cmp {
            sreg: 1,
            op,
            data: port.to_be_bytes().to_vec(),
        };
        let (text, _) = render(
            10,
            &[
                sport,
                cmp(5, 1000),
                cmp(3, 2000),
                Expr::Verdict {
                    code: NF_DROP,
                    chain: None,
                },
            ],
        );
        assert_eq!(text, "th sport 1000-2000 drop");
        assert_eq!(reject_text(10, Some(10), 0, 4), "reject");
        assert_eq!(reject_text(1, Some(2), 2, 1), "reject");
        assert_eq!(reject_text(1, None, 1, 0), "reject with tcp reset");
    }
}

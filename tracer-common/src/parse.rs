//! Header parser shared by the kernel programs (in-kernel filter) and userspace (decoding).
//!
//! It reads Ethernet (+ up to two 802.1Q/802.1ad tags), IPv4 (with options), IPv6 (with a
//! bounded extension-header chain), TCP/UDP/SCTP/ICMP/ICMPv6, and one level of encapsulation:
//! VXLAN, Geneve, GRE, IPIP, IPv6-in-IPv4, IPv4-in-IPv6, IPv6-in-IPv6. Every read is bounds
//! checked and loops are bounded, so the same code passes the BPF verifier and never panics on
//! truncated or malformed bytes: what cannot be read is left zero.

/// Encapsulation types (`Parsed::tunnel`).
pub mod tunnel {
    pub const NONE: u8 = 0;
    pub const VXLAN: u8 = 1;
    pub const GENEVE: u8 = 2;
    pub const GRE: u8 = 3;
    /// IPv4 in IPv4 (protocol 4 over IPv4).
    pub const IPIP: u8 = 4;
    /// IPv6 in IPv4 (protocol 41 over IPv4, "sit").
    pub const IP6IN4: u8 = 5;
    /// IPv4 in IPv6 (protocol 4 over IPv6).
    pub const IP4IN6: u8 = 6;
    /// IPv6 in IPv6 (protocol 41 over IPv6).
    pub const IP6IN6: u8 = 7;
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_TEB: u16 = 0x6558;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

pub const VXLAN_PORT: u16 = 4789;
/// Linux's historical VXLAN port, used by flannel.
pub const VXLAN_PORT_LINUX: u16 = 8472;
pub const GENEVE_PORT: u16 = 6081;

/// Most IPv6 extension headers followed before giving up.
pub const MAX_IPV6_EXT: usize = 6;

/// One IP layer and its transport header.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Flow {
    /// 4 or 6; 0 when there is no IP header.
    pub family: u8,
    /// Transport protocol after extension headers.
    pub proto: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Offset of the IP header in the buffer.
    pub l3_off: u16,
    /// Offset of the transport header (0 if unknown).
    pub l4_off: u16,
    /// IPv4 identification, or the IPv6 flow label.
    pub ip_id: u32,
    /// TCP sequence number, or ICMP/ICMPv6 echo `id << 16 | seq`.
    pub l4_ident: u32,
    /// TCP acknowledgment number.
    pub l4_ack: u32,
    /// IP payload length from the header (IPv4 total length - header, IPv6 payload length).
    pub ip_payload_len: u16,
    pub ttl: u8,
    pub tcp_flags: u8,
    /// Non-first fragment: no transport header.
    pub fragment: u8,
    pub _pad: [u8; 3],
}

/// What the parser found in one packet. 8-aligned, a multiple of 8 bytes: the kernel zeroes
/// it a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub outer: Flow,
    /// The encapsulated packet when `tunnel != NONE` (family 0 if it could not be read).
    pub inner: Flow,
    pub tunnel: u8,
    pub _pad: u8,
    /// Ethertype after VLAN tags (or skb->protocol when there is no MAC header).
    pub ethertype: u16,
    /// Outer VLAN id, 0 if untagged.
    pub vlan: u16,
    pub _pad2: u16,
    /// VXLAN/Geneve VNI or GRE key.
    pub vni: u32,
    pub _pad3: u32,
}

impl Parsed {
    /// The innermost IP layer: what the workload sent.
    #[inline(always)]
    pub fn innermost(&self) -> &Flow {
        if self.tunnel != tunnel::NONE && self.inner.family != 0 {
            &self.inner
        } else {
            &self.outer
        }
    }
}

/// `off`, already checked against the buffer's length, as the index the read uses. In the
/// kernel every buffer is a copy of at most SNAP_LEN bytes, and the index is masked to that:
/// older verifiers (Linux 6.1) learn nothing about an offset from comparing it with another
/// variable such as the copied length, only from a mask or a constant. The mask changes
/// nothing for such a buffer and keeps any index inside SNAP_LEN; userspace reads whole
/// packets unmasked.
#[inline(always)]
fn index(off: usize) -> usize {
    if cfg!(target_arch = "bpf") {
        off & (crate::SNAP_LEN - 1)
    } else {
        off
    }
}

#[inline(always)]
fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    if off >= b.len() {
        return None;
    }
    b.get(index(off)).copied()
}

#[inline(always)]
fn be16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([u8_at(b, off)?, u8_at(b, off + 1)?]))
}

#[inline(always)]
fn be32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        u8_at(b, off)?,
        u8_at(b, off + 1)?,
        u8_at(b, off + 2)?,
        u8_at(b, off + 3)?,
    ]))
}

#[inline(always)]
fn copy_addr<const N: usize>(b: &[u8], off: usize, out: &mut [u8; 16]) -> Option<()> {
    if off.checked_add(N)? > b.len() {
        return None;
    }
    let src = b.get(index(off)..index(off) + N)?;
    let mut i = 0;
    while i < N {
        out[i] = src[i];
        i += 1;
    }
    Some(())
}

/// Parses a packet. `from_mac`: `buf` starts at the Ethernet header; otherwise at the network
/// header whose ethertype is `protocol` (skb->protocol). `extra_vxlan_port`: one more UDP port
/// carrying VXLAN (0 = none).
pub fn parse(buf: &[u8], from_mac: bool, protocol: u16, extra_vxlan_port: u16) -> Parsed {
    let mut p = Parsed::default();
    parse_into(buf, from_mac, protocol, extra_vxlan_port, &mut p);
    p
}

/// [`parse`] into a caller-provided (zeroed) `Parsed`: the kernel keeps it in a per-CPU map
/// because the BPF stack is too small for it.
#[inline(always)]
pub fn parse_into(
    buf: &[u8],
    from_mac: bool,
    protocol: u16,
    extra_vxlan_port: u16,
    p: &mut Parsed,
) {
    parse_layers(
        buf,
        from_mac,
        protocol,
        extra_vxlan_port,
        p,
        |off, ethertype, f| parse_ip(buf, off, ethertype, f),
    );
}

/// [`parse_into`] with the IP layer (the IP header, its extension headers and the transport
/// header, [`parse_ip`]) done by `ip(offset, ethertype, flow)`. The kernel passes a BPF global
/// function that runs [`parse_ip`]: the verifier then checks the IP layer once, on its own,
/// instead of along every path of the outer layer for the inner one (what took Linux 6.1's
/// verifier past its budget).
#[inline(always)]
pub fn parse_layers(
    buf: &[u8],
    from_mac: bool,
    protocol: u16,
    extra_vxlan_port: u16,
    p: &mut Parsed,
    mut ip: impl FnMut(usize, u16, &mut Flow) -> Option<()>,
) {
    let (ethertype, l3, vlan) = if from_mac {
        match parse_eth(buf, 0) {
            Some(v) => v,
            None => return,
        }
    } else {
        (protocol, 0, 0)
    };
    p.ethertype = ethertype;
    p.vlan = vlan;
    if ip(l3, ethertype, &mut p.outer).is_none() {
        return;
    }
    let (inner_eth, inner_off, ty) =
        match classify_tunnel(buf, &p.outer, extra_vxlan_port, &mut p.vni) {
            Some(t) => t,
            None => return,
        };
    p.tunnel = ty;
    let (inner_type, inner_l3) = if inner_eth == ETH_P_TEB {
        match parse_eth(buf, inner_off) {
            Some((t, off, _)) => (t, off),
            None => return,
        }
    } else {
        (inner_eth, inner_off)
    };
    let _ = ip(inner_l3, inner_type, &mut p.inner);
}

/// Returns (ethertype, offset of the network header, outer VLAN id).
#[inline(always)]
fn parse_eth(buf: &[u8], off: usize) -> Option<(u16, usize, u16)> {
    let mut ethertype = be16_at(buf, off + 12)?;
    let mut l3 = off + 14;
    let mut vlan = 0;
    // Up to two tags (QinQ).
    let mut i = 0;
    while i < 2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        if vlan == 0 {
            vlan = be16_at(buf, l3)? & 0x0fff;
        }
        ethertype = be16_at(buf, l3 + 2)?;
        l3 += 4;
        i += 1;
    }
    Some((ethertype, l3, vlan))
}

/// Decides whether the outer flow carries an encapsulated packet. Returns (inner ethertype or
/// ETH_P_TEB for an inner Ethernet frame, offset of the inner header, tunnel type).
#[inline(always)]
fn classify_tunnel(
    buf: &[u8],
    o: &Flow,
    extra_vxlan_port: u16,
    vni: &mut u32,
) -> Option<(u16, usize, u8)> {
    let l4 = o.l4_off as usize;
    if o.fragment != 0 || (l4 == 0 && o.proto != IPPROTO_IPIP && o.proto != IPPROTO_IPV6) {
        return None;
    }
    match o.proto {
        IPPROTO_UDP => {
            let d = o.dport;
            if d == VXLAN_PORT
                || d == VXLAN_PORT_LINUX
                || (extra_vxlan_port != 0 && d == extra_vxlan_port)
            {
                // VXLAN: flags(1) reserved(3) VNI(3) reserved(1), then Ethernet.
                if u8_at(buf, l4 + 8)? & 0x08 == 0 {
                    return None;
                }
                *vni = be32_at(buf, l4 + 12)? >> 8;
                Some((ETH_P_TEB, l4 + 16, tunnel::VXLAN))
            } else if d == GENEVE_PORT {
                // Geneve: ver/optlen(1) flags(1) protocol(2) VNI(3) reserved(1) options.
                let opt_len = (u8_at(buf, l4 + 8)? & 0x3f) as usize * 4;
                let proto = be16_at(buf, l4 + 10)?;
                *vni = be32_at(buf, l4 + 12)? >> 8;
                Some((proto, l4 + 16 + opt_len, tunnel::GENEVE))
            } else {
                None
            }
        }
        IPPROTO_GRE => {
            // GRE: flags/version(2) protocol(2) [checksum+reserved(4)] [key(4)] [sequence(4)].
            let flags = be16_at(buf, l4)?;
            if flags & 0x0007 != 0 {
                return None; // only version 0
            }
            let proto = be16_at(buf, l4 + 2)?;
            let mut off = l4 + 4;
            if flags & 0x8000 != 0 {
                off += 4;
            }
            if flags & 0x2000 != 0 {
                *vni = be32_at(buf, off)?;
                off += 4;
            }
            if flags & 0x1000 != 0 {
                off += 4;
            }
            Some((proto, off, tunnel::GRE))
        }
        IPPROTO_IPIP => {
            let ty = if o.family == 4 {
                tunnel::IPIP
            } else {
                tunnel::IP4IN6
            };
            Some((ETH_P_IP, o.l4_off as usize, ty))
        }
        IPPROTO_IPV6 => {
            let ty = if o.family == 4 {
                tunnel::IP6IN4
            } else {
                tunnel::IP6IN6
            };
            Some((ETH_P_IPV6, o.l4_off as usize, ty))
        }
        _ => None,
    }
}

/// Parses an IPv4 or IPv6 header at `off` and its transport header into `f`.
#[inline(always)]
pub fn parse_ip(buf: &[u8], off: usize, ethertype: u16, f: &mut Flow) -> Option<()> {
    let l4;
    if ethertype == ETH_P_IP {
        let vihl = u8_at(buf, off)?;
        if vihl >> 4 != 4 {
            return None;
        }
        let ihl = (vihl & 0x0f) as usize * 4;
        if ihl < 20 {
            return None;
        }
        f.family = 4;
        f.l3_off = off as u16;
        let total = be16_at(buf, off + 2)?;
        f.ip_payload_len = total.saturating_sub(ihl as u16);
        f.ip_id = be16_at(buf, off + 4)? as u32;
        let frag = be16_at(buf, off + 6)?;
        f.fragment = (frag & 0x1fff != 0) as u8;
        f.ttl = u8_at(buf, off + 8)?;
        f.proto = u8_at(buf, off + 9)?;
        copy_addr::<4>(buf, off + 12, &mut f.src)?;
        copy_addr::<4>(buf, off + 16, &mut f.dst)?;
        l4 = off + ihl;
    } else if ethertype == ETH_P_IPV6 {
        if u8_at(buf, off)? >> 4 != 6 {
            return None;
        }
        f.family = 6;
        f.l3_off = off as u16;
        f.ip_id = be32_at(buf, off)? & 0x000f_ffff;
        f.ip_payload_len = be16_at(buf, off + 4)?;
        f.ttl = u8_at(buf, off + 7)?;
        copy_addr::<16>(buf, off + 8, &mut f.src)?;
        copy_addr::<16>(buf, off + 24, &mut f.dst)?;
        let mut next = u8_at(buf, off + 6)?;
        let mut cur = off + 40;
        let mut i = 0;
        while i < MAX_IPV6_EXT {
            match next {
                // Hop-by-hop, routing, destination options: length in 8-octet units after the first 8.
                0 | 43 | 60 => {
                    let len = (u8_at(buf, cur + 1)? as usize + 1) * 8;
                    next = u8_at(buf, cur)?;
                    cur += len;
                }
                // Fragment header: fixed 8 bytes; only the first fragment has a transport header.
                44 => {
                    let frag = be16_at(buf, cur + 2)?;
                    if frag & 0xfff8 != 0 {
                        f.fragment = 1;
                    }
                    next = u8_at(buf, cur)?;
                    cur += 8;
                }
                // Authentication header: length in 4-octet units, minus 2.
                51 => {
                    let len = (u8_at(buf, cur + 1)? as usize + 2) * 4;
                    next = u8_at(buf, cur)?;
                    cur += len;
                }
                _ => break,
            }
            i += 1;
        }
        f.proto = next;
        l4 = cur;
    } else {
        return None;
    }
    if f.fragment != 0 {
        return Some(());
    }
    f.l4_off = l4 as u16;
    match f.proto {
        IPPROTO_TCP => {
            f.sport = be16_at(buf, l4)?;
            f.dport = be16_at(buf, l4 + 2)?;
            f.l4_ident = be32_at(buf, l4 + 4)?;
            f.l4_ack = be32_at(buf, l4 + 8)?;
            f.tcp_flags = u8_at(buf, l4 + 13)?;
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            f.sport = be16_at(buf, l4)?;
            f.dport = be16_at(buf, l4 + 2)?;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            f.icmp_type = u8_at(buf, l4)?;
            f.icmp_code = u8_at(buf, l4 + 1)?;
            f.l4_ident = be32_at(buf, l4 + 4)?;
        }
        _ => {}
    }
    Some(())
}

/// Does `addr` (of `family`) fall in the prefix?
#[inline(always)]
pub fn prefix_contains(prefix: &crate::AddrPrefix, family: u8, addr: &[u8; 16]) -> bool {
    prefix.contains(family, &crate::words(addr))
}

/// The in-kernel filter decision on a parsed packet (the netns check is done by the caller).
/// A packet whose ethertype says IP but whose IP header could not be read (a malformed
/// packet: wrong version, truncated) passes: the filter cannot tell what it is, and
/// malformed packets are what an incident needs to see (tcpdump's `ip` matches them too).
#[inline(always)]
pub fn filter_matches(cfg: &crate::FilterConfig, p: &Parsed) -> bool {
    if p.outer.family == 0
        && (cfg.non_ip_passes != 0 || p.ethertype == ETH_P_IP || p.ethertype == ETH_P_IPV6)
    {
        return true;
    }
    let has_inner = p.tunnel != tunnel::NONE && p.inner.family != 0;
    if cfg.family != 0
        && p.outer.family != cfg.family
        && !(has_inner && p.inner.family == cfg.family)
    {
        return false;
    }
    let inner = p.innermost();
    if cfg.proto != 0 && inner.proto != cfg.proto {
        return false;
    }
    if cfg.port != 0 {
        let port = cfg.port;
        let outer_hit = p.outer.sport == port || p.outer.dport == port;
        let inner_hit = has_inner && (p.inner.sport == port || p.inner.dport == port);
        if !outer_hit && !inner_hit {
            return false;
        }
    }
    if cfg.n_addrs != 0 && !addrs_match(cfg, &p.outer) && !(has_inner && addrs_match(cfg, &p.inner))
    {
        return false;
    }
    true
}

/// Does either address of `f` fall in any of the filter's prefixes?
#[inline(always)]
fn addrs_match(cfg: &crate::FilterConfig, f: &Flow) -> bool {
    addrs_hit(cfg, f.family, &crate::words(&f.src), &crate::words(&f.dst))
}

/// Does `src` or `dst` (of `family`, as [`crate::words`]) fall in any of the filter's prefixes?
#[inline(always)]
fn addrs_hit(cfg: &crate::FilterConfig, family: u8, src: &[u32; 4], dst: &[u32; 4]) -> bool {
    let mut i = 0;
    while i < crate::MAX_FILTER_ADDRS {
        if i >= cfg.n_addrs as usize {
            break;
        }
        let pr = &cfg.addrs[i];
        if pr.contains(family, src) || pr.contains(family, dst) {
            return true;
        }
        i += 1;
    }
    false
}

/// Packet bytes the early filter reads: a copied buffer (`[u8]`), or, in the tc programs, the
/// skb's linear data through direct packet access.
pub trait Headers {
    /// The `N` bytes at `off`, or `None` when they are not all there. One bounds check per
    /// header: the fields are then read at constant offsets (what the verifier follows best).
    fn bytes_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]>;
}

impl Headers for [u8] {
    #[inline(always)]
    fn bytes_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        if off.checked_add(N)? > self.len() {
            return None;
        }
        self.get(index(off)..index(off) + N)?.try_into().ok()
    }
}

/// Does the filter select anything at all (a zero filter matches every packet)?
#[inline(always)]
pub fn filter_active(cfg: &crate::FilterConfig) -> bool {
    cfg.family != 0 || cfg.proto != 0 || cfg.port != 0 || cfg.n_addrs != 0
}

/// The first `W` native-endian words of `b` from `off` (see [`crate::words`]).
#[inline(always)]
fn words_at<const N: usize, const W: usize>(b: &[u8; N], off: usize) -> [u32; W] {
    let mut w = [0u32; W];
    let mut k = 0;
    while k < W {
        let i = off + 4 * k;
        w[k] = u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        k += 1;
    }
    w
}

/// The in-kernel filter decided from plain headers alone, when it can be: `Some(matches)` when
/// the filter selects nothing (always a match) or the packet is plain, exactly what
/// [`parse_into`] and [`filter_matches`] would answer; `None` when only the full parser can
/// tell: a VLAN tag, IPv4 options, an IPv6 extension header, a tunnel-capable packet (IPIP,
/// IPv6-in-IP, GRE, UDP to a VXLAN or Geneve port), a malformed IP header, or fewer bytes than
/// the IP header and 4 more.
///
/// This is the tc programs' whole per-packet cost when nothing matches, so it writes nothing,
/// reads the IP header and the transport ports after it with one bounds check, and leaves the
/// addresses in the packet until a prefix asks for them (one word for IPv4, four for IPv6).
#[inline(always)]
pub fn quick_verdict_with<H: Headers + ?Sized>(
    cfg: &crate::FilterConfig,
    h: &H,
    from_mac: bool,
    protocol: u16,
) -> Option<bool> {
    if !filter_active(cfg) {
        return Some(true);
    }
    let (ethertype, l3) = if from_mac {
        (u16::from_be_bytes(*h.bytes_at::<2>(12)?), 14)
    } else {
        (protocol, 0)
    };
    if ethertype == ETH_P_IP {
        // Version 4, a 20-byte header (options go to the full parser), then the ports.
        let ip = h.bytes_at::<24>(l3)?;
        if ip[0] != 0x45 {
            return None;
        }
        let proto = ip[9];
        if matches!(proto, IPPROTO_IPIP | IPPROTO_IPV6 | IPPROTO_GRE) {
            return None;
        }
        let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
        if proto == IPPROTO_UDP
            && !fragment
            && is_vxlan_port(cfg, u16::from_be_bytes([ip[22], ip[23]]))
        {
            return vxlan_verdict(cfg, h, ip, l3);
        }
        plain_verdict::<24, 1>(cfg, (4, proto, fragment), ip, 12)
    } else if ethertype == ETH_P_IPV6 {
        let ip = h.bytes_at::<44>(l3)?;
        if ip[0] >> 4 != 6 {
            return None;
        }
        let proto = ip[6];
        if matches!(
            proto,
            0 | 43 | 44 | 51 | 60 | IPPROTO_IPIP | IPPROTO_IPV6 | IPPROTO_GRE
        ) {
            return None;
        }
        plain_verdict::<44, 4>(cfg, (6, proto, false), ip, 8)
    } else if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        None
    } else {
        // Not IP: no flow at all, which an active filter selects only when told to.
        Some(cfg.non_ip_passes != 0)
    }
}

/// UDP ports [`parse_into`] takes for VXLAN.
#[inline(always)]
fn is_vxlan_port(cfg: &crate::FilterConfig, dport: u16) -> bool {
    dport == VXLAN_PORT
        || dport == VXLAN_PORT_LINUX
        || (cfg.vxlan_port != 0 && dport == cfg.vxlan_port)
}

/// The transport ports after a plain IP header `ip` (its last 4 bytes), 0 when there are none.
#[inline(always)]
fn plain_ports<const N: usize>(ip: &[u8; N], proto: u8, fragment: bool) -> (u16, u16) {
    if !fragment && matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        (
            u16::from_be_bytes([ip[N - 4], ip[N - 3]]),
            u16::from_be_bytes([ip[N - 2], ip[N - 1]]),
        )
    } else {
        (0, 0)
    }
}

/// Does the source (at `src_off`) or destination address of the plain IP header `ip` fall
/// in any of the filter's prefixes?
#[inline(always)]
fn plain_addrs_hit<const N: usize, const W: usize>(
    cfg: &crate::FilterConfig,
    family: u8,
    ip: &[u8; N],
    src_off: usize,
) -> bool {
    let dst_off = src_off + 4 * W;
    let mut i = 0;
    while i < crate::MAX_FILTER_ADDRS {
        if i >= cfg.n_addrs as usize {
            break;
        }
        let pr = &cfg.addrs[i];
        if pr.contains::<W>(family, &words_at(ip, src_off))
            || pr.contains::<W>(family, &words_at(ip, dst_off))
        {
            return true;
        }
        i += 1;
    }
    false
}

/// A VXLAN packet over a plain IPv4 header (`outer`, at `l3`; flannel's and Calico's
/// encapsulation) whose inner frame carries a plain IP header, decided in place as
/// [`filter_matches`] decides it on the parsed packet: the family, ports or addresses of
/// either header, the protocol of the inner one. Anything else (VLAN or non-IP inside, IPv4
/// options, IPv6 extension headers, a tunnel in the tunnel, bytes not in the linear data)
/// is left to the full parser.
#[inline(always)]
fn vxlan_verdict<H: Headers + ?Sized>(
    cfg: &crate::FilterConfig,
    h: &H,
    outer: &[u8; 24],
    l3: usize,
) -> Option<bool> {
    // UDP (8), VXLAN flags(1) reserved(3) VNI(3) reserved(1), then the inner Ethernet header.
    let vxlan = l3 + 20 + 8;
    if h.bytes_at::<1>(vxlan)?[0] & 0x08 == 0 {
        return None; // not a VXLAN header to the parser either
    }
    let inner_eth = vxlan + 8;
    let inner_type = u16::from_be_bytes(*h.bytes_at::<2>(inner_eth + 12)?);
    let il3 = inner_eth + 14;
    let (family, proto, (sport, dport), addr_hit) = if inner_type == ETH_P_IP {
        let ip = h.bytes_at::<24>(il3)?;
        let proto = ip[9];
        if ip[0] != 0x45 || matches!(proto, IPPROTO_IPIP | IPPROTO_IPV6 | IPPROTO_GRE) {
            return None;
        }
        let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
        let hit = cfg.n_addrs != 0 && plain_addrs_hit::<24, 1>(cfg, 4, ip, 12);
        (4, proto, plain_ports(ip, proto, fragment), hit)
    } else if inner_type == ETH_P_IPV6 {
        let ip = h.bytes_at::<44>(il3)?;
        let proto = ip[6];
        if ip[0] >> 4 != 6
            || matches!(
                proto,
                0 | 43 | 44 | 51 | 60 | IPPROTO_IPIP | IPPROTO_IPV6 | IPPROTO_GRE
            )
        {
            return None;
        }
        let hit = cfg.n_addrs != 0 && plain_addrs_hit::<44, 4>(cfg, 6, ip, 8);
        (6, proto, plain_ports(ip, proto, false), hit)
    } else {
        return None;
    };
    let (outer_sport, outer_dport) = plain_ports(outer, IPPROTO_UDP, false);
    let port = cfg.port;
    Some(
        (cfg.family == 0 || cfg.family == 4 || cfg.family == family)
            && (cfg.proto == 0 || cfg.proto == proto)
            && (port == 0
                || outer_sport == port
                || outer_dport == port
                || sport == port
                || dport == port)
            && (cfg.n_addrs == 0 || addr_hit || plain_addrs_hit::<24, 1>(cfg, 4, outer, 12)),
    )
}

/// [`quick_verdict_with`] on `ip`, the IP header followed by the transport header's first 4
/// bytes (the ports): source address at `src_off`, destination right after it, `W` words each.
/// The filter's cheapest tests go first.
#[inline(always)]
fn plain_verdict<const N: usize, const W: usize>(
    cfg: &crate::FilterConfig,
    (family, proto, fragment): (u8, u8, bool),
    ip: &[u8; N],
    src_off: usize,
) -> Option<bool> {
    let (sport, dport) = plain_ports(ip, proto, fragment);
    let tunnel_port = is_vxlan_port(cfg, dport) || dport == GENEVE_PORT;
    if proto == IPPROTO_UDP && tunnel_port {
        return None;
    }
    if (cfg.family != 0 && family != cfg.family)
        || (cfg.proto != 0 && proto != cfg.proto)
        || (cfg.port != 0 && sport != cfg.port && dport != cfg.port)
    {
        return Some(false);
    }
    Some(cfg.n_addrs == 0 || plain_addrs_hit::<N, W>(cfg, family, ip, src_off))
}

/// [`quick_verdict_with`] on a copied buffer.
#[inline(always)]
pub fn quick_verdict(
    cfg: &crate::FilterConfig,
    buf: &[u8],
    from_mac: bool,
    protocol: u16,
) -> Option<bool> {
    if !filter_active(cfg) {
        return Some(true);
    }
    quick_verdict_inner(cfg, buf, from_mac, protocol)
}

// Not inlined: a BPF subprogram with its own small frame keeps the callers within the
// 512-byte stack.
#[inline(never)]
fn quick_verdict_inner(
    cfg: &crate::FilterConfig,
    buf: &[u8],
    from_mac: bool,
    protocol: u16,
) -> Option<bool> {
    quick_verdict_with(cfg, buf, from_mac, protocol)
}

/// The filter decision for a flow key that is not a packet (route lookups, neighbours):
/// family and addresses as for packets; protocol and port only when the key has them (an
/// input route lookup often carries neither), so a `--proto`/`--port` filter does not hide it.
#[inline(always)]
pub fn flow_matches(cfg: &crate::FilterConfig, f: &Flow) -> bool {
    if cfg.family != 0 && f.family != cfg.family {
        return false;
    }
    if cfg.proto != 0 && f.proto != 0 && f.proto != cfg.proto {
        return false;
    }
    if cfg.port != 0 && (f.sport != 0 || f.dport != 0) && f.sport != cfg.port && f.dport != cfg.port
    {
        return false;
    }
    cfg.n_addrs == 0 || addrs_match(cfg, f)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::fixtures::{geneve, icmp6, icmp6_ext_headers, ip_in, udp4, vxlan, A6, B6};
    use crate::{AddrPrefix, FilterConfig};

    fn addr16(b: &[u8]) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..b.len()].copy_from_slice(b);
        a
    }

    #[test]
    fn ipv4_udp_with_options_and_vlan() {
        let mut frame = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, b"hi");
        // Insert an 802.1Q tag (VLAN 42) and grow the IPv4 header by a 4-byte NOP option.
        frame.splice(12..12, [0x81, 0x00, 0x00, 42]);
        let ip = 18;
        frame[ip] = 0x46;
        let total = u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]) + 4;
        frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        frame.splice(ip + 20..ip + 20, [1, 1, 1, 0]);
        let p = parse(&frame, true, 0, 0);
        assert_eq!(p.vlan, 42);
        assert_eq!(p.outer.family, 4);
        assert_eq!(p.outer.proto, IPPROTO_UDP);
        assert_eq!((p.outer.sport, p.outer.dport), (1000, 53));
        assert_eq!(p.outer.l4_off as usize, ip + 24);
    }

    #[test]
    fn ipv6_extension_header_chain_is_followed() {
        let frame = icmp6_ext_headers(1);
        let p = parse(&frame, true, 0, 0);
        assert_eq!(p.outer.family, 6);
        assert_eq!(p.outer.proto, IPPROTO_ICMPV6);
        assert_eq!(p.outer.icmp_type, 128);
        assert_eq!(p.outer.l4_ident, (7 << 16) | 1);
        assert_eq!(p.outer.l4_off, 54 + 24);
    }

    #[test]
    fn ipv6_non_first_fragment_has_no_transport_header() {
        let mut frame = icmp6(1)[..54].to_vec();
        frame[20] = 44;
        frame.extend_from_slice(&[58, 0, 0x05, 0x00, 0, 0, 0, 1]); // offset 160, not first
        frame.extend_from_slice(&[0; 16]);
        let p = parse(&frame, true, 0, 0);
        assert_eq!(p.outer.fragment, 1);
        assert_eq!(p.outer.proto, IPPROTO_ICMPV6);
        assert_eq!(p.outer.icmp_type, 0);
    }

    #[test]
    fn vxlan_on_both_standard_ports_and_a_configured_one() {
        let inner = icmp6(3);
        for (port, extra) in [(4789, 0), (8472, 0), (9999, 9999)] {
            let p = parse(&vxlan(port, 1, &inner), true, 0, extra);
            assert_eq!(p.tunnel, tunnel::VXLAN, "port {port}");
            assert_eq!(p.vni, 1);
            assert_eq!(p.inner.family, 6);
            assert_eq!(p.inner.src, A6);
            assert_eq!(p.innermost().icmp_type, 128);
        }
        assert_eq!(
            parse(&vxlan(9999, 1, &inner), true, 0, 0).tunnel,
            tunnel::NONE
        );
    }

    #[test]
    fn geneve_with_options() {
        let frame = geneve(0x102, &icmp6(1));
        let p = parse(&frame, true, 0, 0);
        assert_eq!(p.tunnel, tunnel::GENEVE);
        assert_eq!(p.vni, 0x102);
        assert_eq!(p.inner.dst, B6);
    }

    #[test]
    fn ip_in_ip_variants() {
        let inner6 = icmp6(1)[14..].to_vec();
        let inner4 = udp4([10, 9, 9, 1], [10, 9, 9, 2], 1, 2, b"x")[14..].to_vec();
        for (outer_v6, proto, inner, ty, fam) in [
            (false, IPPROTO_IPIP, &inner4, tunnel::IPIP, 4),
            (false, IPPROTO_IPV6, &inner6, tunnel::IP6IN4, 6),
            (true, IPPROTO_IPIP, &inner4, tunnel::IP4IN6, 4),
            (true, IPPROTO_IPV6, &inner6, tunnel::IP6IN6, 6),
        ] {
            let p = parse(&ip_in(outer_v6, proto, inner), true, 0, 0);
            assert_eq!(p.tunnel, ty);
            assert_eq!(p.inner.family, fam);
        }
    }

    #[test]
    fn gre_with_key() {
        let inner4 = udp4([10, 9, 9, 1], [10, 9, 9, 2], 1, 2, b"x")[14..].to_vec();
        let mut gre = std::vec![0x20, 0x00, 0x08, 0x00, 0, 0, 0, 77];
        gre.extend_from_slice(&inner4);
        let p = parse(&ip_in(false, IPPROTO_GRE, &gre), true, 0, 0);
        assert_eq!(p.tunnel, tunnel::GRE);
        assert_eq!(p.vni, 77);
        assert_eq!(p.inner.src[..4], [10, 9, 9, 1]);
    }

    #[test]
    fn packet_without_mac_header_uses_skb_protocol() {
        let frame = icmp6(1);
        let p = parse(&frame[14..], false, ETH_P_IPV6, 0);
        assert_eq!(p.outer.family, 6);
        assert_eq!(p.outer.icmp_type, 128);
    }

    #[test]
    fn every_truncation_and_garbage_is_safe() {
        let frames = [
            vxlan(4789, 1, &icmp6(1)),
            icmp6(2),
            udp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, b"abc"),
        ];
        for f in &frames {
            for n in 0..f.len() {
                let _ = parse(&f[..n], true, 0, 0);
            }
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let buf: Vec<u8> = (0..96)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = parse(&buf, true, 0, 0);
            let _ = parse(&buf, false, ETH_P_IPV6, 4789);
        }
    }

    #[test]
    fn filter_matches_outer_or_inner_addresses_ports_and_families() {
        let frame = vxlan(4789, 1, &icmp6(1));
        let p = parse(&frame, true, 0, 0);
        let pre = |a: [u8; 16], family, len| AddrPrefix::new(family, a, len);
        let mut cfg = FilterConfig::default();
        assert!(filter_matches(&cfg, &p));
        cfg.n_addrs = 1;
        cfg.addrs[0] = pre(addr16(&[0xfd]), 6, 8); // inner fd00::/8
        assert!(filter_matches(&cfg, &p));
        cfg.addrs[0] = pre(addr16(&[198, 18, 0, 0]), 4, 15); // outer underlay
        assert!(filter_matches(&cfg, &p));
        cfg.addrs[0] = pre(addr16(&[10, 244, 0, 0]), 4, 16);
        assert!(!filter_matches(&cfg, &p));
        cfg.n_addrs = 0;
        cfg.family = 6;
        assert!(filter_matches(&cfg, &p), "inner family counts");
        cfg.proto = IPPROTO_UDP;
        assert!(!filter_matches(&cfg, &p), "protocol is the innermost one");
        cfg.proto = 0;
        cfg.port = 4789;
        assert!(filter_matches(&cfg, &p), "outer port counts");
        cfg.port = 80;
        assert!(!filter_matches(&cfg, &p));
    }

    #[test]
    fn a_malformed_ip_packet_passes_an_active_filter() {
        // IPv4 ethertype, IPv6 header inside (as in a real capture tcpdump's `ip` matches).
        let mut frame = icmp6(1);
        frame[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let p = parse(&frame, true, 0, 0);
        assert_eq!((p.outer.family, p.ethertype), (0, ETH_P_IP));
        let mut cfg = FilterConfig {
            family: 4,
            proto: IPPROTO_UDP,
            ..FilterConfig::default()
        };
        assert!(filter_matches(&cfg, &p));
        assert_ne!(quick_verdict(&cfg, &frame, true, 0), Some(false));
        cfg.family = 0;
        cfg.n_addrs = 1;
        cfg.addrs[0] = AddrPrefix::new(4, addr16(&[10, 0, 0, 1]), 32);
        assert!(filter_matches(&cfg, &p));
        // Not IP at all: still never selected by an active filter.
        frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        assert!(!filter_matches(&cfg, &parse(&frame, true, 0, 0)));
    }

    #[test]
    fn quick_verdict_rejects_only_what_the_full_filter_rejects() {
        let frames = crate::fixtures::filter_frames();
        let prefixes = [
            (addr16(&[10, 0, 0, 1]), 4, 32),
            (addr16(&[10, 9, 9, 0]), 4, 24),
            (addr16(&[198, 18, 0, 0]), 4, 15),
            (addr16(&[0xfd]), 6, 8),
            (addr16(&[172, 16, 0, 0]), 4, 12),
            (B6, 6, 128),
        ];
        let mut rejected = 0;
        for (addr, family, len) in prefixes {
            for extra in [0, 9999] {
                let mut cfg = FilterConfig {
                    n_addrs: 1,
                    vxlan_port: extra,
                    ..FilterConfig::default()
                };
                cfg.addrs[0] = AddrPrefix::new(family, addr, len);
                for f in &frames {
                    for n in 0..=f.len() {
                        let buf = &f[..n];
                        let full = filter_matches(&cfg, &parse(buf, true, 0, extra));
                        if quick_verdict(&cfg, buf, true, 0) == Some(false) {
                            rejected += 1;
                            assert!(!full, "the quick verdict dropped a match: {cfg:?} {buf:?}");
                        }
                    }
                    let l3 = &f[14..];
                    let proto = u16::from_be_bytes([f[12], f[13]]);
                    if quick_verdict(&cfg, l3, false, proto) == Some(false) {
                        assert!(!filter_matches(&cfg, &parse(l3, false, proto, extra)));
                    }
                }
            }
        }
        assert!(
            rejected > 100,
            "the quick path should decide plain packets: {rejected}"
        );
        assert_ne!(
            quick_verdict(&FilterConfig::default(), &icmp6(1), true, 0),
            Some(false)
        );
    }

    #[test]
    fn quick_verdict_always_agrees_with_the_full_parser() {
        let frames = crate::fixtures::filter_frames();
        let (mut decided, mut rejected) = (0, 0);
        for cfg in crate::fixtures::filter_configs() {
            let extra = cfg.vxlan_port;
            for f in &frames {
                for n in 0..=f.len() {
                    let buf = &f[..n];
                    let full = filter_matches(&cfg, &parse(buf, true, 0, extra));
                    if let Some(v) = quick_verdict(&cfg, buf, true, 0) {
                        assert_eq!(v, full, "{cfg:?} on {buf:?}");
                        decided += 1;
                        rejected += !v as usize;
                    }
                    // Without a MAC header (the _l3 programs).
                    if n >= 14 {
                        let proto = u16::from_be_bytes([f[12], f[13]]);
                        let l3 = &f[14..n];
                        let full = filter_matches(&cfg, &parse(l3, false, proto, extra));
                        if let Some(v) = quick_verdict(&cfg, l3, false, proto) {
                            assert_eq!(v, full, "l3 {cfg:?} on {l3:?}");
                        }
                    }
                }
            }
        }
        assert!(
            decided > 10_000,
            "plain packets are decided early: {decided}"
        );
        assert!(rejected > 1_000, "and rejected early: {rejected}");
    }

    #[test]
    fn vxlan_with_a_plain_inner_header_is_decided_early() {
        let inner = crate::fixtures::udp4([10, 9, 9, 1], [10, 9, 9, 2], 1111, 2222, b"x");
        let mut cfg = FilterConfig {
            n_addrs: 1,
            ..FilterConfig::default()
        };
        let decide = |cfg: &FilterConfig, f: &[u8]| quick_verdict(cfg, f, true, 0);
        for port in [VXLAN_PORT, VXLAN_PORT_LINUX] {
            let f = vxlan(port, 1, &inner);
            cfg.addrs[0] = AddrPrefix::new(4, addr16(&[10, 9, 9, 2]), 32);
            assert_eq!(decide(&cfg, &f), Some(true), "inner address");
            cfg.addrs[0] = AddrPrefix::new(4, addr16(&[172, 16, 0, 0]), 12);
            assert_eq!(decide(&cfg, &f), Some(false), "neither address");
            let by_port = FilterConfig {
                port: 2222,
                ..FilterConfig::default()
            };
            assert_eq!(decide(&by_port, &f), Some(true), "inner port");
            let by_proto = FilterConfig {
                proto: IPPROTO_TCP,
                ..FilterConfig::default()
            };
            assert_eq!(decide(&by_proto, &f), Some(false), "inner protocol is UDP");
        }
        // An IPv6 inner header with an extension header, or a non-IP inner frame: not here.
        assert_eq!(decide(&cfg, &vxlan(4789, 1, &icmp6_ext_headers(1))), None);
    }

    #[test]
    fn non_ip_frames_pass_only_a_filter_that_lets_them() {
        let mut arp = std::vec![0xffu8; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        let mut tagged = arp[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x14]);
        tagged.extend_from_slice(&arp[12..]);
        let mut cfg = FilterConfig {
            n_addrs: 1,
            ..FilterConfig::default()
        };
        cfg.addrs[0] = AddrPrefix::new(4, addr16(&[10, 0, 0, 0]), 8);
        let full = |cfg: &FilterConfig, f: &[u8]| filter_matches(cfg, &parse(f, true, 0, 0));
        assert_eq!(quick_verdict(&cfg, &arp, true, 0), Some(false));
        assert!(!full(&cfg, &tagged), "tagged ARP, parsed in full");
        cfg.non_ip_passes = 1;
        assert_eq!(quick_verdict(&cfg, &arp, true, 0), Some(true));
        assert!(full(&cfg, &tagged), "tagged ARP, parsed in full");
    }

    #[test]
    fn flow_keys_match_on_addresses_and_only_known_protocols_and_ports() {
        let mut f = Flow {
            family: 4,
            ..Flow::default()
        };
        f.src[..4].copy_from_slice(&[10, 0, 0, 1]);
        f.dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        let mut cfg = FilterConfig::default();
        assert!(flow_matches(&cfg, &f));
        cfg.n_addrs = 1;
        cfg.addrs[0] = AddrPrefix::new(4, addr16(&[10, 0, 0, 2]), 32);
        assert!(flow_matches(&cfg, &f), "destination matches");
        cfg.addrs[0] = AddrPrefix::new(4, addr16(&[10, 0, 0, 3]), 32);
        assert!(!flow_matches(&cfg, &f));
        cfg.n_addrs = 0;
        cfg.proto = IPPROTO_TCP;
        cfg.port = 80;
        assert!(
            flow_matches(&cfg, &f),
            "a key without protocol/ports is kept"
        );
        f.proto = IPPROTO_UDP;
        assert!(!flow_matches(&cfg, &f));
        f.proto = IPPROTO_TCP;
        f.dport = 443;
        assert!(!flow_matches(&cfg, &f));
        f.dport = 80;
        assert!(flow_matches(&cfg, &f));
        cfg.family = 6;
        assert!(!flow_matches(&cfg, &f));
    }
}

//! Copying packet bytes into the scratch event, with lengths every supported verifier accepts.

use crate::kernel::read;
use aya_ebpf::helpers::generated::bpf_probe_read_kernel as probe_read_raw;
use tracer_common::{flags, Config, KernelOffsets, RawEvent, SNAP_LEN};

/// Copies the packet's linear data from the MAC header (or the network header when there is
/// none) into `ev.data`, through the kernel skb.
#[inline(always)]
pub(crate) unsafe fn copy_skb_data(o: &KernelOffsets, skb: u64, ev: &mut RawEvent) {
    unsafe {
        let head: u64 = read(skb, o.skb_head).unwrap_or(0);
        let mac: u16 = read(skb, o.skb_mac_header).unwrap_or(0xffff);
        let net: u16 = read(skb, o.skb_network_header).unwrap_or(0xffff);
        let tail: u32 = read(skb, o.skb_tail).unwrap_or(0);
        ev.protocol = u16::from_be(read::<u16>(skb, o.skb_protocol).unwrap_or(0));
        let start = if mac != 0xffff && mac < net {
            ev.flags |= flags::DATA_FROM_MAC;
            mac as u32
        } else {
            net as u32
        };
        if head == 0 || start == 0xffff || tail <= start {
            ev.data_len = 0;
            return;
        }
        let mut n = tail - start;
        if n > SNAP_LEN as u32 {
            n = SNAP_LEN as u32;
        }
        let n = n & (2 * SNAP_LEN as u32 - 1);
        if n == 0 || n > SNAP_LEN as u32 {
            ev.data_len = 0;
            return;
        }
        let n = copy_len(n);
        let src = head + start as u64;
        // A VLAN tag the device moved into the skb's metadata goes back after the MAC
        // addresses, as at tc (and in tcpdump).
        let vlan_proto: u16 = if ev.flags & flags::DATA_FROM_MAC != 0 && o.skb_vlan_proto != 0 {
            read(skb, o.skb_vlan_proto).unwrap_or(0)
        } else {
            0
        };
        if vlan_proto != 0 {
            let tci: u16 = read(skb, o.skb_vlan_tci).unwrap_or(0);
            // Kernel reads into `ev.data`, whose bounds `copy_with_tag` keeps (inside this
            // function's unsafe block).
            ev.data_len = copy_with_tag(ev, n, vlan_proto, tci, |off, dst, len| {
                probe_read_raw(dst.cast(), len, (src + off as u64) as *const _) == 0
            });
            if ev.data_len != 0 {
                ev.flags |= flags::VLAN_TAG_ADDED;
            }
            return;
        }
        if probe_read_raw(ev.data.as_mut_ptr().cast(), n, src as *const _) != 0 {
            ev.data_len = 0;
            return;
        }
        ev.data_len = n as u16;
    }
}

/// Copies the first `n` bytes of a frame into `ev.data` with an 802.1Q tag put back after the
/// MAC addresses (`proto` in network order, as the skb keeps it; `tci` in host order).
/// `load(offset, dst, len)` reads the frame's bytes and says whether it could. Returns the
/// bytes copied, 0 when a read failed.
#[inline(always)]
pub(crate) fn copy_with_tag(
    ev: &mut RawEvent,
    n: u32,
    proto: u16,
    tci: u16,
    load: impl Fn(u32, *mut u8, u32) -> bool,
) -> u16 {
    const MACS: usize = 12;
    if (n as usize) < MACS + 2 {
        return 0;
    }
    // The rest of the frame after the addresses (at least 2), cut so that it fits behind the
    // tag.
    let rest = (n - MACS as u32).min((SNAP_LEN - MACS - VLAN_HLEN) as u32);
    // The copies stay inside ev.data: 12 bytes, then `rest` <= SNAP_LEN - 16 at offset 16.
    // (The verifier sees only `rest` <= SNAP_LEN, which the scratch space behind the data
    // also covers.)
    let rest = copy_len(rest);
    if !load(0, ev.data.as_mut_ptr(), MACS as u32) {
        return 0;
    }
    ev.data[MACS..MACS + 2].copy_from_slice(&proto.to_ne_bytes());
    ev.data[MACS + 2..MACS + 4].copy_from_slice(&tci.to_be_bytes());
    // SAFETY: inside ev.data (SNAP_LEN bytes).
    let dst = unsafe { ev.data.as_mut_ptr().add(MACS + VLAN_HLEN) };
    if !load(MACS as u32, dst, rest) {
        return 0;
    }
    (MACS + VLAN_HLEN) as u16 + rest as u16
}

/// Packet bytes per event for userspace: `cfg.snap_len`, in [1, SNAP_LEN].
#[inline(always)]
pub(crate) fn snap_len(cfg: &Config) -> u32 {
    let s = cfg.snap_len;
    if s == 0 || s > SNAP_LEN as u32 {
        SNAP_LEN as u32
    } else {
        s
    }
}

/// `n`, which the caller has checked is in [1, SNAP_LEN], restated so that every supported
/// verifier sees that bound before a variable-size copy into `ev.data`. Linux 6.1 learns
/// nothing from `n != 0` (the lower bound stays 0, and it rejects a copy that may be 0 bytes
/// long): `((n - 1) & (SNAP_LEN - 1)) + 1` is in [1, SNAP_LEN] whatever it knew. `n` is read
/// back through memory so the compiler, which knows the bound, keeps the mask.
#[inline(always)]
pub(crate) fn copy_len(n: u32) -> u32 {
    // SAFETY: a read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    (n.wrapping_sub(1) & (SNAP_LEN as u32 - 1)) + 1
}

/// The bytes copied into `ev` and whether they start at the MAC header.
#[inline(always)]
pub(crate) fn copied(ev: &RawEvent) -> Option<(&[u8], bool)> {
    let len = (ev.data_len as usize) & (2 * SNAP_LEN - 1);
    if len > SNAP_LEN {
        return None;
    }
    // Read back through memory: the compiler then no longer knows that `len` <= SNAP_LEN, so
    // it keeps the parser's mask on every offset (`parse::index`), which is what older
    // verifiers follow; they learn nothing from `off < len`.
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    // SAFETY: `data` has SNAP_LEN bytes and `len` <= SNAP_LEN (checked above; the verifier
    // keeps that bound for the value read back).
    let data = unsafe { core::slice::from_raw_parts(ev.data.as_ptr(), len) };
    Some((data, ev.flags & flags::DATA_FROM_MAC != 0))
}

pub(crate) const VLAN_HLEN: usize = 4;

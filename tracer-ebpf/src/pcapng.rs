//! `netpath capture -w`: a hop event written out as a pcapng record, built in place.

use crate::maps::Scratch;
use crate::output::output_bytes;
use tracer_common::{dir, pcapng_record, Config, RawEvent, SNAP_LEN};

/// Writes the packet in `scratch.ev` (`data`, `data_len`, `skb_len`, `ts_ns`) out as a
/// pcapng record ([`pcapng_record`]) built around the data where it lies: the record's first
/// 32 bytes over the event header's last 32, its end after the data (in `scratch.tail`).
#[inline(always)]
pub(crate) fn output_epb(cfg: &Config, scratch: &mut Scratch, iface_id: u32, direction: u8) {
    use pcapng_record as rec;
    const START: usize = RawEvent::DATA_OFFSET - rec::DATA_OFFSET;
    let ev = &scratch.ev;
    // SAFETY: a plain read of the event's field (volatile: the verifier must see the bound).
    let caplen = unsafe { core::ptr::read_volatile(&ev.data_len) } as usize & (2 * SNAP_LEN - 1);
    if caplen == 0 || caplen > SNAP_LEN {
        return;
    }
    let layout = rec::Layout::new(caplen);
    let ts = ev.ts_ns.wrapping_add(cfg.boot_offset_ns);
    let orig_len = ev.skb_len.max(caplen as u32);
    let flags = match direction {
        dir::INGRESS => 1,
        dir::EGRESS => 2,
        _ => 0,
    };
    let base = (scratch as *mut Scratch).cast::<u8>();
    // SAFETY: every store stays inside the Scratch value: the head at 16..48, the data's last
    // word, and at most MAX_TAIL bytes from DATA_OFFSET + padded <= 48 + 259 (`tail` is 40).
    unsafe {
        let head = base.add(START).cast::<[u32; 8]>();
        head.write_unaligned([
            rec::FILLER_LEN,
            rec::EPB_TYPE,
            layout.epb_len as u32,
            iface_id,
            (ts >> 32) as u32,
            ts as u32,
            caplen as u32,
            orig_len,
        ]);
        let data = base.add(RawEvent::DATA_OFFSET);
        // Zero the padding: the bytes after the packet in its last word are an older packet's.
        if caplen % 4 != 0 {
            let last = data.add(caplen & !3).cast::<u32>();
            last.write_unaligned(last.read_unaligned() & ((1u32 << (8 * (caplen % 4))) - 1));
        }
        let tail = data.add(layout.padded).cast::<u32>();
        tail.write_unaligned(rec::EPB_FLAGS_OPTION);
        tail.add(1).write_unaligned(flags);
        tail.add(2).write_unaligned(0); // opt_endofopt
        tail.add(3).write_unaligned(layout.epb_len as u32);
        let rest = if layout.empty_filler {
            tail.add(4).write_unaligned(rec::FILLER_TYPE);
            tail.add(5).write_unaligned(rec::EMPTY_FILLER_LEN);
            tail.add(6).write_unaligned(rec::EMPTY_FILLER_LEN);
            tail.add(7)
        } else {
            tail.add(4)
        };
        rest.write_unaligned(rec::FILLER_TYPE);
        rest.add(1).write_unaligned(rec::FILLER_LEN);
        output_bytes(
            cfg,
            core::slice::from_raw_parts(base.add(START), layout.payload_len),
        );
    }
}

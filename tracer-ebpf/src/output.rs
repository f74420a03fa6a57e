//! Ring-buffer output: one record per event, batched wake-ups, failures counted in `LOST`.

use crate::maps::{EVENTS, LOST, WAKE_BYTES};
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
};
use tracer_common::{dir, Config, RawEvent, SNAP_LEN};

/// One ring-buffer output of `ev` (batched wake-up); a failure is counted in `LOST`.
#[inline(always)]
pub(crate) fn output(cfg: &Config, ev: &RawEvent) {
    // Only the copied bytes go out: a record is the header plus `data_len` bytes, not the
    // whole SNAP_LEN buffer (userspace zero-fills the rest). The length is read again here
    // so the verifier does not carry it through the parser.
    // SAFETY: a plain read of the event's field (volatile so it is not reused from above).
    let len = unsafe { core::ptr::read_volatile(&ev.data_len) } as usize;
    let len = len & (2 * SNAP_LEN - 1);
    if len > SNAP_LEN {
        return;
    }
    let size = RawEvent::DATA_OFFSET + len;
    // SAFETY: `ev` is a RawEvent of DATA_OFFSET + SNAP_LEN bytes and len <= SNAP_LEN.
    let record = unsafe { core::slice::from_raw_parts((ev as *const RawEvent).cast::<u8>(), size) };
    output_bytes(cfg, record);
}

/// The ring-buffer output of one record, waking the reader once per `wakeup_bytes` this CPU
/// queued; a failure is counted in `LOST`.
#[inline(always)]
pub(crate) fn output_bytes(cfg: &Config, record: &[u8]) {
    let size = record.len();
    // Wake the reader once per wakeup_bytes this CPU queues (the reader also looks every
    // 20 ms), not on every record once the ring holds that much: each forced wake-up is an
    // irq_work self-IPI, and asking the ring how full it is reads the consumer position the
    // reader keeps writing. A wake-up when the reader has already drained costs one poll.
    let Some(since_wake) = WAKE_BYTES.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let wake = unsafe {
        *since_wake += (size + 8) as u64;
        if *since_wake >= cfg.wakeup_bytes as u64 {
            *since_wake = 0;
            true
        } else {
            false
        }
    };
    let wake = if wake {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<[u8]>(record, wake as u64).is_err() {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *lost += 1 };
        }
    }
}

/// Fills the common part of a non-packet event and writes it.
#[inline(always)]
pub(crate) fn finish_meta_event(
    cfg: &Config,
    ev: &mut RawEvent,
    kind_id: u8,
    hook_id: u8,
    data_len: usize,
) {
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.location = 0;
    ev.skb = 0;
    ev.reason = 0;
    ev.skb_len = 0;
    ev.kind = kind_id;
    ev.hook = hook_id;
    ev.dir = dir::NONE;
    ev.flags = 0;
    ev.protocol = 0;
    ev.data_len = data_len as u16;
    output(cfg, ev);
}

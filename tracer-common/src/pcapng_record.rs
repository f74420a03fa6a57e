//! Capture records the kernel writes as pcapng (`Config::pcapng_direct`), so that a run of them
//! in the ring buffer is, header words included, a valid piece of a pcapng stream that userspace
//! writes out without looking inside.
//!
//! A ring-buffer record is an 8-byte kernel header followed by the payload, and records follow
//! each other with nothing in between when payloads are multiples of 8 bytes. Each payload is
//!
//! ```text
//! [u32 20]                        end of the filler block the previous record opened
//! [Enhanced Packet Block]         type 6 ... data, padding, epb_flags, opt_endofopt, length
//! [u32 FILLER_TYPE][u32 12][u32 12]   an empty filler, only when needed for a multiple of 8
//! [u32 FILLER_TYPE][u32 20]       start of a filler block
//! ```
//!
//! so that the ring's header between two records is the 8-byte body of a 20-byte block of a
//! local-use type, which pcapng readers skip (pcapng spec, section 3.1). (Leaving out
//! `opt_endofopt` instead of the empty filler would save bytes and is allowed by the spec,
//! section 3.5, but some readers, pcap-file 2 among them, reject it.)
//!
//! Userspace opens a filler before the first record of a run (`FILLER_OPEN`) and closes the last
//! one (`FILLER_CLOSE`) before it writes any block of its own.

/// A block type of the local-use range (most significant bit set).
pub const FILLER_TYPE: u32 = 0x8000_4E50;
/// Filler block: type, length, the 8-byte ring header, length.
pub const FILLER_LEN: u32 = 20;
pub const EPB_TYPE: u32 = 6;
/// `epb_flags` (code 2), 4 bytes long, as one little-endian word.
pub const EPB_FLAGS_OPTION: u32 = 2 | 4 << 16;
/// Payload offset of the EPB: after the filler's trailing length.
pub const EPB_OFFSET: usize = 4;
/// Payload offset of the packet data: the filler's trailing length and the EPB's 28 fixed
/// bytes (type, length, interface id, timestamp high and low, captured and original length).
pub const DATA_OFFSET: usize = EPB_OFFSET + 28;
/// The most bytes a payload has after its packet data (padded to 4): `epb_flags` (8),
/// `opt_endofopt` (4), the EPB's trailing length (4), an empty filler (12) and the next
/// filler's start (8).
pub const MAX_TAIL: usize = 36;
/// An EPB's bytes besides its padded data: 28 fixed, `epb_flags`, `opt_endofopt`, length.
const EPB_OVERHEAD: usize = 28 + 8 + 4 + 4;
/// An empty filler block: type and twice its length.
pub const EMPTY_FILLER_LEN: u32 = 12;

/// Where the parts of a payload go for `caplen` bytes of packet data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Packet data padded to 4 bytes: the options start at `DATA_OFFSET + padded`.
    pub padded: usize,
    /// Whether an empty filler follows the EPB.
    pub empty_filler: bool,
    /// The EPB's total length.
    pub epb_len: usize,
    /// The whole payload: a multiple of 8.
    pub payload_len: usize,
}

impl Layout {
    pub const fn new(caplen: usize) -> Layout {
        let padded = (caplen + 3) & !3;
        let epb_len = EPB_OVERHEAD + padded;
        // 4 + epb_len + 8 is a multiple of 8 when `padded` is; otherwise 12 more bytes make it.
        let empty_filler = !padded.is_multiple_of(8);
        let filler = if empty_filler {
            EMPTY_FILLER_LEN as usize
        } else {
            0
        };
        Layout {
            padded,
            empty_filler,
            epb_len,
            payload_len: EPB_OFFSET + epb_len + filler + 8,
        }
    }
}

/// The key of a device in the kernel's map of pcapng interface ids (`PCAP_IFACES`).
pub const fn iface_key(netns_inode: u32, ifindex: u32) -> u64 {
    (netns_inode as u64) << 32 | ifindex as u64
}

/// Whether a ring-buffer payload is such a record (and not a [`crate::RawEvent`]): its first
/// words are the filler's length and the EPB type, and the EPB's length fits the payload. A
/// `RawEvent` starts with its timestamp, which would have to be exactly 6 << 32 | 20 ns
/// (25.77 s after boot) and be followed by a matching `location`.
pub fn is_record(payload: &[u8]) -> bool {
    let word = |i: usize| {
        payload
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let fits = |epb_len: u32| {
        let padded = (epb_len as usize).wrapping_sub(EPB_OVERHEAD);
        padded.is_multiple_of(4)
            && padded <= u16::MAX as usize
            && Layout::new(padded).payload_len == payload.len()
    };
    word(0) == Some(FILLER_LEN) && word(1) == Some(EPB_TYPE) && word(2).is_some_and(fits)
}

/// The bytes userspace writes before the first record of a run: a filler's type and length.
pub const FILLER_OPEN: [u8; 8] = {
    let t = FILLER_TYPE.to_le_bytes();
    let l = FILLER_LEN.to_le_bytes();
    [t[0], t[1], t[2], t[3], l[0], l[1], l[2], l[3]]
};

/// The bytes that close a filler the last record of a run opened: an 8-byte body (where the
/// next ring header would be) and the length.
pub const FILLER_CLOSE: [u8; 12] = {
    let l = FILLER_LEN.to_le_bytes();
    [0, 0, 0, 0, 0, 0, 0, 0, l[0], l[1], l[2], l[3]]
};

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn payloads_are_multiples_of_8_and_hold_every_part() {
        for caplen in 0..=crate::SNAP_LEN {
            let l = Layout::new(caplen);
            assert_eq!(l.payload_len % 8, 0, "caplen {caplen}");
            assert_eq!(l.epb_len % 4, 0);
            assert!(l.padded >= caplen && l.padded < caplen + 4);
            let tail = l.payload_len - DATA_OFFSET - l.padded;
            assert!(tail <= MAX_TAIL, "caplen {caplen}: tail {tail}");
            // The EPB: fixed part, data, epb_flags, opt_endofopt, trailing length.
            assert_eq!(l.epb_len, 28 + l.padded + 8 + 4 + 4);
            let filler = if l.empty_filler { 12 } else { 0 };
            assert_eq!(l.payload_len, 4 + l.epb_len + filler + 8);
        }
        assert_eq!(Layout::new(0).payload_len, 56);
        assert_eq!(Layout::new(1).payload_len, 72);
        assert_eq!(Layout::new(5).payload_len, 64);
    }

    fn payload(caplen: usize) -> std::vec::Vec<u8> {
        let l = Layout::new(caplen);
        let mut p = std::vec![0u8; l.payload_len];
        p[0..4].copy_from_slice(&FILLER_LEN.to_le_bytes());
        p[4..8].copy_from_slice(&EPB_TYPE.to_le_bytes());
        p[8..12].copy_from_slice(&(l.epb_len as u32).to_le_bytes());
        p
    }

    #[test]
    fn records_are_told_from_raw_events() {
        for caplen in [0, 1, 5, 256] {
            assert!(is_record(&payload(caplen)), "caplen {caplen}");
        }
        let p = payload(5);
        assert!(!is_record(&p[..56]), "length must match the payload");
        assert!(!is_record(&p[..6]));
        let mut q = p.clone();
        q[4] = 0;
        assert!(!is_record(&q), "not an EPB");
        let mut q = p.clone();
        q[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(!is_record(&q), "an EPB length below its fixed part");
    }
}

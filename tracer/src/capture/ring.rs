//! A batch reader for a BPF ring buffer map (the kernel's `EVENTS`), over its own mmap of the
//! map's fd. Unlike aya's `RingBuf::next`, which publishes the consumer position after every
//! record, it publishes it every [`PUBLISH_EVERY`] records and at the end of a batch: the
//! kernel reads that position on every reservation, so each store is a cache line the
//! producing CPU has to fetch again.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

/// Record header bits (include/uapi/linux/bpf.h).
const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HDR_SZ: usize = 8;
/// Records between two stores of the consumer position.
pub const PUBLISH_EVERY: usize = 256;

/// Positions and data of one ring: the consumer position (ours to write), the producer
/// position and the data area mapped twice in a row (so records never wrap).
struct Ring {
    consumer: *const AtomicUsize,
    producer: *const AtomicUsize,
    data: *const u8,
    mask: usize,
}

/// One committed record: its payload and where it lies in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSpan {
    /// Position of the record's 8-byte header.
    pub start: usize,
    /// Position after the record (and its padding to 8 bytes): the next record's header.
    pub end: usize,
    /// The kernel discarded the record (no data for us).
    pub discarded: bool,
}

/// Walks a ring's committed records from the consumer position on, and publishes the
/// consumer position only when told to ([`Cursor::release`]): until then every byte it walked
/// stays as the kernel wrote it, so a run of records can be read as one span of memory.
pub struct Cursor<'r> {
    ring: &'r Ring,
    /// The next record to visit.
    pos: usize,
    prod: usize,
}

impl Cursor<'_> {
    /// The next committed record, or `None` when the ring holds no more (or the next one is
    /// reserved but not committed yet).
    pub fn next_record(&mut self) -> Option<RecordSpan> {
        // SAFETY: the ring's pointers are valid for its layout (see `RingReader::new`).
        unsafe {
            if self.pos == self.prod {
                self.prod = (*self.ring.producer).load(Ordering::Acquire);
                if self.pos == self.prod {
                    return None;
                }
            }
            let hdr = self.ring.data.add(self.pos & self.ring.mask);
            let word = (*hdr.cast::<AtomicU32>()).load(Ordering::Acquire);
            if word & BUSY_BIT != 0 {
                return None; // reserved, not committed yet
            }
            let len = (word & !(BUSY_BIT | DISCARD_BIT)) as usize;
            let span = RecordSpan {
                start: self.pos,
                end: self.pos + (HDR_SZ + len).next_multiple_of(8),
                discarded: word & DISCARD_BIT != 0,
            };
            self.pos = span.end;
            Some(span)
        }
    }

    /// A visited record's payload.
    pub fn payload(&self, r: &RecordSpan) -> &[u8] {
        // SAFETY: a committed record the cursor visited and has not released: its header says
        // how long it is, and the data area is mapped twice so it never wraps.
        unsafe {
            let hdr = self.ring.data.add(r.start & self.ring.mask);
            let len =
                (*hdr.cast::<AtomicU32>()).load(Ordering::Relaxed) & !(BUSY_BIT | DISCARD_BIT);
            std::slice::from_raw_parts(hdr.add(HDR_SZ), len as usize)
        }
    }

    /// The ring's bytes from position `from` to `to` (record headers included): both must be
    /// record boundaries the cursor visited and has not released.
    pub fn span(&self, from: usize, to: usize) -> &[u8] {
        assert!(from <= to && to <= self.pos && to - from <= self.ring.mask + 1);
        // SAFETY: visited, unreleased records lie in [from, to); the double mapping makes any
        // span of at most the ring's size contiguous.
        unsafe { std::slice::from_raw_parts(self.ring.data.add(from & self.ring.mask), to - from) }
    }

    /// Hands the records before position `to` back to the kernel.
    pub fn release(&mut self, to: usize) {
        debug_assert!(to <= self.pos);
        // SAFETY: the consumer position is ours to write.
        unsafe { (*self.ring.consumer).store(to, Ordering::Release) };
    }

    /// The position after the last record visited.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Ring {
    /// # Safety
    /// The pointers must be valid for the ring's layout and this must be its only consumer.
    unsafe fn cursor(&self) -> Cursor<'_> {
        let pos = (*self.consumer).load(Ordering::Acquire);
        Cursor {
            ring: self,
            pos,
            prod: pos,
        }
    }

    /// Visits the committed records, at most `max`, until `f` returns false; returns how
    /// many it visited (discarded ones included).
    ///
    /// # Safety
    /// The pointers must be valid for the ring's layout and this must be its only consumer.
    unsafe fn drain(&self, max: usize, f: &mut dyn FnMut(&[u8]) -> bool) -> usize {
        let mut cursor = self.cursor();
        let mut n = 0;
        while n < max {
            let Some(r) = cursor.next_record() else {
                break;
            };
            let more = r.discarded || f(cursor.payload(&r));
            n += 1;
            if n % PUBLISH_EVERY == 0 {
                cursor.release(r.end);
            }
            if !more {
                break;
            }
        }
        let end = cursor.position();
        cursor.release(end);
        n
    }
}

/// A mapping released on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: i32, offset: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the map's fd; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped, once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The batch reader of one ring buffer map. Keep the map's fd open while it lives; use no
/// other consumer (such as aya's `RingBuf::next`) at the same time.
pub struct RingReader {
    ring: Ring,
    _consumer: Mapping,
    _producer: Mapping,
}

// SAFETY: the mappings are owned by the reader and only touched through `&mut self`.
unsafe impl Send for RingReader {}

impl RingReader {
    /// Maps the ring buffer map behind `fd`, whose size (max_entries) is `size` bytes, a
    /// power-of-two multiple of the page size.
    pub fn new(fd: BorrowedFd<'_>, size: usize) -> io::Result<Self> {
        if !size.is_power_of_two() {
            return Err(io::Error::other(format!(
                "ring size {size} is no power of two"
            )));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // Layout (kernel/bpf/ringbuf.c): consumer page (read-write), then the producer page
        // and the data pages twice (read-only).
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        let ring = Ring {
            consumer: consumer.ptr.cast(),
            producer: producer.ptr.cast(),
            // SAFETY: inside the producer mapping.
            data: unsafe { producer.ptr.cast::<u8>().add(page) },
            mask: size - 1,
        };
        Ok(RingReader {
            ring,
            _consumer: consumer,
            _producer: producer,
        })
    }

    /// Calls `f` on each committed record, at most `max` of them, until it returns false;
    /// returns how many records were consumed.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8]) -> bool) -> usize {
        // SAFETY: the mappings match the ring's layout and `&mut self` makes us its only
        // consumer in this process.
        unsafe { self.ring.drain(max, &mut f) }
    }

    /// A cursor over the committed records, for readers that write runs of records out as
    /// they lie in memory; it publishes nothing until [`Cursor::release`].
    pub fn cursor(&mut self) -> Cursor<'_> {
        // SAFETY: as in `drain`.
        unsafe { self.ring.cursor() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring in plain memory: positions, and a data area of `size` bytes twice.
    struct FakeRing {
        consumer: Box<AtomicUsize>,
        producer: Box<AtomicUsize>,
        data: Vec<u64>,
        size: usize,
    }

    impl FakeRing {
        fn new(size: usize) -> Self {
            FakeRing {
                consumer: Box::new(AtomicUsize::new(0)),
                producer: Box::new(AtomicUsize::new(0)),
                data: vec![0; 2 * size / 8],
                size,
            }
        }

        /// Appends a record (header word, then bytes), as committed or not.
        fn push(&mut self, bytes: &[u8], flags: u32) {
            let pos = self.producer.load(Ordering::Relaxed);
            let size = self.size;
            let mem: &mut [u8] = bytemuck_bytes(&mut self.data);
            // Both copies of the data area, as the kernel's double mapping shows them.
            let mut put = |i: usize, b: u8| {
                mem[i % size] = b;
                mem[i % size + size] = b;
            };
            let hdr = (bytes.len() as u32 | flags).to_ne_bytes();
            for (i, b) in hdr.iter().chain(&[0; 4]).chain(bytes).enumerate() {
                put(pos + i, *b);
            }
            self.producer.store(
                pos + (8 + bytes.len()).next_multiple_of(8),
                Ordering::Release,
            );
        }

        fn ring(&self) -> Ring {
            Ring {
                consumer: &*self.consumer,
                producer: &*self.producer,
                data: self.data.as_ptr().cast(),
                mask: self.size - 1,
            }
        }
    }

    fn bytemuck_bytes(v: &mut [u64]) -> &mut [u8] {
        // SAFETY: u64s viewed as bytes: same memory, no invalid values.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 8) }
    }

    fn collect(ring: &Ring, max: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        // SAFETY: the fake ring's pointers stay valid for the call.
        unsafe {
            ring.drain(max, &mut |r| {
                got.push(r.to_vec());
                true
            })
        };
        got
    }

    #[test]
    fn reads_committed_records_and_skips_discarded_ones() {
        let mut f = FakeRing::new(4096);
        f.push(b"abc", 0);
        f.push(b"discarded", DISCARD_BIT);
        f.push(&[7; 13], 0);
        let ring = f.ring();
        assert_eq!(collect(&ring, 100), vec![b"abc".to_vec(), vec![7; 13]]);
        // 8+3 -> 16, 8+9 -> 24, 8+13 -> 24 bytes consumed.
        assert_eq!(f.consumer.load(Ordering::Relaxed), 64);
        assert!(collect(&ring, 100).is_empty());
    }

    #[test]
    fn stops_at_a_busy_record_and_at_the_limit() {
        let mut f = FakeRing::new(4096);
        f.push(b"one", 0);
        f.push(b"two", 0);
        f.push(b"reserved", BUSY_BIT);
        let ring = f.ring();
        assert_eq!(collect(&ring, 1), vec![b"one".to_vec()]);
        assert_eq!(collect(&ring, 100), vec![b"two".to_vec()]);
        assert_eq!(f.consumer.load(Ordering::Relaxed), 32);
    }

    #[test]
    fn positions_wrap_around_the_data_area() {
        let mut f = FakeRing::new(64);
        for i in 0..20u8 {
            f.push(&[i; 5], 0);
            let ring = f.ring();
            assert_eq!(collect(&ring, 100), vec![vec![i; 5]]);
        }
        assert_eq!(f.consumer.load(Ordering::Relaxed), 20 * 16);
    }

    #[test]
    fn a_cursor_spans_runs_and_releases_only_when_told() {
        let mut f = FakeRing::new(64);
        // Move the positions near the end of the data area, so the run wraps.
        for _ in 0..3 {
            f.push(&[0; 8], 0);
        }
        let ring = f.ring();
        collect(&ring, 10);
        f.push(&[1; 8], 0);
        f.push(&[2; 16], 0);
        f.push(b"x", BUSY_BIT);
        let ring = f.ring();
        // SAFETY: the fake ring's pointers stay valid for the cursor's life.
        let mut c = unsafe { ring.cursor() };
        let a = c.next_record().unwrap();
        let b = c.next_record().unwrap();
        assert_eq!((a.start, a.end, b.end), (48, 64, 88));
        assert!(c.next_record().is_none(), "stops at the reserved record");
        assert_eq!(
            (c.payload(&a), c.payload(&b)),
            (&[1u8; 8][..], &[2u8; 16][..])
        );
        let run = c.span(a.start, b.end);
        assert_eq!(run.len(), 40);
        assert_eq!((&run[8..16], &run[24..40]), (&[1u8; 8][..], &[2u8; 16][..]));
        assert_eq!(
            f.consumer.load(Ordering::Relaxed),
            48,
            "nothing released yet"
        );
        c.release(a.end);
        assert_eq!(f.consumer.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn stops_when_the_callback_says_so() {
        let mut f = FakeRing::new(4096);
        f.push(b"a", 0);
        f.push(b"b", 0);
        let ring = f.ring();
        let mut seen = 0;
        // SAFETY: the fake ring's pointers stay valid for the call.
        let n = unsafe {
            ring.drain(10, &mut |_| {
                seen += 1;
                false
            })
        };
        assert_eq!((n, seen), (1, 1));
        assert_eq!(collect(&ring, 10), vec![b"b".to_vec()]);
    }
}

//! Capture output by gather writes (writev): packet bytes go from the kernel's ring buffer to
//! the output file without a copy in userspace. Block headers and trailers are encoded into
//! an owned buffer; the packet data in between is *lent*: a pointer into the ring, valid
//! until the reader releases those records, which it does only after the next flush.
use std::{
    io::{self, Write},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

/// A writer that can also take bytes it does not copy.
pub trait LentWrite: Write {
    /// Writes `data` by reference: it is read at the next flush (or earlier), not now.
    ///
    /// # Safety
    /// `data` must stay valid and unchanged until the writer's next `flush` returns.
    unsafe fn write_lent(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data)
    }
}

impl LentWrite for Vec<u8> {}
impl<W: Write> LentWrite for io::BufWriter<W> {}

/// Where a [`GatherWriter`] writes.
pub enum Target {
    File(OwnedFd),
    Stdout,
}

impl Target {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Target::File(fd) => fd.as_fd(),
            // SAFETY: stdout stays open for the life of the process.
            Target::Stdout => unsafe { BorrowedFd::borrow_raw(libc::STDOUT_FILENO) },
        }
    }
}

/// One piece of output: a range of `owned`, or lent bytes.
enum Segment {
    Owned { start: usize, end: usize },
    Lent { ptr: *const u8, len: usize },
}

/// Most segments in one writev (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;
/// Owned bytes that make a flush worthwhile even before the caller asks for one.
const OWNED_FLUSH_BYTES: usize = 1 << 20;

/// Writes owned and lent bytes in order with writev. Nothing is written until `flush`
/// (or until a megabyte of owned bytes is waiting); dropping it unflushed loses the output.
pub struct GatherWriter {
    target: Target,
    owned: Vec<u8>,
    segments: Vec<Segment>,
    iov: Vec<libc::iovec>,
}

// SAFETY: lent pointers are only read during `flush`, by the thread that owns the writer; the
// lender keeps them valid until then (see `LentWrite::write_lent`).
unsafe impl Send for GatherWriter {}

impl GatherWriter {
    pub fn new(target: Target) -> Self {
        GatherWriter {
            target,
            owned: Vec::with_capacity(64 << 10),
            segments: Vec::with_capacity(2 * IOV_MAX),
            iov: Vec::with_capacity(IOV_MAX),
        }
    }

    /// Writes `iov` completely (writev may write less than asked, to a pipe for instance).
    fn write_iov(fd: BorrowedFd<'_>, mut iov: &mut [libc::iovec]) -> io::Result<()> {
        while !iov.is_empty() {
            // SAFETY: every iovec points at live memory (owned buffer or lent bytes).
            let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut n = n as usize;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while let Some(first) = iov.first_mut() {
                if n < first.iov_len {
                    // SAFETY: advancing inside the same buffer.
                    first.iov_base = unsafe { first.iov_base.cast::<u8>().add(n) }.cast();
                    first.iov_len -= n;
                    break;
                }
                n -= first.iov_len;
                iov = &mut iov[1..];
            }
        }
        Ok(())
    }
}

impl Write for GatherWriter {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let start = self.owned.len();
        self.owned.extend_from_slice(buf);
        let end = self.owned.len();
        match self.segments.last_mut() {
            Some(Segment::Owned { end: last_end, .. }) if *last_end == start => *last_end = end,
            _ => self.segments.push(Segment::Owned { start, end }),
        }
        if self.owned.len() >= OWNED_FLUSH_BYTES {
            self.flush()?;
        }
        Ok(buf.len())
    }

    /// `write` always takes everything.
    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(buf).map(|_| ())
    }

    fn flush(&mut self) -> io::Result<()> {
        let fd = self.target.fd();
        let base = self.owned.as_ptr();
        let result = (|| {
            for chunk in self.segments.chunks(IOV_MAX) {
                self.iov.clear();
                self.iov.extend(chunk.iter().map(|s| match *s {
                    // SAFETY: the range lies inside `owned`, unchanged during the flush.
                    Segment::Owned { start, end } => libc::iovec {
                        iov_base: unsafe { base.add(start) } as *mut _,
                        iov_len: end - start,
                    },
                    Segment::Lent { ptr, len } => libc::iovec {
                        iov_base: ptr as *mut _,
                        iov_len: len,
                    },
                }));
                Self::write_iov(fd, &mut self.iov)?;
            }
            Ok(())
        })();
        // Lent bytes must not outlive this flush, written or not.
        self.segments.clear();
        self.owned.clear();
        result
    }
}

impl LentWrite for GatherWriter {
    #[inline]
    unsafe fn write_lent(&mut self, data: &[u8]) -> io::Result<()> {
        if !data.is_empty() {
            self.segments.push(Segment::Lent {
                ptr: data.as_ptr(),
                len: data.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (OwnedFd, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: a two-element array for pipe(2); the fds are owned right away.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        use std::os::fd::FromRawFd;
        // SAFETY: fresh fds from pipe(2), each owned once.
        unsafe {
            (
                OwnedFd::from_raw_fd(fds[1]),
                std::fs::File::from_raw_fd(fds[0]),
            )
        }
    }

    #[test]
    fn owned_and_lent_bytes_come_out_in_order() {
        let (w, mut r) = pipe();
        let mut g = GatherWriter::new(Target::File(w));
        let lent = b"-lent-".to_vec();
        g.write_all(b"head").unwrap();
        // SAFETY: `lent` outlives the flush below.
        unsafe { g.write_lent(&lent).unwrap() };
        g.write_all(b"tail").unwrap();
        g.write_all(b"+more").unwrap();
        // SAFETY: as above; empty lent slices are no segment.
        unsafe { g.write_lent(&lent[..0]).unwrap() };
        assert_eq!(g.segments.len(), 3, "adjacent owned writes share a segment");
        g.flush().unwrap();
        drop(g);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "head-lent-tail+more");
    }

    #[test]
    fn more_segments_than_one_writev_takes() {
        let (w, mut r) = pipe();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            out
        });
        let lent: Vec<u8> = (0..=255).collect();
        let mut g = GatherWriter::new(Target::File(w));
        let mut expected = Vec::new();
        for i in 0..3000usize {
            g.write_all(&(i as u32).to_le_bytes()).unwrap();
            // SAFETY: `lent` outlives the flush below.
            unsafe { g.write_lent(&lent[i % 200..]).unwrap() };
            expected.extend_from_slice(&(i as u32).to_le_bytes());
            expected.extend_from_slice(&lent[i % 200..]);
        }
        g.flush().unwrap();
        drop(g);
        assert_eq!(reader.join().unwrap(), expected);
    }
}

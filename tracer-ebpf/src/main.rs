//! netpath's kernel programs: tc/tcx hooks on chosen devices and BTF tracepoints that see every
//! device and every drop. The tc programs first decide the filter from `CONFIG` on the headers
//! in place (direct packet access) when the packet is plain; otherwise, and in the tracepoints,
//! each program copies the packet headers into a per-CPU scratch event and parses them. Only a
//! packet that passes touches the ring buffer (one output per event, `snap_len` bytes of data;
//! a failed output is counted in `LOST`). Kernel struct offsets come from `CONFIG.offsets`,
//! which userspace reads from the running kernel's BTF.
#![no_std]
#![no_main]

mod copy;
mod filter;
mod func;
mod kernel;
mod maps;
mod neigh;
mod output;
mod pcapng;
mod route;
mod skb;
mod tc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

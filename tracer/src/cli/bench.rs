//! `netpath bench-decode` (hidden; run by `cargo xtask bench decode`): how many events per
//! second one core turns from ring-buffer records into output. A fixed mix of records, made
//! the way the kernel programs write them, is replayed through the reader's decoding (with the
//! live namer of this machine) into each of `watch`'s sinks and the trace's probe matcher,
//! writing to a sink that discards, so no flood's rate caps the figure.
use std::{net::IpAddr, time::Instant};

use anyhow::{bail, Result};
use clap::Args;
use netpath_core::{
    analysis::path::ProbeMatch,
    model::{Event, Family, Proto},
    world::StreamItem,
};
use tracer::node::{btf::KernelBtf, decode, names::LiveNamer, netns};
use tracer_common::{dir, fixtures, flags, hook, kind, nud, NeighRaw, RawEvent, RouteRaw};

#[derive(Debug, Args)]
pub struct BenchDecodeArgs {
    /// Events replayed per sink.
    #[arg(long, default_value_t = 3_000_000)]
    pub events: usize,
}

/// Items per batch, as the ring reader hands them over.
const BATCH: usize = 1024;

pub fn run(args: BenchDecodeArgs) -> Result<i32> {
    if args.events == 0 {
        bail!("--events must be at least 1");
    }
    let here = netns::current()?;
    let mut ifindexes: Vec<u32> = netns::devices_here().into_iter().map(|(i, _)| i).collect();
    if ifindexes.is_empty() {
        ifindexes.push(1);
    }
    let location = kernel_text_address().unwrap_or(0);
    let records = record_mix(here.inode, &ifindexes, location);
    let reasons = KernelBtf::load()
        .map(|b| b.drop_reasons())
        .unwrap_or_default();
    let mut namer = LiveNamer::new(reasons);
    // As `watch` writes: one reused line, a 64 KiB buffer in front of the output.
    let (mut json_line, mut text_line) = (String::with_capacity(256), String::with_capacity(256));
    let mut json_out = std::io::BufWriter::with_capacity(64 * 1024, std::io::sink());
    let mut text_out = std::io::BufWriter::with_capacity(64 * 1024, std::io::sink());
    let probes = [
        ProbeMatch::Echo {
            family: Family::Ipv6,
            id: 7,
            seq: 3,
        },
        ProbeMatch::Transport {
            family: Family::Ipv4,
            proto: Proto::Udp,
            addr: IpAddr::from([10, 0, 0, 1]),
            port: 33434,
        },
    ];
    let mut kept: Vec<Event> = Vec::with_capacity(BATCH);
    let mut matched = 0u64;
    println!(
        "records {} (mix of {}), events per sink {}",
        records.len(),
        MIX_DESCRIPTION,
        args.events
    );
    type Sink<'a> = Box<dyn FnMut(Box<Event>) -> Result<()> + 'a>;
    let sinks: Vec<(&str, Sink)> = vec![
        (
            "decode",
            Box::new(|ev| {
                drop(ev);
                Ok(())
            }),
        ),
        (
            "json",
            Box::new(|ev| {
                Ok(super::watch::write_event(
                    &mut json_out,
                    &ev,
                    true,
                    &mut json_line,
                )?)
            }),
        ),
        (
            "text",
            Box::new(|ev| {
                Ok(super::watch::write_event(
                    &mut text_out,
                    &ev,
                    false,
                    &mut text_line,
                )?)
            }),
        ),
        (
            "matcher",
            Box::new(|ev| {
                // What a trace does with each event: test it against every probe, keep it.
                if probes.iter().any(|m| m.is_request(&ev) || m.is_reply(&ev)) {
                    matched += 1;
                }
                if kept.len() == kept.capacity() {
                    kept.clear();
                }
                kept.push(*ev);
                Ok(())
            }),
        ),
    ];
    // Per second of this thread's CPU time (what one core does), and of wall time (lower
    // when other processes share the core).
    println!(
        "{:<8} {:>14} {:>14}",
        "sink", "events/cpu-s", "events/wall-s"
    );
    for (name, mut sink) in sinks {
        let (cpu, wall) = replay(&records, args.events, &mut namer, &mut *sink)?;
        let per = |secs: f64| args.events as f64 / secs;
        println!("{name:<8} {:>14.0} {:>14.0}", per(cpu), per(wall));
    }
    Ok(0)
}

/// Decodes `total` records (cycling through `records`) in reader-sized batches and hands each
/// event to `sink`; the seconds it took, of this thread's CPU time and of wall time.
fn replay(
    records: &[Vec<u8>],
    total: usize,
    namer: &mut LiveNamer,
    sink: &mut dyn FnMut(Box<Event>) -> Result<()>,
) -> Result<(f64, f64)> {
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    let mut done = 0;
    let mut cycle = records.iter().cycle();
    while done < total {
        let n = BATCH.min(total - done);
        let mut batch = Vec::with_capacity(BATCH);
        for bytes in cycle.by_ref().take(n) {
            let raw = decode::raw_from_bytes(bytes)?;
            let ev = decode::decode(&raw, "node-1", 0, namer);
            batch.push(StreamItem::Event(Box::new(ev)));
        }
        for item in batch {
            if let StreamItem::Event(ev) = item {
                sink(ev)?;
            }
        }
        done += n;
    }
    let cpu = thread_cpu_seconds() - cpu_started;
    Ok((cpu.max(1e-9), started.elapsed().as_secs_f64().max(1e-9)))
}

/// CPU time this thread has used (CLOCK_THREAD_CPUTIME_ID), in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

const MIX_DESCRIPTION: &str = "40 % tc hops IPv4 UDP, 20 % IPv6 ICMPv6 echo, 10 % IPv6 TCP \
without link-layer header, 10 % VXLAN, 10 % drops, 8 % route lookups, 2 % neighbour failures";

/// One hundred records in the proportions of [`MIX_DESCRIPTION`], on this namespace's devices.
fn record_mix(netns: u32, ifindexes: &[u32], location: u64) -> Vec<Vec<u8>> {
    let udp = fixtures::udp4([10, 0, 0, 1], [10, 0, 0, 2], 33434, 53, &[0; 64]);
    let inner = fixtures::udp4([10, 1, 0, 1], [10, 1, 0, 2], 40000, 8080, &[0; 32]);
    let vxlan = fixtures::vxlan(4789, 42, &inner);
    let tcp6 = fixtures::tcp6_ip();
    let mut out = Vec::with_capacity(100);
    for i in 0..100u32 {
        let ifindex = ifindexes[i as usize % ifindexes.len()];
        let mut raw = RawEvent::ZERO;
        raw.ts_ns = 1_000_000_000 + u64::from(i) * 1_000;
        raw.skb = 0xffff_8880_0000_0000 + u64::from(i) * 0x100;
        raw.netns = netns;
        raw.ifindex = ifindex;
        raw.kind = kind::HOP;
        raw.hook = if i % 2 == 0 {
            hook::TC_EGRESS
        } else {
            hook::TC_INGRESS
        };
        raw.dir = if i % 2 == 0 {
            dir::EGRESS
        } else {
            dir::INGRESS
        };
        match i {
            0..=39 => set_packet(&mut raw, &udp, true, 0x0800),
            40..=59 => set_packet(&mut raw, &fixtures::icmp6(i as u16), true, 0x86dd),
            60..=69 => set_packet(&mut raw, &tcp6, false, 0x86dd),
            70..=79 => set_packet(&mut raw, &vxlan, true, 0x0800),
            80..=89 => {
                set_packet(&mut raw, &udp, true, 0x0800);
                raw.kind = kind::DROP;
                raw.hook = hook::KFREE_SKB;
                raw.dir = dir::NONE;
                raw.reason = 2 + i % 4;
                raw.location = location;
            }
            90..=97 => {
                let mut rr = RouteRaw {
                    family: if i % 2 == 0 { 4 } else { 6 },
                    proto: 17,
                    sport: 33434,
                    dport: 53,
                    table: 254,
                    rtype: 1,
                    nh_ifindex: ifindex,
                    ..RouteRaw::default()
                };
                if rr.family == 4 {
                    rr.src[..4].copy_from_slice(&[10, 0, 0, 1]);
                    rr.dst[..4].copy_from_slice(&[10, 0, 0, 2]);
                } else {
                    rr.src = fixtures::A6;
                    rr.dst = fixtures::B6;
                }
                rr.oif_name[..4].copy_from_slice(b"eth0");
                raw.kind = kind::ROUTE;
                raw.hook = hook::FIB_LOOKUP;
                raw.dir = dir::NONE;
                set_payload(&mut raw, &rr);
            }
            _ => {
                let mut nr = NeighRaw {
                    family: 4,
                    state: nud::FAILED,
                    old_state: nud::INCOMPLETE,
                    ..NeighRaw::default()
                };
                nr.addr[..4].copy_from_slice(&[10, 0, 0, 9]);
                raw.kind = kind::NEIGH;
                raw.hook = hook::NEIGH_TIMER;
                raw.dir = dir::NONE;
                set_payload(&mut raw, &nr);
            }
        }
        out.push(record_bytes(&raw));
    }
    out
}

fn set_packet(raw: &mut RawEvent, bytes: &[u8], from_mac: bool, protocol: u16) {
    let len = bytes.len();
    let n = len.min(raw.data.len());
    raw.data[..n].copy_from_slice(&bytes[..n]);
    raw.data_len = n as u16;
    raw.skb_len = len as u32;
    raw.flags = if from_mac { flags::DATA_FROM_MAC } else { 0 };
    raw.protocol = protocol;
}

fn set_payload<T: Copy>(raw: &mut RawEvent, value: &T) {
    let n = std::mem::size_of::<T>();
    // SAFETY: T is a repr(C) plain-data record; viewing it as bytes is always valid.
    let bytes = unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), n) };
    raw.data[..n].copy_from_slice(bytes);
    raw.data_len = n as u16;
}

/// The record as the kernel writes it to the ring: the header and `data_len` bytes of data.
fn record_bytes(raw: &RawEvent) -> Vec<u8> {
    let n = RawEvent::DATA_OFFSET + raw.data_len as usize;
    // SAFETY: RawEvent is repr(C) plain data; its first `n` bytes are initialised.
    unsafe { std::slice::from_raw_parts((raw as *const RawEvent).cast::<u8>(), n) }.to_vec()
}

/// A kernel function's address (where `kfree_skb` drops are usually reported), for drops'
/// locations to be named like real ones.
fn kernel_text_address() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (addr, _, name) = (f.next()?, f.next()?, f.next()?);
        let addr = u64::from_str_radix(addr, 16).ok().filter(|a| *a != 0)?;
        (name == "tcp_v4_rcv").then_some(addr + 0x10)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netpath_core::model::EventKind;

    #[test]
    fn the_mix_decodes_into_the_kinds_it_claims() {
        let records = record_mix(7, &[1, 2], 0);
        let mut namer = LiveNamer::new(Default::default());
        let mut kinds = std::collections::BTreeMap::new();
        let mut tunnels = 0;
        for bytes in &records {
            let raw = decode::raw_from_bytes(bytes).unwrap();
            let ev = decode::decode(&raw, "n", 0, &mut namer);
            *kinds.entry(format!("{:?}", ev.kind)).or_insert(0) += 1;
            tunnels += ev.packet.as_ref().is_some_and(|p| p.tunnel.is_some()) as u32;
            if ev.kind == EventKind::Hop {
                assert!(ev.flow.family.is_some(), "{ev:?}");
            }
        }
        assert_eq!(kinds["Hop"], 80);
        assert_eq!(kinds["Drop"], 10);
        assert_eq!(kinds["Route"], 8);
        assert_eq!(kinds["Neigh"], 2);
        assert_eq!(tunnels, 10);
    }

    #[test]
    fn replay_hands_every_event_to_the_sink() {
        let records = record_mix(7, &[1], 0);
        let mut namer = LiveNamer::new(Default::default());
        let mut seen = 0;
        let (cpu, wall) = replay(&records, 2500, &mut namer, &mut |_| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 2500);
        assert!(cpu > 0.0 && wall > 0.0);
    }
}

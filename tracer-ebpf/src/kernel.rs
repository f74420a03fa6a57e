//! Reading kernel structs at the offsets userspace took from BTF (`CONFIG.offsets`).

use aya_ebpf::{helpers::bpf_probe_read_kernel, helpers::generated::bpf_get_current_task};
use tracer_common::{Config, KernelOffsets};

#[inline(always)]
pub(crate) unsafe fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Reads `skb->dev->nd_net->ns.inum` and `skb->dev->ifindex`; falls back to the socket's
/// namespace when the skb has no device yet.
#[inline(always)]
pub(crate) unsafe fn skb_netns_ifindex(o: &KernelOffsets, skb: u64) -> (u32, u32) {
    unsafe {
        let dev: u64 = read(skb, o.skb_dev).unwrap_or(0);
        if dev != 0 {
            let ifindex: u32 = read(dev, o.dev_ifindex).unwrap_or(0);
            return (dev_netns(o, dev), ifindex);
        }
        let sk: u64 = read(skb, o.skb_sk).unwrap_or(0);
        if sk != 0 {
            let net: u64 = read(sk, o.sk_net).unwrap_or(0);
            if net != 0 {
                return (read(net, o.net_ns_inum).unwrap_or(0), 0);
            }
        }
        (0, 0)
    }
}

/// `dev->nd_net->ns.inum`, 0 when unreadable.
#[inline(always)]
pub(crate) unsafe fn dev_netns(o: &KernelOffsets, dev: u64) -> u32 {
    unsafe {
        let net: u64 = read(dev, o.dev_nd_net).unwrap_or(0);
        if net != 0 {
            read(net, o.net_ns_inum).unwrap_or(0)
        } else {
            0
        }
    }
}

pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;

#[inline(always)]
pub(crate) unsafe fn net_inum(o: &KernelOffsets, net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    unsafe { read(net, o.net_ns_inum) }.unwrap_or(0)
}

/// Network namespace of the current task (process-context lookups).
#[inline(always)]
pub(crate) unsafe fn task_netns(cfg: &Config) -> u32 {
    unsafe {
        let task = bpf_get_current_task();
        if task == 0 {
            return 0;
        }
        let nsproxy: u64 = read(task, cfg.route.task_nsproxy).unwrap_or(0);
        if nsproxy == 0 {
            return 0;
        }
        net_inum(
            &cfg.offsets,
            read(nsproxy, cfg.route.nsproxy_net_ns).unwrap_or(0),
        )
    }
}

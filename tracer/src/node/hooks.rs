//! The kernel hooks netpath attaches, in one table: what each gives, what the user loses
//! without it, the arguments its program reads (checked against the running kernel's BTF by
//! `netpath check`), and when a tracer wants it. The loader (`kernel.rs`) and the feature
//! checks (`features.rs`) both read this table.

/// What a tracer was asked for, as far as choosing hooks goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    pub drops: bool,
    pub dev_hops: bool,
    /// Route-lookup events (the kernel offsets for them were found).
    pub routes: bool,
    /// Neighbour events (the kernel offsets for them were found).
    pub neigh: bool,
}

/// A BTF tracepoint netpath attaches: what it gives, and the arguments its program reads,
/// by position, as C types (after the kernel's own qualifiers are dropped).
pub struct Tracepoint {
    pub name: &'static str,
    pub gives: &'static str,
    pub without: &'static str,
    pub args: &'static [(usize, &'static str)],
    /// Whether a tracer with these wants attaches it.
    pub wanted: fn(&Wants) -> bool,
}

/// Every BTF tracepoint netpath's programs attach to (tracer-ebpf), with the arguments they
/// read.
pub const TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        name: "kfree_skb",
        gives: "drops, with the kernel's drop reason",
        without: "no drop events",
        args: &[(0, "struct sk_buff *"), (2, "enum skb_drop_reason")],
        wanted: |w| w.drops,
    },
    Tracepoint {
        name: "net_dev_queue",
        gives: "hops: packets queued to a device",
        without: "hops from tc only",
        args: &[(0, "struct sk_buff *")],
        wanted: |w| w.dev_hops,
    },
    Tracepoint {
        name: "netif_receive_skb",
        gives: "hops: packets a device received",
        without: "hops from tc only",
        args: &[(0, "struct sk_buff *")],
        wanted: |w| w.dev_hops || w.routes,
    },
    Tracepoint {
        name: "fib_table_lookup",
        gives: "IPv4 route lookups and their answer",
        without: "no IPv4 route events",
        args: &[
            (0, "u32"),
            (1, "struct flowi4 *"),
            (2, "struct fib_nh_common *"),
            (3, "int"),
        ],
        wanted: |w| w.routes,
    },
    Tracepoint {
        name: "fib6_table_lookup",
        gives: "IPv6 route lookups and their answer",
        without: "no IPv6 route events",
        args: &[
            (0, "struct net *"),
            (1, "struct fib6_result *"),
            (2, "struct fib6_table *"),
            (3, "struct flowi6 *"),
        ],
        wanted: |w| w.routes,
    },
    Tracepoint {
        name: "softirq_exit",
        gives: "ends a route lookup's context",
        without: "no route events",
        args: &[(0, "unsigned int")],
        wanted: |w| w.routes,
    },
    Tracepoint {
        name: "neigh_update",
        gives: "neighbour (ARP/NDP) state changes",
        without: "no neighbour events",
        args: &[(0, "struct neighbour *"), (2, "u8"), (3, "u32")],
        wanted: |w| w.neigh,
    },
    Tracepoint {
        name: "neigh_timer_handler",
        gives: "neighbour entries timing out",
        without: "no neighbour timeouts",
        args: &[(0, "struct neighbour *")],
        wanted: |w| w.neigh,
    },
    Tracepoint {
        name: "neigh_event_send_done",
        gives: "packets waiting for a neighbour",
        without: "no neighbour-wait events",
        args: &[(0, "struct neighbour *")],
        wanted: |w| w.neigh,
    },
];

/// The tracepoints a tracer with `wants` attaches, in table order.
pub fn tracepoints(wants: &Wants) -> Vec<&'static str> {
    TRACEPOINTS
        .iter()
        .filter(|t| (t.wanted)(wants))
        .map(|t| t.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_want_brings_its_tracepoints() {
        assert!(tracepoints(&Wants::default()).is_empty());
        let drops = Wants {
            drops: true,
            ..Wants::default()
        };
        assert_eq!(tracepoints(&drops), ["kfree_skb"]);
        let routes = Wants {
            routes: true,
            ..Wants::default()
        };
        assert_eq!(
            tracepoints(&routes),
            [
                "netif_receive_skb",
                "fib_table_lookup",
                "fib6_table_lookup",
                "softirq_exit"
            ]
        );
        let neigh = Wants {
            neigh: true,
            ..Wants::default()
        };
        assert_eq!(tracepoints(&neigh).len(), 3);
    }
}

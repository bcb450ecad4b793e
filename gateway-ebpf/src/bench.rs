//! Benchmark-only wrappers (never attached by the daemon). `BPF_PROG_TEST_RUN` with `repeat`
//! does not restore the packet between iterations, so each wrapper saves the packet's first
//! `SAVED_WORDS` words, runs the real data path and puts the bytes back; `bench_restore` does
//! the same around nothing, so its cost can be subtracted.
use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

use crate::parse::{ptr_at, Ipv4Hdr, ETH_LEN, IPV4_LEN};

/// Bytes saved and restored: every header the data path rewrites (Ethernet, IPv4, ports and
/// TCP checksum), so benchmark packets must be at least this long.
const SAVED_WORDS: usize = 7;

/// This CPU's copy of the packet and its iteration counter.
#[repr(C)]
pub struct Scratch {
    words: [u64; SAVED_WORDS],
    iteration: u32,
    _pad: u32,
}

#[map]
static BENCH_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Copies the packet's head to or from this CPU's scratch (volatile, so the compiler cannot
/// prove the round trip a no-op and drop it from `bench_restore`).
#[inline(always)]
fn copy(packet: *mut [u64; SAVED_WORDS], scratch: *mut Scratch, save: bool) {
    for i in 0..SAVED_WORDS {
        // SAFETY: both pointers are bounds-checked by the caller; packet access may be unaligned.
        unsafe {
            let p = (packet as *mut u64).add(i);
            let s = core::ptr::addr_of_mut!((*scratch).words[i]);
            if save {
                s.write_volatile(p.read_unaligned());
            } else {
                p.write_unaligned(s.read_volatile());
            }
        }
    }
}

/// Runs `body` between saving and restoring the packet head; `vary` gives every iteration its
/// own client address (for new connections). Returns `body`'s action.
#[inline(always)]
fn wrapped(ctx: &XdpContext, vary: bool, body: fn(&XdpContext) -> u32) -> u32 {
    let (Some(packet), Some(scratch)) = (
        ptr_at::<[u64; SAVED_WORDS]>(ctx, 0),
        BENCH_SCRATCH.get_ptr_mut(0),
    ) else {
        return xdp_action::XDP_ABORTED;
    };
    copy(packet, scratch, true);
    if vary {
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: bounds-checked pointers into the packet and this CPU's scratch.
        unsafe {
            (*scratch).iteration = (*scratch).iteration.wrapping_add(1);
            let saddr = u32::from_be((*ip).saddr).wrapping_add((*scratch).iteration);
            (*ip).saddr = saddr.to_be();
        }
    }
    let action = body(ctx);
    copy(packet, scratch, false);
    action
}

const _: () = assert!(SAVED_WORDS * 8 >= ETH_LEN + IPV4_LEN + 18);

/// The whole data path (with its counters) around a packet restored after every iteration.
#[xdp]
pub fn bench_gateway(ctx: XdpContext) -> u32 {
    wrapped(&ctx, false, crate::run)
}

/// Like `bench_gateway`, but every iteration comes from a new client address, so each one opens
/// a connection.
#[xdp]
pub fn bench_new_conn(ctx: XdpContext) -> u32 {
    wrapped(&ctx, true, crate::run)
}

/// The wrapper's own cost: save and restore around a trivial body.
#[xdp]
pub fn bench_restore(ctx: XdpContext) -> u32 {
    wrapped(&ctx, false, |_| xdp_action::XDP_PASS)
}

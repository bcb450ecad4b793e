//! The gateway's XDP programs (skeleton; the data path lands here).
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The gateway data path.
#[xdp]
pub fn gateway(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// A trivial pass program: benchmark baseline and the testbed's veth far-end program.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

//! Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')).
//!
//! Values are taken exactly as they lie in the packet (read as native integers), which is
//! valid because the ones' complement sum does not depend on byte order as long as every
//! operand is read the same way.

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum `check` after a 32-bit field changed from `from` to `to`.
#[inline(always)]
pub fn replace4(check: u16, from: u32, to: u32) -> u16 {
    let nf = !from;
    let sum = (!check) as u64
        + (nf & 0xffff) as u64
        + (nf >> 16) as u64
        + (to & 0xffff) as u64
        + (to >> 16) as u64;
    !fold(sum)
}

/// The checksum `check` after a 16-bit field changed from `from` to `to`.
#[inline(always)]
pub fn replace2(check: u16, from: u16, to: u16) -> u16 {
    let sum = (!check) as u64 + (!from) as u64 + to as u64;
    !fold(sum)
}

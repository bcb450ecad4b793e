//! Flow hashing: the same 5-tuple gives the same value on every node (Maglev slot and NAT
//! port choice), with murmur3-style mixing so nearby ports spread well.
use gateway_common::FlowKey;

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// murmur3's finaliser: every input bit affects every output bit.
#[inline(always)]
pub fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a connection's client-side 5-tuple.
#[inline(always)]
pub fn flow(key: &FlowKey) -> u32 {
    let mut h = mix(0x9747_b28c, key.src_addr);
    h = mix(h, key.dst_addr);
    h = mix(h, ((key.src_port as u32) << 16) | key.dst_port as u32);
    h = mix(h, key.proto as u32);
    finish(h)
}

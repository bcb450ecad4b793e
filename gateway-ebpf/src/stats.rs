//! Per-CPU packet and byte counters (no atomics: each CPU has its own slot).
use aya_ebpf::maps::PerCpuArray;
use gateway_common::{Counter, Path, Reason};

use crate::maps::{ACTIONS, BACKEND_STATS, PATHS, REASONS, SERVICE_STATS};

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot of a live map entry.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

/// Counts the XDP action returned for a packet.
#[inline(always)]
pub fn action(code: u32, bytes: u64) {
    bump(&ACTIONS, code, bytes);
}

/// Counts the path a packet took.
#[inline(always)]
pub fn path(path: Path, bytes: u64) {
    bump(&PATHS, path as u32, bytes);
}

/// Counts why a packet left the fast path.
#[inline(always)]
pub fn reason(reason: Reason, bytes: u64) {
    bump(&REASONS, reason as u32, bytes);
}

/// Counts a translated packet against its service and backend.
#[inline(always)]
pub fn service_backend(service_id: u32, backend_id: u32, bytes: u64) {
    bump(&SERVICE_STATS, service_id, bytes);
    bump(&BACKEND_STATS, backend_id, bytes);
}

/// Counts a translated reply against its service.
#[inline(always)]
pub fn service(service_id: u32, bytes: u64) {
    bump(&SERVICE_STATS, service_id, bytes);
}

//! Whole-table reads, bulk writes and bulk deletes with `BPF_MAP_LOOKUP_BATCH`,
//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH`, which aya 0.14 does not offer. The conntrack sweep reads both connection tables every
//! second; entry by entry that is two syscalls per entry (get-next-key, lookup), which at ten
//! thousand new connections a second cost the daemon several percent of a CPU.
use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
};

use aya::{
    maps::{IterableMap, MapData},
    Pod,
};

/// `enum bpf_cmd` values from the kernel's UAPI.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Entries asked for per lookup syscall.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; the buffers it points to
    // outlive the call and are as large as `count` says.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn fd(map: &MapData) -> u32 {
    map.fd().as_fd().as_raw_fd() as u32
}

/// Every entry of a (non per-CPU) hash map, read a chunk per syscall. Entries changing during
/// the read may be missed or seen once, as with any iteration of a live map.
pub fn entries<K: Pod, V: Pod>(map: &impl IterableMap<K, V>) -> io::Result<Vec<(K, V)>> {
    let mut cursor = Cursor::default();
    let mut out = Vec::new();
    while let Some(chunk) = cursor.next(map)? {
        out.extend(chunk);
    }
    Ok(out)
}

/// A walk through a hash map one chunk at a time, so its owner can do other work between
/// chunks (the sweep of a big connection table).
#[derive(Debug, Default)]
pub struct Cursor {
    /// The kernel's opaque position: a bucket index (u32) for a hash map; 8 bytes is plenty.
    position: [u64; 1],
    started: bool,
    done: bool,
}

impl Cursor {
    /// The next chunk of at most [`CHUNK`] entries; `None` once the walk is over.
    pub fn next<K: Pod, V: Pod>(
        &mut self,
        map: &impl IterableMap<K, V>,
    ) -> io::Result<Option<Vec<(K, V)>>> {
        if self.done {
            return Ok(None);
        }
        let mut keys: Vec<K> = Vec::with_capacity(CHUNK);
        let mut values: Vec<V> = Vec::with_capacity(CHUNK);
        let mut attr = BatchAttr {
            in_batch: if self.started {
                self.position.as_ptr() as u64
            } else {
                0
            },
            out_batch: self.position.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd(map.map()),
            ..BatchAttr::default()
        };
        self.started = true;
        match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.done = true,
            Err(e) => return Err(e),
        }
        let n = (attr.count as usize).min(CHUNK);
        // SAFETY: the kernel wrote `n` keys and values into the buffers (capacity CHUNK), and
        // both types are plain old data.
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        Ok(Some(keys.into_iter().zip(values).collect()))
    }
}

/// Deletes `keys` from the map in one syscall per chunk; keys already gone are skipped.
/// Returns how many were deleted.
pub fn delete<K: Pod, V: Pod>(map: &impl IterableMap<K, V>, keys: &[K]) -> io::Result<usize> {
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len().min(CHUNK) as u32,
            map_fd: fd(map.map()),
            ..BatchAttr::default()
        };
        let skip = match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => 0,
            // A key already gone (evicted by XDP's LRU, or raced): skip past it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => 1,
            Err(e) => return Err(e),
        };
        let done = (attr.count as usize).min(rest.len());
        deleted += done;
        rest = &rest[(done + skip).min(rest.len())..];
    }
    Ok(deleted)
}

/// Writes `keys[i] = values[i]` for every `i`, one syscall per chunk (a whole 64 Ki-entry
/// array in a handful of calls instead of one call per entry).
pub fn update<K: Pod, V: Pod>(
    map: &impl IterableMap<K, V>,
    keys: &[K],
    values: &[V],
) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut done = 0;
    while done < keys.len() {
        let count = (keys.len() - done).min(CHUNK);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: count as u32,
            map_fd: fd(map.map()),
            ..BatchAttr::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
        done += count;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Against a real kernel map (the XDP object loaded, not attached; needs root).
    use aya::{maps::HashMap, EbpfLoader};
    use gateway_common::{maps, Conn, FlowKey};

    use super::*;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            src_addr: i,
            ..Default::default()
        }
    }

    #[test]
    fn reads_every_chunk_and_deletes_past_missing_keys() {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::CONNS, 16_384)
            .load(crate::datapath::ebpf_object::BYTES)
            .expect("loading the XDP object (needs root)");
        let mut conns: HashMap<_, FlowKey, Conn> =
            HashMap::try_from(ebpf.take_map(maps::CONNS).unwrap()).unwrap();
        let total = 2 * CHUNK as u32 + 17;
        for i in 0..total {
            let conn = Conn {
                nat_port: i as u16,
                ..Default::default()
            };
            conns.insert(key(i), conn, 0).unwrap();
        }
        let mut read = entries(&conns).unwrap();
        read.sort_by_key(|(k, _)| k.src_addr);
        assert_eq!(read.len(), total as usize);
        assert!(read
            .iter()
            .enumerate()
            .all(|(i, (k, c))| k.src_addr == i as u32 && c.nat_port == i as u16));

        // Every third key is already gone when the batch delete runs.
        for i in (0..total).step_by(3) {
            conns.remove(&key(i)).unwrap();
        }
        let all: Vec<FlowKey> = (0..total).map(key).collect();
        let gone = total.div_ceil(3) as usize;
        assert_eq!(delete(&conns, &all).unwrap(), total as usize - gone);
        assert!(entries(&conns).unwrap().is_empty());
    }
}

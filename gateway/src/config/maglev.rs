//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights: a service's table is a
//! pure function of its configuration (and the back-ends' health), so every node computes the
//! same one, and removing one backend moves few other connections. The config checks its size;
//! `datapath::maps` writes it.
use std::net::Ipv4Addr;

/// A backend as Maglev sees it: its identity (which fixes its permutation), weight and the value
/// stored in its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Address; with `port` it seeds the permutation.
    pub address: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// Relative share; 0 takes no slots.
    pub weight: u32,
    /// What the table stores for it (the index in `BACKENDS`).
    pub id: u32,
}

/// The table size for a service with `backends` configured backends: the smallest prime above
/// 100 x backends (at least 101), fixed for a config so health changes keep the size.
pub fn table_size(backends: usize) -> u32 {
    let mut n = (backends.max(1) as u64) * 100 + 1;
    while !is_prime(n) {
        n += 1;
    }
    n.min(u64::from(u32::MAX)) as u32
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// FNV-1a 64 with a seed: stable across builds and hosts, unlike `std`'s hasher.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (splitmix64) so near-identical addresses spread well.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Fills a table of `size` slots (a prime). Backends with weight 0 are left out; with none left
/// the table is empty. Each round, a backend claims as many slots as its weight.
pub fn populate(size: u32, entries: &[Entry]) -> Vec<u32> {
    let live: Vec<&Entry> = entries.iter().filter(|e| e.weight > 0).collect();
    if live.is_empty() {
        return Vec::new();
    }
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|e| {
            let mut key = e.address.octets().to_vec();
            key.extend_from_slice(&e.port.to_be_bytes());
            let offset = fnv1a(0x6d61_676c_6576_0001, &key) % m;
            let skip = fnv1a(0x6d61_676c_6576_0002, &key) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (i, e) in live.iter().enumerate() {
            for _ in 0..e.weight {
                let (offset, skip) = perms[i];
                let mut slot = (offset + next[i] * skip) % m;
                while table[slot as usize] != u32::MAX {
                    next[i] += 1;
                    slot = (offset + next[i] * skip) % m;
                }
                table[slot as usize] = e.id;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(weights: &[u32]) -> Vec<Entry> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Entry {
                address: Ipv4Addr::new(10, 1, 0, 10 + i as u8),
                port: 8080,
                weight: w,
                id: i as u32,
            })
            .collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for &id in table {
            c[id as usize] += 1;
        }
        c.iter().map(|&x| x as f64 / table.len() as f64).collect()
    }

    #[test]
    fn sizes_are_primes_above_100_per_backend() {
        assert_eq!(table_size(0), 101);
        assert_eq!(table_size(1), 101);
        assert_eq!(table_size(2), 211);
        assert_eq!(table_size(10), 1009);
        assert_eq!(table_size(655), 65519);
        assert!(table_size(656) > gateway_common::MAGLEV_MAX);
    }

    #[test]
    fn deterministic() {
        let e = entries(&[1, 2, 3]);
        assert_eq!(populate(307, &e), populate(307, &e));
        let mut reversed = e.clone();
        reversed.reverse();
        // The permutation depends on the backend's address, not its position; only ties of
        // claim order may differ, so nearly all slots agree.
        let (a, b) = (populate(307, &e), populate(307, &reversed));
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same > 280, "{same}");
    }

    #[test]
    fn shares_follow_weights() {
        let weights = [1, 2, 3, 4];
        let size = table_size(weights.len());
        let t = populate(size, &entries(&weights));
        assert!(t.iter().all(|&id| id < 4));
        let total: u32 = weights.iter().sum();
        for (i, s) in shares(&t, 4).iter().enumerate() {
            let want = f64::from(weights[i]) / f64::from(total);
            assert!((s - want).abs() < 0.02, "backend {i}: {s} vs {want}");
        }
    }

    #[test]
    fn zero_weight_is_drained_and_empty_is_empty() {
        let t = populate(211, &entries(&[1, 0]));
        assert!(t.iter().all(|&id| id == 0));
        assert!(populate(211, &entries(&[0, 0])).is_empty());
    }

    #[test]
    fn minimal_disruption_on_removal() {
        let n = 10;
        let size = table_size(n);
        let all = entries(&vec![1; n]);
        let before = populate(size, &all);
        let mut fewer = all.clone();
        fewer[3].weight = 0;
        let after = populate(size, &fewer);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 3 && b != a)
            .count();
        // Ideal is 0 of the surviving slots; Maglev promises a small fraction.
        assert!(
            (moved as f64) < 0.03 * size as f64,
            "{moved} of {size} slots moved"
        );
    }
}

//! The verified-signature cache: remembers that a token's signature checked out against one
//! key set generation, so repeated tokens skip the public-key operation.
//!
//! It caches the signature check only. Claims (`exp`, `nbf`, `aud`, every route
//! requirement) are evaluated on every request; an entry is void once its key set changes
//! and never outlives the token's `exp`. (GHSA-qvp4-rpmr-xwrr came from a cache that also
//! skipped the claim checks.)

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::Mutex;

/// A SHA-256 digest of a whole token (header, payload and signature).
pub type Digest = [u8; 32];

/// Shards, so concurrent requests rarely wait on the same lock.
const SHARDS: usize = 16;

#[derive(Clone, Copy)]
struct Entry {
    generation: u64,
    exp: f64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Digest, Entry, BuildHasherDefault<DigestHasher>>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<Digest>,
}

/// A bounded cache of verified signatures.
pub struct SignatureCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    capacity: usize,
}

impl SignatureCache {
    /// A cache of about `capacity` entries (at most a quarter more); `None` when `capacity`
    /// is 0 (cache off).
    pub fn new(capacity: usize) -> Option<SignatureCache> {
        if capacity == 0 {
            return None;
        }
        let shards = SHARDS.min(capacity);
        // Tokens do not spread evenly over shards: with exactly capacity/shards each, the
        // fuller shards would evict (and a client cycling through `capacity` tokens would
        // miss there every time). A quarter of slack absorbs the spread.
        let per_shard = (capacity + capacity / 4).div_ceil(shards);
        Some(SignatureCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            capacity,
        })
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The digest a token is cached under.
    pub fn digest(token: &str) -> Digest {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    fn shard(&self, digest: &Digest) -> &Mutex<Shard> {
        &self.shards[usize::from(digest[0]) % self.shards.len()]
    }

    /// Whether this token's signature was verified against key set `generation` and the
    /// token has not expired (`now` and `exp` in Unix seconds).
    pub fn contains(&self, digest: &Digest, generation: u64, now: f64) -> bool {
        let mut shard = self.shard(digest).lock();
        match shard.map.get(digest) {
            Some(e) if e.generation == generation && now < e.exp => true,
            Some(_) => {
                // Stale: another key set, or past exp. Its order slot goes when it is reached.
                shard.map.remove(digest);
                false
            }
            None => false,
        }
    }

    /// Records a verified signature, evicting the oldest entry of the shard when full.
    pub fn insert(&self, digest: Digest, generation: u64, exp: f64) {
        let mut shard = self.shard(&digest).lock();
        let entry = Entry { generation, exp };
        if shard.map.insert(digest, entry).is_some() {
            return;
        }
        shard.order.push_back(digest);
        while shard.map.len() > self.per_shard || shard.order.len() > 2 * self.per_shard {
            let Some(oldest) = shard.order.pop_front() else {
                break;
            };
            if oldest != digest {
                shard.map.remove(&oldest);
            } else {
                shard.order.push_back(oldest);
                break;
            }
        }
    }

    /// Entries held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The digest is already uniformly random: its first eight bytes are a perfect hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_for_the_same_generation_before_exp() {
        let cache = SignatureCache::new(100).unwrap();
        let d = SignatureCache::digest("a.b.c");
        assert!(!cache.contains(&d, 1, 10.0));
        cache.insert(d, 1, 20.0);
        assert!(cache.contains(&d, 1, 10.0));
        assert!(!cache.contains(&d, 2, 10.0), "another key set");
        cache.insert(d, 1, 20.0);
        assert!(!cache.contains(&d, 1, 20.0), "at exp");
    }

    #[test]
    fn stays_bounded() {
        let cache = SignatureCache::new(64).unwrap();
        for i in 0..10_000 {
            cache.insert(SignatureCache::digest(&format!("t{i}")), 1, f64::MAX);
        }
        assert!(cache.len() <= 64 + 64 / 4 + SHARDS, "{}", cache.len());
        // The newest entries are kept.
        assert!(cache.contains(&SignatureCache::digest("t9999"), 1, 0.0));
    }

    #[test]
    fn holds_capacity_distinct_tokens_cycled() {
        let cache = SignatureCache::new(10_000).unwrap();
        let digests: Vec<Digest> = (0..10_000)
            .map(|i| SignatureCache::digest(&format!("token-{i}")))
            .collect();
        for d in &digests {
            cache.insert(*d, 1, f64::MAX);
        }
        let hits = digests.iter().filter(|d| cache.contains(d, 1, 0.0)).count();
        assert_eq!(
            hits, 10_000,
            "a second pass over as many tokens as the capacity hits every time"
        );
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(SignatureCache::new(0).is_none());
    }
}

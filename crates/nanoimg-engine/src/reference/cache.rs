//! The bank cache: complete banks (every step of one schedule) by reference, size, schedule and
//! gates, least recently used first out, bounded in bytes.

use super::bank::StepBank;
use super::Combine;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What identifies a bank. Strength and style fidelity are applied when reading, so they are not
/// part of it: one bank serves every strength.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BankKey {
    /// The caller's name for the reference set (a character id), for [`BankCache::forget`].
    pub key: String,
    /// Hash of the images, the write-pass prompt and the seed.
    pub fingerprint: u64,
    pub size: (u32, u32),
    /// `(timestep, σ)` of every step, as bits.
    pub schedule: Vec<(u64, u64)>,
    pub attention_gate: u64,
    pub adain_gate: u64,
    pub combine: Combine,
}

/// Every step's bank for one schedule.
#[derive(Debug)]
pub struct Bank {
    pub steps: Vec<Arc<StepBank>>,
    pub bytes: usize,
}

/// Counters for tests, metrics and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub budget: usize,
    pub hits: u64,
    pub misses: u64,
    /// Banks not kept because they alone exceed the budget.
    pub too_large: u64,
}

struct Entry {
    bank: Arc<Bank>,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<BankKey, Entry>,
    clock: u64,
    stats: CacheStats,
}

/// A byte-bounded LRU of banks. Banks depend on the weights they were computed with, so the
/// caller keeps one cache per loaded set of weights and hands it to requests in their
/// [`Reference`](super::Reference); the shared model itself holds no per-request state.
pub struct BankCache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for BankCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankCache").field("stats", &self.stats()).finish()
    }
}

impl BankCache {
    /// An empty cache holding at most `budget` bytes of banks (0 disables caching).
    pub fn new(budget: usize) -> Self {
        let inner = Inner {
            stats: CacheStats {
                budget,
                ..Default::default()
            },
            ..Default::default()
        };
        Self {
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bank for `key`, counting a hit or a miss.
    pub fn get(&self, key: &BankKey) -> Option<Arc<Bank>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        match inner.entries.get_mut(key) {
            Some(e) => {
                e.last_used = now;
                let bank = e.bank.clone();
                inner.stats.hits += 1;
                Some(bank)
            }
            None => {
                inner.stats.misses += 1;
                None
            }
        }
    }

    /// Keeps `bank`, evicting the least recently used banks to stay within the budget.
    pub fn insert(&self, key: BankKey, bank: Arc<Bank>) {
        let mut inner = self.lock();
        if bank.bytes > inner.stats.budget {
            inner.stats.too_large += 1;
            return;
        }
        inner.clock += 1;
        let now = inner.clock;
        if let Some(old) = inner.entries.insert(
            key,
            Entry {
                bank: bank.clone(),
                last_used: now,
            },
        ) {
            inner.stats.bytes -= old.bank.bytes;
        }
        inner.stats.bytes += bank.bytes;
        while inner.stats.bytes > inner.stats.budget {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.stats.bytes -= e.bank.bytes;
            }
        }
        inner.stats.entries = inner.entries.len();
    }

    /// Drops every bank of the reference set `key` (a deleted character), also where it was
    /// combined with others (keys joined by `+`); returns how many.
    pub fn forget(&self, key: &str) -> usize {
        let mut inner = self.lock();
        let doomed: Vec<BankKey> = inner
            .entries
            .keys()
            .filter(|k| k.key.split('+').any(|part| part == key))
            .cloned()
            .collect();
        for k in &doomed {
            if let Some(e) = inner.entries.remove(k) {
                inner.stats.bytes -= e.bank.bytes;
            }
        }
        inner.stats.entries = inner.entries.len();
        doomed.len()
    }

    /// Current size and counters.
    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }
}

//! Plumbing every backend shares: one timed call (duration, outcome and
//! metrics), bounded retries with jitter inside a deadline ([`Retry`]), one
//! HTTP status → [`ErrorKind`] table, and one bounded, single-flight cache
//! with a time to live per entry.
//!
//! The cache is our own rather than moka or quick_cache: every user keys
//! entries by a digest of the token the backend accepted, forgets an entry
//! only if it still holds the value that was refused, lets the value set
//! its own lifetime (a lease, a credential expiry) and counts hits in
//! coffer's metrics; moka would bring a housekeeping thread and about
//! twenty crates for that, quick_cache has no lifetimes. What is here is a
//! map of async slots and one eviction rule.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ErrorKind;
use crate::metrics::Metrics;

/// How one backend call ended, as `coffer_backend_requests_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The service answered no (a 4xx that a retry will not change).
    Refused,
    /// No usable answer: transport failure, 5xx, throttling, timeout.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }

    /// The outcome of an HTTP status: 2xx ok, a 4xx other than 408/429
    /// refused, anything else an error.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Outcome::Ok,
            408 | 429 => Outcome::Error,
            400..=499 => Outcome::Refused,
            _ => Outcome::Error,
        }
    }
}

/// Runs one backend call and records its duration and outcome under
/// (`backend`, `operation`). `failed` says how an error counts.
pub async fn timed<T, E>(
    metrics: &Metrics,
    backend: &'static str,
    operation: &'static str,
    call: impl Future<Output = Result<T, E>>,
    failed: impl FnOnce(&E) -> Outcome,
) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(e) => failed(e),
    };
    metrics.backend_request(backend, operation, outcome.as_str(), started.elapsed());
    result
}

/// Bounded retries of one call that failed in a way worth repeating
/// (throttling, 5xx, a transport failure): at most `attempts` calls, with
/// "full jitter" between them (a random wait up to `base · 2ⁿ`, at most
/// `cap`), and none that would end closer than `margin` to `deadline`, so
/// the mount still answers with the backend's error before its deadline.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    pub margin: Duration,
}

impl Retry {
    /// The wait before attempt `n + 1` (after `n` failures), from 64 random bits.
    pub fn backoff(&self, n: u32, random: u64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << n.min(16))
            .min(self.cap)
            .as_nanos() as u64;
        if ceiling == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random % (ceiling + 1))
    }

    /// Runs `call` until it succeeds, fails in a way `again` says is final,
    /// runs out of attempts or of time. Returns the last result and the
    /// number of calls made.
    pub async fn run<T, E, F, Fut>(
        &self,
        deadline: Instant,
        mut call: F,
        again: impl Fn(&E) -> bool,
    ) -> (Result<T, E>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut made = 0;
        loop {
            let result = call().await;
            made += 1;
            if !matches!(&result, Err(e) if again(e) && made < self.attempts) {
                return (result, made);
            }
            let wait = self.backoff(made - 1, getrandom::u64().unwrap_or(0));
            if Instant::now() + wait + self.margin >= deadline {
                return (result, made);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// What an HTTP status from a backend means to the driver. Callers that
/// know better for one status (the Pod Identity agent's 404) say so first.
pub fn status_kind(status: u16) -> ErrorKind {
    match status {
        400 => ErrorKind::InvalidArgument,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        408 | 429 | 500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// Whether a status is worth asking again (or asking a failover region).
pub fn status_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

type Slot<V> = Arc<tokio::sync::Mutex<Option<(V, Instant)>>>;

/// The distinct items of `items` in first-use order, and for each item the
/// position of its equal in that list: what a mount's objects that name the
/// same secret share (one request for all of them).
pub fn distinct<T: PartialEq>(items: impl IntoIterator<Item = T>) -> (Vec<T>, Vec<usize>) {
    let mut unique: Vec<T> = Vec::new();
    let mut index_of = Vec::new();
    for item in items {
        let k = match unique.iter().position(|u| *u == item) {
            Some(k) => k,
            None => {
                unique.push(item);
                unique.len() - 1
            }
        };
        index_of.push(k);
    }
    (unique, index_of)
}

/// Values kept until their own deadline, at most `capacity` keys; the
/// first caller of a missing key fills it while concurrent callers of the
/// same key wait for that one result. A capacity of 0 keeps nothing.
pub struct Cache<K, V> {
    slots: Mutex<HashMap<K, Slot<V>>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The slot of `key`, made room for under the bound: expired and
    /// empty slots nobody waits on go first, then idle ones.
    fn slot(&self, key: &K) -> Slot<V> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= self.capacity {
            drop_expired(&mut slots, Instant::now());
            if slots.len() >= self.capacity {
                let excess = slots.len() + 1 - self.capacity;
                let idle: Vec<K> = slots
                    .iter()
                    .filter(|(_, slot)| Arc::strong_count(slot) == 1)
                    .map(|(k, _)| k.clone())
                    .take(excess)
                    .collect();
                for k in idle {
                    slots.remove(&k);
                }
            }
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// The value of `key` if it is kept and not past its deadline, else
    /// the one `fill` returns with its time to live (kept unless zero).
    /// One `fill` runs per key at a time. The flag says whether the value
    /// was kept (`true`) or filled now.
    pub async fn get_or_fill<E, F, Fut>(&self, key: &K, fill: F) -> Result<(V, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Duration), E>>,
    {
        if self.capacity == 0 {
            return fill().await.map(|(v, _)| (v, false));
        }
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        if let Some((value, until)) = guard.as_ref()
            && *until > Instant::now()
        {
            return Ok((value.clone(), true));
        }
        let (value, ttl) = fill().await?;
        *guard = (!ttl.is_zero()).then(|| (value.clone(), Instant::now() + ttl));
        Ok((value, false))
    }

    /// The kept value of `key`, without waiting and without filling: a key
    /// being filled right now reads as absent.
    pub fn get(&self, key: &K) -> Option<V> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        let guard = slot.try_lock().ok()?;
        guard
            .as_ref()
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    /// Keeps `value` under `key` for `ttl`.
    pub async fn insert(&self, key: &K, value: V, ttl: Duration) {
        if self.capacity == 0 || ttl.is_zero() {
            return;
        }
        let slot = self.slot(key);
        *slot.lock().await = Some((value, Instant::now() + ttl));
    }

    /// Drops the value of `key` if `stale` says it is the one that failed
    /// (a concurrent caller may already have put a fresh one there).
    pub async fn forget_if(&self, key: &K, stale: impl FnOnce(&V) -> bool) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(slot) = slot {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_some_and(|(v, _)| stale(v)) {
                *guard = None;
            }
        }
    }

    /// Drops the values past their deadline (and empty slots) that nobody
    /// is filling or waiting on; returns how many keys went. Run
    /// periodically, so a secret or token outlives its use by at most one
    /// period rather than until the bound needs its room.
    pub fn sweep(&self) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let before = slots.len();
        drop_expired(&mut slots, Instant::now());
        before - slots.len()
    }

    /// Keys held (filled or being filled).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps the slots someone holds and the values still alive at `now`.
fn drop_expired<K, V>(slots: &mut HashMap<K, Slot<V>>, now: Instant) {
    slots.retain(|_, slot| {
        Arc::strong_count(slot) > 1
            || slot
                .try_lock()
                .is_ok_and(|v| v.as_ref().is_some_and(|(_, until)| *until > now))
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_fill_and_later_ones_hit() {
        let cache: Arc<Cache<&str, u32>> = Arc::new(Cache::new(8));
        let fills = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (cache, fills) = (cache.clone(), fills.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fill(&"k", || async {
                        fills.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, ()>((7, Duration::from_secs(60)))
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut hits = 0;
        for t in tasks {
            let (v, hit) = t.await.unwrap();
            assert_eq!(v, 7);
            hits += usize::from(hit);
        }
        assert_eq!(fills.load(Ordering::SeqCst), 1);
        assert_eq!(hits, 9);
    }

    #[tokio::test]
    async fn errors_and_zero_lifetimes_are_not_kept() {
        let cache: Cache<&str, u32> = Cache::new(8);
        assert!(
            cache
                .get_or_fill(&"k", || async { Err::<(u32, Duration), _>("no") })
                .await
                .is_err()
        );
        let (_, hit) = cache
            .get_or_fill(&"k", || async { Ok::<_, ()>((1, Duration::ZERO)) })
            .await
            .unwrap();
        assert!(!hit);
        assert_eq!(cache.get(&"k"), None);
    }

    #[tokio::test]
    async fn expired_values_are_filled_again_and_forget_if_checks_the_value() {
        let cache: Cache<&str, u32> = Cache::new(8);
        cache.insert(&"k", 1, Duration::from_millis(1)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(cache.get(&"k"), None);
        cache.insert(&"k", 2, Duration::from_secs(60)).await;
        cache.forget_if(&"k", |v| *v == 1).await;
        assert_eq!(cache.get(&"k"), Some(2));
        cache.forget_if(&"k", |v| *v == 2).await;
        assert_eq!(cache.get(&"k"), None);
    }

    #[test]
    fn distinct_keeps_first_use_order_and_points_each_item_at_its_equal() {
        assert_eq!(
            distinct(["b", "a", "b", "c", "a"]),
            (vec!["b", "a", "c"], vec![0, 1, 0, 2, 1])
        );
        assert_eq!(distinct(Vec::<u8>::new()), (vec![], vec![]));
    }

    #[tokio::test]
    async fn a_sweep_drops_expired_values_and_keeps_live_and_busy_ones() {
        let value = Arc::new(());
        let cache: Cache<&str, Arc<()>> = Cache::new(8);
        cache
            .insert(&"old", value.clone(), Duration::from_millis(1))
            .await;
        cache
            .insert(&"live", value.clone(), Duration::from_secs(60))
            .await;
        // A key being filled right now (its slot is held) stays.
        let busy = cache.slot(&"busy");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(Arc::strong_count(&value), 3);
        assert_eq!(cache.sweep(), 1);
        assert_eq!(Arc::strong_count(&value), 2, "the expired value is dropped");
        assert!(cache.get(&"live").is_some());
        assert_eq!(cache.len(), 2);
        drop(busy);
        assert_eq!(cache.sweep(), 1, "an empty slot nobody holds goes");
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn the_bound_holds_with_live_entries() {
        let cache: Cache<u32, u32> = Cache::new(4);
        for k in 0..50 {
            cache.insert(&k, k, Duration::from_secs(60)).await;
            assert!(cache.len() <= 4, "{} keys", cache.len());
        }
        let off: Cache<u32, u32> = Cache::new(0);
        off.insert(&1, 1, Duration::from_secs(60)).await;
        assert!(off.is_empty());
    }

    #[tokio::test]
    async fn retries_stop_at_the_attempt_bound_and_before_the_deadline() {
        let policy = Retry {
            attempts: 4,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            margin: Duration::ZERO,
        };
        let far = Instant::now() + Duration::from_secs(60);
        let calls = AtomicUsize::new(0);
        let (r, made) = policy
            .run(
                far,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>("throttled")
                },
                |_| true,
            )
            .await;
        assert_eq!(
            (r, made, calls.load(Ordering::SeqCst)),
            (Err("throttled"), 4, 4)
        );

        // A final error is not repeated; success ends the loop.
        let (r, made) = policy
            .run(far, || async { Err::<(), _>("denied") }, |e| *e != "denied")
            .await;
        assert_eq!((r, made), (Err("denied"), 1));
        let n = AtomicUsize::new(0);
        let (r, made) = policy
            .run(
                far,
                || async {
                    if n.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err("throttled")
                    } else {
                        Ok(7)
                    }
                },
                |_| true,
            )
            .await;
        assert_eq!((r, made), (Ok(7), 3));

        // No wait that would cross the deadline (minus the margin).
        let tight = Retry {
            margin: Duration::from_secs(30),
            ..policy
        };
        let (_, made) = tight
            .run(
                Instant::now() + Duration::from_secs(10),
                || async { Err::<(), _>("throttled") },
                |_| true,
            )
            .await;
        assert_eq!(made, 1);
    }

    #[test]
    fn backoff_is_jittered_under_a_doubling_ceiling_and_the_cap() {
        let policy = Retry {
            attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            margin: Duration::ZERO,
        };
        for random in [0, 1, 12_345_678_901, u64::MAX] {
            assert!(policy.backoff(0, random) <= Duration::from_millis(100));
            assert!(policy.backoff(2, random) <= Duration::from_millis(400));
            assert!(policy.backoff(9, random) <= Duration::from_millis(1000));
        }
        assert_eq!(policy.backoff(3, 0), Duration::ZERO);
        assert_eq!(policy.backoff(3, 800_000_000), Duration::from_millis(800));
    }

    #[test]
    fn statuses_map_to_kinds_and_outcomes() {
        assert_eq!(status_kind(403), ErrorKind::PermissionDenied);
        assert_eq!(status_kind(404), ErrorKind::NotFound);
        assert_eq!(status_kind(429), ErrorKind::Unavailable);
        assert_eq!(status_kind(503), ErrorKind::Unavailable);
        assert_eq!(status_kind(302), ErrorKind::Internal);
        assert!(status_retryable(502) && !status_retryable(404));
        assert_eq!(Outcome::of_status(404), Outcome::Refused);
        assert_eq!(Outcome::of_status(429), Outcome::Error);
        assert_eq!(Outcome::of_status(204), Outcome::Ok);
    }
}

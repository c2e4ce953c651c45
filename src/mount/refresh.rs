//! `refreshInterval` (a class parameter, any backend; coffer's extension):
//! within it, a republish of the same pod with the same token gets the files
//! of the last successful mount without any backend call.
//!
//! The trade: a changed secret, or access revoked in the backend, reaches
//! the pod only after the interval. The default, 0, asks the backend on
//! every republish. Kept per (socket, parameters, pod, token, secrets,
//! permission), so a new token (kubelet rotates it), another pod or another
//! class never gets these files; bounded in entries and bytes; file
//! contents zeroed when dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::grpc;
use crate::request::MountRequest;
use crate::secret::Token;

/// The class parameter.
pub const PARAMETER: &str = "refreshInterval";
/// The longest interval a class may ask for.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Responses kept at most…
pub const MAX_ENTRIES: usize = 4096;
/// …and their file bytes at most.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "parameter {PARAMETER}: {0:?} is not a duration like 0, 90s, 2m or 1h30m (Go's form; a bare number is seconds)"
    )]
    Invalid(String),
    #[error("parameter {PARAMETER}: {0:?} is above the limit of 24h")]
    TooLong(String),
}

/// The class's interval: absent or empty is 0 (ask on every republish);
/// otherwise a duration as every coffer flag reads it ([`crate::goflags::duration`]:
/// Go's `1h30m`, `90s`, `1.5m`, or bare seconds), at most [`MAX_INTERVAL`].
pub fn parse(raw: Option<&str>) -> Result<Duration, Error> {
    let raw = raw.map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Ok(Duration::ZERO);
    }
    let quoted = || crate::errors::prefix(raw, 64).to_owned();
    let interval = crate::goflags::duration(raw).map_err(|_| Error::Invalid(quoted()))?;
    if interval > MAX_INTERVAL {
        return Err(Error::TooLong(quoted()));
    }
    Ok(interval)
}

/// What a response is kept under: a SHA-256 of everything that shapes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

/// The key of `req` on `socket` with the pod's `token` for the plan's audience.
pub fn key(socket: &str, req: &MountRequest, token: &Token) -> Key {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(socket.as_bytes());
    for (k, v) in req.params.iter() {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(b"pod");
    field(req.pod.uid.as_bytes());
    field(req.pod.namespace.as_bytes());
    field(req.pod.name.as_bytes());
    field(req.pod.service_account.as_deref().unwrap_or("").as_bytes());
    field(&token.digest());
    field(&req.secrets.digest());
    field(&req.default_mode.to_be_bytes());
    Key(h.finalize().into())
}

/// A kept response; its file contents are zeroed on drop.
struct Entry {
    response: grpc::MountResponse,
    objects: usize,
    bytes: usize,
    until: Instant,
}

impl Drop for Entry {
    fn drop(&mut self) {
        for f in &mut self.response.files {
            f.contents.zeroize();
        }
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    bytes: usize,
}

impl State {
    /// Drops the entries whose interval has passed at `now`; returns how many.
    fn drop_expired(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep = e.until > now;
            if !keep {
                freed += e.bytes;
            }
            keep
        });
        self.bytes -= freed;
        before - self.entries.len()
    }
}

/// The last responses, per [`Key`].
pub struct Responses {
    state: Mutex<State>,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for Responses {
    fn default() -> Self {
        Self::new(MAX_ENTRIES, MAX_BYTES)
    }
}

impl Responses {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            max_entries,
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The response kept under `key` if its interval has not passed, with
    /// its (objects, bytes) for the log line.
    pub fn get(&self, key: &Key) -> Option<(grpc::MountResponse, usize, usize)> {
        let mut state = self.lock();
        let entry = state.entries.get(key)?;
        if entry.until <= Instant::now() {
            let gone = state.entries.remove(key).map_or(0, |e| e.bytes);
            state.bytes -= gone;
            return None;
        }
        Some((entry.response.clone(), entry.objects, entry.bytes))
    }

    /// Drops the responses whose interval has passed; returns how many.
    pub fn sweep(&self) -> usize {
        self.lock().drop_expired(Instant::now())
    }

    /// Keeps `response` under `key` for `interval` (a zero interval keeps
    /// nothing). Expired entries make room first, then those closest to
    /// their end; a response above the byte bound is not kept.
    pub fn put(
        &self,
        key: Key,
        response: &grpc::MountResponse,
        objects: usize,
        interval: Duration,
    ) {
        let bytes: usize = response.files.iter().map(|f| f.contents.len()).sum();
        if interval.is_zero() || self.max_entries == 0 || bytes > self.max_bytes {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(old) = state.entries.remove(&key) {
            state.bytes -= old.bytes;
        }
        if state.entries.len() >= self.max_entries || state.bytes + bytes > self.max_bytes {
            state.drop_expired(now);
        }
        while state.entries.len() >= self.max_entries || state.bytes + bytes > self.max_bytes {
            let Some(first) = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.until)
                .map(|(k, _)| *k)
            else {
                break;
            };
            let gone = state.entries.remove(&first).map_or(0, |e| e.bytes);
            state.bytes -= gone;
        }
        state.bytes += bytes;
        state.entries.insert(
            key,
            Entry {
                response: response.clone(),
                objects,
                bytes,
                until: now + interval,
            },
        );
    }

    /// (entries, bytes) kept.
    pub fn size(&self) -> (usize, usize) {
        let state = self.lock();
        (state.entries.len(), state.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(bytes: usize) -> grpc::MountResponse {
        grpc::MountResponse {
            files: vec![grpc::File {
                path: "f".into(),
                mode: 0o644,
                contents: vec![7; bytes],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_sweep_drops_the_responses_past_their_interval() {
        let kept = Responses::new(8, 1 << 20);
        kept.put(Key([1; 32]), &response(10), 1, Duration::from_millis(1));
        kept.put(Key([2; 32]), &response(20), 1, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kept.sweep(), 1);
        assert_eq!(kept.size(), (1, 20));
        assert!(kept.get(&Key([2; 32])).is_some());
        assert_eq!(kept.sweep(), 0);
    }

    #[test]
    fn intervals_parse_like_go_durations_and_are_bounded() {
        let ok = [
            ("", 0),
            ("0", 0),
            ("90s", 90_000),
            ("2m", 120_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            (" 24h ", 86_400_000),
            ("90", 90_000),
            ("1.5m", 90_000),
        ];
        for (raw, ms) in ok {
            assert_eq!(
                parse(Some(raw)).unwrap(),
                Duration::from_millis(ms),
                "{raw}"
            );
        }
        assert_eq!(parse(None).unwrap(), Duration::ZERO);
        for bad in ["m", "1d", "-1s", "s1", "1h 2m", "1x"] {
            assert!(matches!(parse(Some(bad)), Err(Error::Invalid(_))), "{bad}");
        }
        assert!(matches!(parse(Some("25h")), Err(Error::TooLong(_))));
        assert!(matches!(parse(Some("24h1s")), Err(Error::TooLong(_))));
        assert!(matches!(
            parse(Some("99999999999s")),
            Err(Error::TooLong(_)) | Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn a_response_is_kept_for_its_interval_and_the_bounds_hold() {
        let r = Responses::new(3, 100);
        let k = |i: u8| Key([i; 32]);
        r.put(k(1), &response(10), 1, Duration::from_secs(60));
        let (got, objects, bytes) = r.get(&k(1)).unwrap();
        assert_eq!((got.files[0].contents.len(), objects, bytes), (10, 1, 10));
        assert!(r.get(&k(2)).is_none());
        // Zero interval: nothing kept.
        r.put(k(2), &response(10), 1, Duration::ZERO);
        assert!(r.get(&k(2)).is_none());
        // Past its interval: gone.
        r.put(k(3), &response(10), 1, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(r.get(&k(3)).is_none());
        for i in 10..20 {
            r.put(
                k(i),
                &response(30),
                1,
                Duration::from_secs(60 + u64::from(i)),
            );
            let (n, b) = r.size();
            assert!(n <= 3 && b <= 100, "{n} entries, {b} bytes");
        }
        // The latest is there; the one closest to its end went first.
        assert!(r.get(&k(19)).is_some());
        assert!(r.get(&k(10)).is_none());
        // Above the byte bound: not kept.
        r.put(k(30), &response(101), 1, Duration::from_secs(60));
        assert!(r.get(&k(30)).is_none());
    }
}

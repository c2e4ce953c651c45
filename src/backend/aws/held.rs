//! Secrets Manager values a pod's own credentials read, held so that a
//! republish can reuse them after `DescribeSecret` says the version it
//! mounts is still the one read.
//!
//! Held per (pod UID, principal, region) and per credentials: a pod never
//! sees a value another pod's credentials read, and when the pod's
//! credentials change (a new token, renewed STS credentials) everything it
//! held is dropped before anything is looked up. Bounded in values and in
//! bytes (the least recently used holders go first), dropped after
//! [`IDLE`] without a mount, and zeroed on drop ([`SecretBytes`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::secret::SecretBytes;

/// A holder not used for this long is dropped: its pod is probably gone.
pub const IDLE: Duration = Duration::from_secs(3600);

/// Whose values: the pod, the role (or Pod Identity agent) and the region
/// they were read in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub pod_uid: String,
    pub principal: String,
    pub region: String,
}

/// One request as the class asks it: secret ID, version ID, version label.
pub type Request = (String, Option<String>, Option<String>);

/// A value and the version it is.
#[derive(Clone)]
pub struct Held {
    pub version_id: String,
    pub value: SecretBytes,
}

struct Values {
    /// SHA-256 of the credentials that read them.
    credentials: [u8; 32],
    values: HashMap<Request, Held>,
    bytes: usize,
    used: Instant,
}

#[derive(Default)]
struct State {
    holders: HashMap<Holder, Values>,
    values: usize,
    bytes: usize,
}

impl State {
    fn drop_holder(&mut self, holder: &Holder) {
        if let Some(v) = self.holders.remove(holder) {
            self.values -= v.values.len();
            self.bytes -= v.bytes;
        }
    }
}

/// The store; `max_values == 0` or `max_bytes == 0` holds nothing.
pub struct Store {
    state: Mutex<State>,
    max_values: usize,
    max_bytes: usize,
}

fn cost(request: &Request, held: &Held) -> usize {
    held.value.len()
        + held.version_id.len()
        + request.0.len()
        + request.1.as_ref().map_or(0, String::len)
        + request.2.as_ref().map_or(0, String::len)
}

impl Store {
    pub fn new(max_values: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            max_values,
            max_bytes,
        }
    }

    fn enabled(&self) -> bool {
        self.max_values > 0 && self.max_bytes > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `holder` holds for each request, if it was read with the same
    /// `credentials` (otherwise all it held is dropped first).
    pub fn lookup(
        &self,
        holder: &Holder,
        credentials: &[u8; 32],
        requests: &[Request],
    ) -> Vec<Option<Held>> {
        if !self.enabled() {
            return vec![None; requests.len()];
        }
        let mut state = self.lock();
        let now = Instant::now();
        let stale = state.holders.get(holder).is_some_and(|v| {
            v.credentials != *credentials || now.saturating_duration_since(v.used) > IDLE
        });
        if stale {
            state.drop_holder(holder);
        }
        match state.holders.get_mut(holder) {
            Some(v) => {
                v.used = now;
                requests.iter().map(|r| v.values.get(r).cloned()).collect()
            }
            None => vec![None; requests.len()],
        }
    }

    /// Holds `held` for `request`, replacing what was held for it, making
    /// room under the bounds by dropping idle, then least recently used
    /// holders. A value larger than the whole bound is not held.
    pub fn put(&self, holder: &Holder, credentials: &[u8; 32], request: Request, held: Held) {
        let size = cost(&request, &held);
        if !self.enabled() || size > self.max_bytes {
            self.forget(holder, &request);
            return;
        }
        let mut state = self.lock();
        let now = Instant::now();
        if state
            .holders
            .get(holder)
            .is_some_and(|v| v.credentials != *credentials)
        {
            state.drop_holder(holder);
        }
        // The old value of this request makes room first.
        if let Some(v) = state.holders.get_mut(holder)
            && let Some(old) = v.values.remove(&request)
        {
            let c = cost(&request, &old);
            v.bytes -= c;
            state.values -= 1;
            state.bytes -= c;
        }
        if state.values + 1 > self.max_values || state.bytes + size > self.max_bytes {
            let idle: Vec<Holder> = state
                .holders
                .iter()
                .filter(|(h, v)| *h != holder && now.saturating_duration_since(v.used) > IDLE)
                .map(|(h, _)| h.clone())
                .collect();
            for h in idle {
                state.drop_holder(&h);
            }
        }
        while state.values + 1 > self.max_values || state.bytes + size > self.max_bytes {
            let oldest = state
                .holders
                .iter()
                .filter(|(h, _)| *h != holder)
                .min_by_key(|(_, v)| v.used)
                .map(|(h, _)| h.clone());
            match oldest {
                Some(h) => state.drop_holder(&h),
                // Only this holder is left: drop its own values.
                None => state.drop_holder(holder),
            }
        }
        let v = state
            .holders
            .entry(holder.clone())
            .or_insert_with(|| Values {
                credentials: *credentials,
                values: HashMap::new(),
                bytes: 0,
                used: now,
            });
        v.used = now;
        v.bytes += size;
        v.values.insert(request, held);
        state.values += 1;
        state.bytes += size;
    }

    /// Drops the value held for `request` (the secret is gone or refused).
    pub fn forget(&self, holder: &Holder, request: &Request) {
        let mut state = self.lock();
        let removed = state
            .holders
            .get_mut(holder)
            .and_then(|v| v.values.remove_entry(request).map(|e| (v, e)))
            .map(|(v, (r, old))| {
                let c = cost(&r, &old);
                v.bytes -= c;
                c
            });
        if let Some(c) = removed {
            state.values -= 1;
            state.bytes -= c;
        }
    }

    /// (values, bytes) held.
    pub fn size(&self) -> (usize, usize) {
        let state = self.lock();
        (state.values, state.bytes)
    }
}

/// The version `DescribeSecret`'s `VersionIdsToStages` says a request
/// mounts: the pinned version ID (if it exists and carries the pinned
/// label, when both are set), else the version carrying the label
/// (`AWSCURRENT` when none is pinned). `None`: no such version, which
/// `GetSecretValue` reports properly.
pub fn mounted_version<'a>(
    stages: impl IntoIterator<Item = (&'a str, &'a [String])>,
    version: Option<&str>,
    label: Option<&str>,
) -> Option<String> {
    let label = label.unwrap_or(if version.is_some() { "" } else { "AWSCURRENT" });
    stages
        .into_iter()
        .find(|(id, labels)| {
            version.is_none_or(|v| v == *id)
                && (label.is_empty() || labels.iter().any(|l| l == label))
        })
        .map(|(id, _)| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pod: &str) -> Holder {
        Holder {
            pod_uid: pod.into(),
            principal: "arn:aws:iam::1:role/r".into(),
            region: "us-west-2".into(),
        }
    }

    fn req(name: &str) -> Request {
        (name.into(), None, None)
    }

    fn held(version: &str, value: &[u8]) -> Held {
        Held {
            version_id: version.into(),
            value: SecretBytes::new(value.to_vec()),
        }
    }

    #[test]
    fn values_are_per_pod_and_dropped_when_the_credentials_change() {
        let store = Store::new(100, 1 << 20);
        let (a, b) = (holder("pod-a"), holder("pod-b"));
        store.put(&a, &[1; 32], req("db"), held("v1", b"secret"));
        let got = store.lookup(&a, &[1; 32], &[req("db"), req("other")]);
        assert_eq!(got[0].as_ref().unwrap().value.expose(), b"secret");
        assert!(got[1].is_none());
        // Another pod, even with the same credentials, sees nothing.
        assert!(store.lookup(&b, &[1; 32], &[req("db")])[0].is_none());
        // New credentials for the pod: everything it held is gone.
        assert!(store.lookup(&a, &[2; 32], &[req("db")])[0].is_none());
        assert_eq!(store.size(), (0, 0));
        assert!(store.lookup(&a, &[1; 32], &[req("db")])[0].is_none());
    }

    #[test]
    fn the_bounds_hold_and_the_least_recently_used_pod_goes_first() {
        let store = Store::new(3, 1 << 20);
        for (i, pod) in ["p0", "p1", "p2"].iter().enumerate() {
            store.put(&holder(pod), &[0; 32], req("s"), held("v", &[i as u8; 8]));
            std::thread::sleep(Duration::from_millis(2));
        }
        // p0 is used again, so p1 is now the oldest.
        assert!(store.lookup(&holder("p0"), &[0; 32], &[req("s")])[0].is_some());
        store.put(&holder("p3"), &[0; 32], req("s"), held("v", b"12345678"));
        assert_eq!(store.size().0, 3);
        assert!(store.lookup(&holder("p1"), &[0; 32], &[req("s")])[0].is_none());
        assert!(store.lookup(&holder("p0"), &[0; 32], &[req("s")])[0].is_some());

        let small = Store::new(100, 64);
        for i in 0..20 {
            small.put(
                &holder(&format!("p{i}")),
                &[0; 32],
                req("s"),
                held("v", &[0; 20]),
            );
            assert!(small.size().1 <= 64, "{:?}", small.size());
        }
        // Too big for the whole bound: not held at all.
        small.put(&holder("big"), &[0; 32], req("s"), held("v", &[0; 100]));
        assert!(small.lookup(&holder("big"), &[0; 32], &[req("s")])[0].is_none());
        // Replacing a value does not count it twice; forget gives back its bytes.
        let one = Store::new(1, 1 << 20);
        one.put(&holder("p"), &[0; 32], req("s"), held("v1", b"a"));
        one.put(&holder("p"), &[0; 32], req("s"), held("v2", b"b"));
        assert_eq!(one.size().0, 1);
        one.forget(&holder("p"), &req("s"));
        assert_eq!(one.size(), (0, 0));

        let off = Store::new(0, 1 << 20);
        off.put(&holder("p"), &[0; 32], req("s"), held("v", b"x"));
        assert_eq!(off.size(), (0, 0));
    }

    #[test]
    fn the_mounted_version_follows_pins_and_labels() {
        let cur = vec!["AWSCURRENT".to_owned()];
        let prev = vec!["AWSPREVIOUS".to_owned(), "blue".to_owned()];
        let stages = [("v2", cur.as_slice()), ("v1", prev.as_slice())];
        let m = |v, l| mounted_version(stages.iter().copied(), v, l);
        assert_eq!(m(None, None).as_deref(), Some("v2"));
        assert_eq!(m(None, Some("AWSPREVIOUS")).as_deref(), Some("v1"));
        assert_eq!(m(None, Some("blue")).as_deref(), Some("v1"));
        assert_eq!(m(Some("v1"), None).as_deref(), Some("v1"));
        assert_eq!(m(Some("v1"), Some("blue")).as_deref(), Some("v1"));
        assert_eq!(m(Some("v2"), Some("blue")), None);
        assert_eq!(m(Some("v9"), None), None);
        assert_eq!(m(None, Some("green")), None);
    }
}

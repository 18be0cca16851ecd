//! The edge's [`ConfigSink`]: parses changed TLS Secrets (here, in the watcher, never in a
//! handshake), keeps each Secret's last good certificate when a new version is broken or the
//! Secret goes missing, publishes the certificate set, then the routes.
//!
//! With a translation's delta only the Secrets and hosts it names are looked at: the
//! certificate set is persistent, so a change costs the hosts it touches, not every host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_sync::{
    ConfigSink, ObjectKey, Problem, ProblemReason, TlsHostBinding, TlsSecret, Translation,
};
use proxy::RoutePublisher;

use crate::cert_store::{CertSet, CertStore, ParsedCert};

type Bindings = imbl::OrdMap<String, Arc<Vec<TlsHostBinding>>>;

#[derive(Default)]
struct SecretState {
    /// Last good certificate per Secret, with the material it came from.
    good: BTreeMap<ObjectKey, (Arc<TlsSecret>, Arc<ParsedCert>)>,
    /// Material already rejected (so it is reported once, not at every rebuild).
    rejected: BTreeMap<ObjectKey, (Arc<TlsSecret>, String)>,
    /// Good certificates by end and by start of validity, to find those out of it without
    /// looking at every one.
    by_not_after: BTreeSet<(i64, ObjectKey)>,
    by_not_before: BTreeSet<(i64, ObjectKey)>,
    /// Last certificate served per host: kept while the host's Secret is broken, missing or
    /// wrongly referenced, dropped when no edge Ingress lists the host any more.
    by_host: HashMap<String, (ObjectKey, Arc<ParsedCert>)>,
    /// Hosts bound to each Secret, by the bindings last seen.
    hosts_of: HashMap<ObjectKey, Vec<String>>,
    /// The bindings last seen (`None`: nothing applied yet).
    bindings: Option<Bindings>,
    /// Hosts whose bindings changed, and Secrets whose certificate changed, since the last
    /// published set; `all`: recompute every host.
    dirty_hosts: BTreeSet<String>,
    dirty_secrets: BTreeSet<ObjectKey>,
    all: bool,
    /// The last published set.
    set: Option<CertSet>,
}

impl SecretState {
    fn forget_good(&mut self, key: &ObjectKey) {
        if let Some((_, parsed)) = self.good.remove(key) {
            self.by_not_after.remove(&(parsed.not_after, key.clone()));
            self.by_not_before.remove(&(parsed.not_before, key.clone()));
        }
    }

    fn set_good(&mut self, key: &ObjectKey, material: Arc<TlsSecret>, parsed: Arc<ParsedCert>) {
        self.forget_good(key);
        self.by_not_after.insert((parsed.not_after, key.clone()));
        self.by_not_before.insert((parsed.not_before, key.clone()));
        self.good.insert(key.clone(), (material, parsed));
    }

    /// Follows the bindings of the changed hosts (all of them without `changed`).
    fn rebind(&mut self, now: &Bindings, changed: Option<&BTreeSet<String>>) {
        let before = self.bindings.take().unwrap_or_default();
        let hosts: Vec<String> = match changed {
            Some(c) => c.iter().cloned().collect(),
            None => {
                self.all = true;
                before.keys().chain(now.keys()).cloned().collect()
            }
        };
        for h in hosts {
            for b in before.get(&h).into_iter().flat_map(|l| l.iter()) {
                if let Some(hosts) = self.hosts_of.get_mut(&b.secret) {
                    if let Ok(i) = hosts.binary_search(&h) {
                        hosts.remove(i);
                    }
                    if hosts.is_empty() {
                        self.hosts_of.remove(&b.secret);
                    }
                }
            }
            for b in now.get(&h).into_iter().flat_map(|l| l.iter()) {
                let hosts = self.hosts_of.entry(b.secret.clone()).or_default();
                k8s_sync::sorted_vec::insert(hosts, h.clone());
            }
            self.dirty_hosts.insert(h);
        }
        self.bindings = Some(now.clone());
    }

    /// The Ingresses binding a Secret, for log lines.
    fn ingresses_of(&self, key: &ObjectKey) -> String {
        let mut out: BTreeSet<String> = BTreeSet::new();
        let bindings = self.bindings.as_ref();
        for h in self.hosts_of.get(key).into_iter().flatten() {
            let list = bindings.and_then(|b| b.get(h));
            for b in list.into_iter().flat_map(|l| l.iter()) {
                if &b.secret == key {
                    out.insert(b.ingress.to_string());
                }
            }
        }
        out.into_iter().collect::<Vec<_>>().join(",")
    }
}

pub struct EdgePublisher {
    routes: RoutePublisher,
    certs: Arc<CertStore>,
    fallback_cert: Arc<ParsedCert>,
    default_secret: Option<ObjectKey>,
    state: Mutex<SecretState>,
}

impl EdgePublisher {
    pub fn new(
        routes: RoutePublisher,
        certs: Arc<CertStore>,
        fallback_cert: Arc<ParsedCert>,
        default_secret: Option<ObjectKey>,
    ) -> Self {
        Self {
            routes,
            certs,
            fallback_cert,
            default_secret,
            state: Mutex::new(SecretState::default()),
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl ConfigSink for EdgePublisher {
    /// Parses Secrets whose material changed and adds certificate problems to the translation,
    /// so they are logged, counted and sent as Events like any other rejected object.
    fn prepare(&self, translation: &mut Translation) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_unix();
        let delta = translation
            .delta
            .as_ref()
            .filter(|_| state.bindings.is_some());
        state.rebind(&translation.routes.tls, delta.map(|d| &d.tls_hosts));
        let keys: BTreeSet<ObjectKey> = match delta {
            Some(d) => d.secrets.clone(),
            None => translation
                .tls_secrets
                .keys()
                .chain(state.good.keys())
                .chain(state.rejected.keys())
                .cloned()
                .collect(),
        };
        for key in keys {
            let Some(material) = translation.tls_secrets.get(&key) else {
                // Not readable now: the last good certificate stays while the Secret is bound.
                let bound =
                    state.hosts_of.contains_key(&key) || self.default_secret.as_ref() == Some(&key);
                if !bound {
                    if state.good.contains_key(&key) {
                        state.dirty_secrets.insert(key.clone());
                    }
                    state.forget_good(&key);
                    state.rejected.remove(&key);
                }
                continue;
            };
            let same = |m: &Arc<TlsSecret>| Arc::ptr_eq(m, material) || **m == **material;
            if state.good.get(&key).is_some_and(|(m, _)| same(m)) {
                continue;
            }
            if state.rejected.get(&key).is_some_and(|(m, _)| same(m)) {
                continue;
            }
            state.dirty_secrets.insert(key.clone());
            match ParsedCert::from_pem(&material.cert_pem, &material.key_pem) {
                Ok(mut parsed) => {
                    parsed.secret = Some(key.clone());
                    if parsed.is_out_of_validity(now) {
                        tracing::warn!(secret = %key, ingress = %state.ingresses_of(&key),
                            not_before = parsed.not_before, not_after = parsed.not_after,
                            "certificate is expired or not yet valid; serving it anyway");
                    } else {
                        tracing::info!(secret = %key, ingress = %state.ingresses_of(&key),
                            not_after = parsed.not_after, "certificate loaded");
                    }
                    state.rejected.remove(&key);
                    state.set_good(&key, material.clone(), Arc::new(parsed));
                }
                Err(e) => {
                    let kept = state.good.contains_key(&key);
                    tracing::warn!(secret = %key, ingress = %state.ingresses_of(&key), error = %e,
                        kept_last_good = kept, "certificate rejected");
                    state
                        .rejected
                        .insert(key.clone(), (material.clone(), e.to_string()));
                }
            }
        }
        // Problems of every certificate now: rejected material, and good certificates out of
        // their validity period (found by range, not by looking at each).
        let mut problems: BTreeMap<ObjectKey, (ProblemReason, String)> = BTreeMap::new();
        let out_of_validity = state
            .by_not_after
            .range(..(now, ObjectKey::new("", "")))
            .chain(
                state
                    .by_not_before
                    .range((now + 1, ObjectKey::new("", ""))..),
            )
            .map(|(_, k)| k.clone());
        for key in out_of_validity.collect::<Vec<_>>() {
            problems.insert(
                key,
                (
                    ProblemReason::CertificateExpired,
                    "certificate is expired or not yet valid; served anyway".to_owned(),
                ),
            );
        }
        for (key, (_, error)) in &state.rejected {
            let detail = if state.dirty_secrets.contains(key) {
                error.clone()
            } else {
                "certificate rejected (see the earlier log line)".to_owned()
            };
            problems.insert(key.clone(), (ProblemReason::CertificateInvalid, detail));
        }
        drop(state);
        for (key, (reason, detail)) in problems {
            translation.problems.push(Problem {
                kind: "Secret",
                namespace: key.namespace.to_string(),
                name: key.name.to_string(),
                reason,
                detail,
            });
        }
    }

    /// Publishes a new certificate set when bindings or certificates changed, then the routes.
    fn apply(&self, translation: Translation) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.all || !state.dirty_hosts.is_empty() || !state.dirty_secrets.is_empty() {
            self.publish_certs(&mut state, &translation.routes.tls);
        }
        drop(state);
        self.routes.apply(translation);
    }
}

impl EdgePublisher {
    fn publish_certs(&self, state: &mut SecretState, bindings: &Bindings) {
        let started = std::time::Instant::now();
        let default = self
            .default_secret
            .as_ref()
            .and_then(|k| state.good.get(k))
            .map_or_else(|| self.fallback_cert.clone(), |(_, p)| p.clone());
        let mut set = match state.set.take().filter(|_| !state.all) {
            Some(mut set) => {
                set.set_default(default);
                set
            }
            None => CertSet::new(default),
        };
        let mut hosts = std::mem::take(&mut state.dirty_hosts);
        for s in std::mem::take(&mut state.dirty_secrets) {
            hosts.extend(state.hosts_of.get(&s).into_iter().flatten().cloned());
        }
        if std::mem::take(&mut state.all) {
            hosts.extend(bindings.keys().cloned());
            hosts.extend(state.by_host.keys().cloned());
        }
        let changed = hosts.len();
        for host in hosts {
            // The first bound Secret with a good certificate serves the host; else the last
            // certificate it had, while it is still bound.
            let list = bindings.get(&host);
            let first_good = list.into_iter().flat_map(|l| l.iter()).find_map(|b| {
                state
                    .good
                    .get(&b.secret)
                    .map(|(_, p)| (b.secret.clone(), p.clone()))
            });
            let served = match (list, first_good) {
                (_, Some(served)) => {
                    state.by_host.insert(host.clone(), served.clone());
                    Some(served)
                }
                (Some(_), None) => state.by_host.get(&host).cloned(),
                (None, None) => {
                    state.by_host.remove(&host);
                    None
                }
            };
            set.set(&host, served.map(|(_, p)| p));
        }
        tracing::info!(
            hosts = set.host_count(),
            changed,
            secrets = state.good.len(),
            took_us = started.elapsed().as_micros() as u64,
            "certificate set published"
        );
        self.certs.publish(set.clone());
        state.set = Some(set);
    }
}

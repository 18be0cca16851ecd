//! The edge's [`ConfigSink`]: parses changed TLS Secrets (here, in the watcher, never in a
//! handshake), keeps each Secret's last good certificate when a new version is broken or the
//! Secret goes missing, publishes the certificate set, then the routes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_sync::{ConfigSink, ObjectKey, Problem, ProblemReason, TlsBinding, TlsSecret, Translation};
use proxy::RoutePublisher;
use proxy::metrics::Metrics;

use crate::cert_store::{CertSet, CertStore, ParsedCert};

#[derive(Default)]
struct SecretState {
    /// Last good certificate per Secret, with the material it came from.
    good: BTreeMap<ObjectKey, (Arc<TlsSecret>, Arc<ParsedCert>)>,
    /// Material already rejected (so it is reported once, not at every rebuild).
    rejected: BTreeMap<ObjectKey, Arc<TlsSecret>>,
    /// Last certificate served per host: kept while the host's Secret is broken, missing or
    /// wrongly referenced, dropped when no edge Ingress lists the host any more.
    by_host: BTreeMap<String, (ObjectKey, Arc<ParsedCert>)>,
    /// Certificates changed since the last published set.
    changed: bool,
    /// Bindings of the last published set.
    last_tls: Option<Arc<Vec<TlsBinding>>>,
    /// The expiry series set now: host → (Secret, notAfter), so a publish touches only the
    /// series that changed.
    expiry: HashMap<String, (ObjectKey, i64)>,
}

pub struct EdgePublisher {
    routes: RoutePublisher,
    metrics: Arc<Metrics>,
    certs: Arc<CertStore>,
    fallback_cert: Arc<ParsedCert>,
    default_secret: Option<ObjectKey>,
    state: Mutex<SecretState>,
}

impl EdgePublisher {
    pub fn new(
        routes: RoutePublisher,
        metrics: Arc<Metrics>,
        certs: Arc<CertStore>,
        fallback_cert: Arc<ParsedCert>,
        default_secret: Option<ObjectKey>,
    ) -> Self {
        Self {
            routes,
            metrics,
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
        // Which Ingresses name a Secret, for log lines; built only if something is parsed.
        let mut named_by: Option<HashMap<&ObjectKey, Vec<String>>> = None;
        let mut ingresses_of = |key: &ObjectKey| -> String {
            let map = named_by.get_or_insert_with(|| {
                let mut m: HashMap<&ObjectKey, Vec<String>> = HashMap::new();
                for b in translation.routes.tls.iter() {
                    m.entry(&b.secret).or_default().push(b.ingress.to_string());
                }
                m
            });
            map.get(key).map(|v| v.join(",")).unwrap_or_default()
        };
        let mut cert_problems = Vec::new();
        let expired = |key: &ObjectKey| {
            (
                key.clone(),
                ProblemReason::CertificateExpired,
                "certificate is expired or not yet valid; served anyway".to_owned(),
            )
        };
        for (key, material) in &translation.tls_secrets {
            let same = |m: &Arc<TlsSecret>| Arc::ptr_eq(m, material) || **m == **material;
            if let Some((_, parsed)) = state.good.get(key).filter(|(m, _)| same(m)) {
                // Unchanged and good; still a problem while out of validity.
                if parsed.is_out_of_validity(now) {
                    cert_problems.push(expired(key));
                }
                continue;
            }
            if state.rejected.get(key).is_some_and(same) {
                cert_problems.push((
                    key.clone(),
                    ProblemReason::CertificateInvalid,
                    "certificate rejected (see the earlier log line)".to_owned(),
                ));
                continue;
            }
            state.changed = true;
            match ParsedCert::from_pem(&material.cert_pem, &material.key_pem) {
                Ok(parsed) => {
                    if parsed.is_out_of_validity(now) {
                        cert_problems.push(expired(key));
                        tracing::warn!(secret = %key, ingress = %ingresses_of(key),
                            not_before = parsed.not_before, not_after = parsed.not_after,
                            "certificate is expired or not yet valid; serving it anyway");
                    } else {
                        tracing::info!(secret = %key, ingress = %ingresses_of(key),
                            not_after = parsed.not_after, "certificate loaded");
                    }
                    state.rejected.remove(key);
                    state
                        .good
                        .insert(key.clone(), (material.clone(), Arc::new(parsed)));
                }
                Err(e) => {
                    let kept = state.good.contains_key(key);
                    tracing::warn!(secret = %key, ingress = %ingresses_of(key), error = %e,
                        kept_last_good = kept, "certificate rejected");
                    cert_problems.push((
                        key.clone(),
                        ProblemReason::CertificateInvalid,
                        e.to_string(),
                    ));
                    state.rejected.insert(key.clone(), material.clone());
                }
            }
        }
        // Forget Secrets nothing refers to any more; keep the last good of referenced ones even
        // if the Secret itself went missing.
        let referenced: HashSet<&ObjectKey> = translation
            .routes
            .tls
            .iter()
            .map(|b| &b.secret)
            .chain(self.default_secret.as_ref())
            .collect();
        let before = state.good.len() + state.rejected.len();
        state.good.retain(|k, _| referenced.contains(k));
        state.rejected.retain(|k, _| referenced.contains(k));
        state.changed |= state.good.len() + state.rejected.len() != before;
        drop(state);
        for (key, reason, detail) in cert_problems {
            translation.problems.push(Problem {
                kind: "Secret",
                namespace: key.namespace,
                name: key.name,
                reason,
                detail,
            });
        }
    }

    /// Publishes a new certificate set when bindings or certificates changed, then the routes.
    fn apply(&self, translation: Translation) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let unchanged = !state.changed && state.last_tls.as_ref() == Some(&translation.routes.tls);
        if !unchanged {
            self.publish_certs(&mut state, &translation.routes.tls);
            state.last_tls = Some(translation.routes.tls.clone());
            state.changed = false;
        }
        drop(state);
        self.routes.apply(translation);
    }
}

impl EdgePublisher {
    fn publish_certs(&self, state: &mut SecretState, bindings: &[TlsBinding]) {
        let started = std::time::Instant::now();
        let default = self
            .default_secret
            .as_ref()
            .and_then(|k| state.good.get(k))
            .map_or_else(|| self.fallback_cert.clone(), |(_, p)| p.clone());
        let mut set = CertSet::new(default);
        let SecretState {
            good,
            by_host,
            expiry,
            ..
        } = state;
        let bound: HashSet<&str> = bindings
            .iter()
            .flat_map(|b| b.hosts.iter().map(String::as_str))
            .collect();
        by_host.retain(|h, _| bound.contains(h.as_str()));
        let mut now_expiry: HashMap<String, (ObjectKey, i64)> = HashMap::new();
        for binding in bindings {
            for host in &binding.hosts {
                let served = match good.get(&binding.secret) {
                    Some((_, parsed)) => {
                        let entry = (binding.secret.clone(), parsed.clone());
                        by_host.insert(host.clone(), entry.clone());
                        Some(entry)
                    }
                    None => by_host.get(host).cloned(),
                };
                if let Some((secret, parsed)) = served {
                    set.insert(host, parsed.clone());
                    now_expiry
                        .entry(host.clone())
                        .or_insert((secret, parsed.not_after));
                }
            }
        }
        // Touch only the expiry series that changed: at thousands of hosts, resetting and
        // re-creating every series would cost more than the rest of the publication.
        let gauge = &self.metrics.certificate_not_after;
        for (host, (secret, _)) in expiry.iter() {
            if now_expiry.get(host).is_none_or(|(s, _)| s != secret) {
                let _ = gauge.remove_label_values(&[&secret.namespace, &secret.name, host]);
            }
        }
        for (host, (secret, not_after)) in &now_expiry {
            if expiry.get(host) != Some(&(secret.clone(), *not_after)) {
                gauge
                    .with_label_values(&[&secret.namespace, &secret.name, host])
                    .set(*not_after as f64);
            }
        }
        *expiry = now_expiry;
        tracing::info!(
            hosts = set.host_count(),
            secrets = good.len(),
            took_us = started.elapsed().as_micros() as u64,
            "certificate set published"
        );
        self.certs.publish(set);
    }
}

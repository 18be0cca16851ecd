//! Backends (a Service port) with their ready endpoints and round-robin selection. Endpoints are
//! swapped per backend, without rebuilding the route table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use k8s_sync::{BackendKey, BackendProtocol, EndpointSet, ResolvedBackend};

/// One Service port and the endpoints currently ready behind it.
#[derive(Debug)]
pub struct Backend {
    pub key: BackendKey,
    /// `namespace/service:port`, for logs.
    pub label: Arc<str>,
    /// Service name alone, for logs and metric labels.
    pub service: Arc<str>,
    endpoints: ArcSwap<Vec<SocketAddr>>,
    /// From the Service port's `appProtocol`; a Service edit changes it without a rebuild.
    protocol: AtomicBool,
    cursor: AtomicUsize,
}

/// The outcome of choosing an endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    Endpoint(SocketAddr),
    /// The backend has no ready endpoint.
    NoEndpoints,
    /// Every endpoint has been tried for this request.
    Exhausted,
}

impl Backend {
    pub fn new(key: BackendKey, resolved: &ResolvedBackend) -> Self {
        Self {
            label: key.to_string().into(),
            service: key.service.as_str().into(),
            key,
            endpoints: ArcSwap::from_pointee(resolved.addrs.clone()),
            protocol: AtomicBool::new(resolved.protocol == BackendProtocol::H2c),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The protocol the backend's Service port asks for.
    pub fn protocol(&self) -> BackendProtocol {
        if self.protocol.load(Ordering::Relaxed) {
            BackendProtocol::H2c
        } else {
            BackendProtocol::Http1
        }
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.load().len()
    }

    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.load().is_empty()
    }

    /// Round-robin over ready endpoints, skipping those already tried for this request.
    pub fn pick(&self, tried: &[SocketAddr]) -> Pick {
        let eps = self.endpoints.load();
        if eps.is_empty() {
            return Pick::NoEndpoints;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..eps.len())
            .map(|i| eps[(start + i) % eps.len()])
            .find(|a| !tried.contains(a))
            .map_or(Pick::Exhausted, Pick::Endpoint)
    }

    fn update(&self, resolved: &ResolvedBackend) {
        if **self.endpoints.load() != resolved.addrs {
            self.endpoints.store(Arc::new(resolved.addrs.clone()));
        }
        self.protocol
            .store(resolved.protocol == BackendProtocol::H2c, Ordering::Relaxed);
    }
}

/// Every backend in use, by key. Lives off the hot path (in the publisher); route tables hold
/// `Arc<Backend>`s out of it, so an endpoint update reaches the data path without a rebuild.
#[derive(Debug, Default)]
pub struct BackendRegistry {
    backends: HashMap<BackendKey, Arc<Backend>>,
}

impl BackendRegistry {
    /// Updates endpoints of known backends, adds new ones and forgets those no longer named.
    pub fn sync(&mut self, endpoints: &EndpointSet) {
        self.backends.retain(|k, _| endpoints.0.contains_key(k));
        for (key, resolved) in &endpoints.0 {
            match self.backends.get(key) {
                Some(b) => b.update(resolved),
                None => {
                    self.backends
                        .insert(key.clone(), Arc::new(Backend::new(key.clone(), resolved)));
                }
            }
        }
    }

    /// Like [`BackendRegistry::sync`], for the named backends only (the others are unchanged).
    pub fn sync_keys<'a>(
        &mut self,
        endpoints: &EndpointSet,
        keys: impl IntoIterator<Item = &'a BackendKey>,
    ) {
        for key in keys {
            match (endpoints.0.get(key), self.backends.get(key)) {
                (None, _) => {
                    self.backends.remove(key);
                }
                (Some(resolved), Some(b)) => b.update(resolved),
                (Some(resolved), None) => {
                    self.backends
                        .insert(key.clone(), Arc::new(Backend::new(key.clone(), resolved)));
                }
            }
        }
    }

    pub fn get(&self, key: &BackendKey) -> Option<&Arc<Backend>> {
        self.backends.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_sync::ServicePortRef;

    fn resolved(addrs: Vec<SocketAddr>) -> ResolvedBackend {
        ResolvedBackend {
            addrs,
            protocol: BackendProtocol::Http1,
        }
    }

    fn key() -> BackendKey {
        BackendKey {
            namespace: "ns".into(),
            service: "svc".into(),
            port: ServicePortRef::Number(80),
        }
    }

    #[test]
    fn round_robin_skips_tried_and_reports_exhaustion() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let be = Backend::new(key(), &resolved(vec![a, b]));
        let first = be.pick(&[]);
        let second = be.pick(&[]);
        assert_ne!(first, second);
        assert_eq!(be.pick(&[a]), Pick::Endpoint(b));
        assert_eq!(be.pick(&[a, b]), Pick::Exhausted);
        assert_eq!(
            Backend::new(key(), &resolved(vec![])).pick(&[]),
            Pick::NoEndpoints
        );
    }

    #[test]
    fn registry_keeps_backend_identity_across_endpoint_updates() {
        let mut reg = BackendRegistry::default();
        let mut set = EndpointSet::default();
        set.0
            .insert(key(), resolved(vec!["127.0.0.1:1".parse().unwrap()]));
        reg.sync(&set);
        let before = reg.get(&key()).unwrap().clone();
        set.0.insert(
            key(),
            ResolvedBackend {
                addrs: vec!["127.0.0.1:2".parse().unwrap()],
                protocol: BackendProtocol::H2c,
            },
        );
        reg.sync(&set);
        let after = reg.get(&key()).unwrap();
        assert!(Arc::ptr_eq(&before, after));
        assert_eq!(
            before.pick(&[]),
            Pick::Endpoint("127.0.0.1:2".parse().unwrap())
        );
        assert_eq!(before.protocol(), BackendProtocol::H2c);
        reg.sync(&EndpointSet::default());
        assert!(reg.get(&key()).is_none());
    }
}

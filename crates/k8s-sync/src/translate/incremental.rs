//! The translator that keeps what it worked out: each served Ingress parsed once per version,
//! each host's routes merged once per change of the Ingresses naming it. A change to one
//! Ingress re-parses that Ingress and re-merges only the hosts it names (before and after);
//! every other host keeps its `Arc` of routes, which the publisher reuses as is. An IngressClass
//! change, a relist of Ingresses or a new snapshot starts from scratch. `translate()` is this
//! translator run once, and a property test checks that a translator fed a random sequence of
//! changes always equals a fresh one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;

use super::{
    Age, DEFAULT_CLASS_ANNOTATION, IngressOut, TierSettings, Translation, class_of, hosts_named,
    ingress_problem, merge_host, parse_ingress, resolve_endpoints, tls_secret,
};
use crate::config::{DefaultBackend, EndpointSet, Route, RoutingConfig, TlsBinding, TlsSecret};
use crate::object::{Kind, ObjectKey, Snapshot};
use crate::problem::{Problem, ProblemReason};

/// Whether and how this tier serves an Ingress's class.
struct ClassView {
    serve_unclassed: bool,
    /// Our IngressClass names this other controller.
    foreign_controller: Option<String>,
}

enum Decision {
    Serve,
    Mismatch(Problem),
    Ignore,
}

impl ClassView {
    fn new(snapshot: &Snapshot, settings: &TierSettings) -> Self {
        let our_class = snapshot
            .ingress_classes
            .get(&ObjectKey::new("", settings.class.as_str()));
        // An IngressClass of our name that names another controller is someone else's: serve
        // none of its Ingresses. Without an IngressClass object the name alone decides
        // (manifest directories and the legacy annotation often come without one).
        let foreign_controller = our_class
            .map(|c| {
                c.spec
                    .as_ref()
                    .and_then(|s| s.controller.as_deref())
                    .unwrap_or("")
            })
            .filter(|c| *c != settings.controller)
            .map(str::to_owned);
        let serve_unclassed = settings.watch_without_class
            || (foreign_controller.is_none()
                && our_class
                    .and_then(|c| c.metadata.annotations.as_ref())
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true"));
        Self {
            serve_unclassed,
            foreign_controller,
        }
    }

    fn decide(&self, key: &ObjectKey, ing: &Ingress, settings: &TierSettings) -> Decision {
        match class_of(ing) {
            None if self.serve_unclassed => Decision::Serve,
            Some(c) if c == settings.class => match &self.foreign_controller {
                None => Decision::Serve,
                Some(other) => Decision::Mismatch(ingress_problem(
                    key,
                    ProblemReason::ClassControllerMismatch,
                    format!(
                        "IngressClass {} names controller {other:?}, not {:?}: not served",
                        settings.class, settings.controller
                    ),
                )),
            },
            _ => Decision::Ignore,
        }
    }
}

/// Translates a sequence of snapshots (of one source), re-translating only what changed.
pub struct Translator {
    settings: TierSettings,
    /// The snapshot last translated; another one means starting from scratch.
    snapshot_id: Option<u64>,
    served: BTreeMap<Age, Arc<IngressOut>>,
    age_of: HashMap<ObjectKey, Age>,
    mismatched: BTreeMap<ObjectKey, Problem>,
    /// Hosts each Ingress of any class names, and how many Ingresses name each host.
    named: HashMap<ObjectKey, BTreeSet<String>>,
    host_counts: BTreeMap<String, usize>,
    /// Served Ingresses with rules for each host key (`""`: host-less).
    by_host: HashMap<String, BTreeSet<Age>>,
    /// Conflicts found merging each host key's routes.
    conflicts: HashMap<String, Vec<Problem>>,
    /// The last result's parts, reused while their inputs are unchanged.
    routes: RoutingConfig,
    default_backend_problems: Vec<Problem>,
    secret_material: HashMap<ObjectKey, Arc<TlsSecret>>,
    tls_secrets: BTreeMap<ObjectKey, Arc<TlsSecret>>,
    secret_problems: Vec<Problem>,
    endpoints: EndpointSet,
    endpoint_problems: Vec<Problem>,
    served_keys: Arc<Vec<ObjectKey>>,
}

impl Translator {
    pub fn new(settings: TierSettings) -> Self {
        Self {
            settings,
            snapshot_id: None,
            served: BTreeMap::new(),
            age_of: HashMap::new(),
            mismatched: BTreeMap::new(),
            named: HashMap::new(),
            host_counts: BTreeMap::new(),
            by_host: HashMap::new(),
            conflicts: HashMap::new(),
            routes: RoutingConfig::default(),
            default_backend_problems: Vec::new(),
            secret_material: HashMap::new(),
            tls_secrets: BTreeMap::new(),
            secret_problems: Vec::new(),
            endpoints: EndpointSet::default(),
            endpoint_problems: Vec::new(),
            served_keys: Arc::default(),
        }
    }

    /// Translates everything, ignoring what was kept (the snapshot's change log is left as is).
    pub fn translate_all(mut self, snapshot: &Snapshot) -> Translation {
        let keys: Vec<ObjectKey> = snapshot.ingresses.keys().cloned().collect();
        self.apply(snapshot, keys, true, &all_kinds())
    }

    /// Translates a snapshot, re-translating what changed since the last call (and taking the
    /// snapshot's change log).
    pub fn update(&mut self, snapshot: &mut Snapshot) -> Translation {
        let changes = snapshot.take_changes();
        let fresh = self.snapshot_id != Some(snapshot.id())
            || changes.all_ingresses
            || changes.kinds.contains(&Kind::IngressClass);
        if fresh {
            let settings = self.settings.clone();
            *self = Self::new(settings);
            self.snapshot_id = Some(snapshot.id());
            let keys: Vec<ObjectKey> = snapshot.ingresses.keys().cloned().collect();
            return self.apply(snapshot, keys, true, &all_kinds());
        }
        self.apply(
            snapshot,
            changes.ingresses.into_iter().collect(),
            false,
            &changes.kinds,
        )
    }

    fn apply(
        &mut self,
        snapshot: &Snapshot,
        dirty: Vec<ObjectKey>,
        fresh: bool,
        kinds: &BTreeSet<Kind>,
    ) -> Translation {
        let class = ClassView::new(snapshot, &self.settings);
        let mut dirty_hosts: BTreeSet<String> = BTreeSet::new();
        let (mut tls_changed, mut db_changed, mut known_changed, mut served_changed) =
            (fresh, fresh, fresh, fresh);
        for key in &dirty {
            if let Some(age) = self.age_of.remove(key)
                && let Some(old) = self.served.remove(&age)
            {
                for h in old.host_keys() {
                    if let Some(set) = self.by_host.get_mut(h) {
                        set.remove(&age);
                    }
                    dirty_hosts.insert(h.to_owned());
                }
                tls_changed |= !old.tls.is_empty() || !old.tls_hosts.is_empty();
                db_changed |= old.default_backend.is_some();
                served_changed = true;
            }
            self.mismatched.remove(key);
            if let Some(old) = self.named.remove(key) {
                for h in old {
                    if let Some(n) = self.host_counts.get_mut(&h) {
                        *n -= 1;
                        if *n == 0 {
                            self.host_counts.remove(&h);
                        }
                    }
                }
                known_changed = true;
            }
            let Some(ing) = snapshot.ingresses.get(key) else {
                continue;
            };
            let named = hosts_named(ing);
            if !named.is_empty() {
                for h in &named {
                    *self.host_counts.entry(h.clone()).or_default() += 1;
                }
                self.named.insert(key.clone(), named);
                known_changed = true;
            }
            match class.decide(key, ing, &self.settings) {
                Decision::Serve => {
                    let out = parse_ingress(key, ing, &self.settings);
                    for h in out.host_keys() {
                        self.by_host
                            .entry(h.to_owned())
                            .or_default()
                            .insert(out.age.clone());
                        dirty_hosts.insert(h.to_owned());
                    }
                    tls_changed |= !out.tls.is_empty() || !out.tls_hosts.is_empty();
                    db_changed |= out.default_backend.is_some();
                    served_changed = true;
                    self.age_of.insert(key.clone(), out.age.clone());
                    self.served.insert(out.age.clone(), Arc::new(out));
                }
                Decision::Mismatch(p) => {
                    self.mismatched.insert(key.clone(), p);
                }
                Decision::Ignore => {}
            }
        }

        let routes_changed = !dirty_hosts.is_empty() || db_changed;
        for h in &dirty_hosts {
            let contributors = self.by_host.get(h).filter(|set| !set.is_empty());
            let Some(ages) = contributors else {
                self.by_host.remove(h);
                self.conflicts.remove(h);
                self.set_host_routes(h, None);
                continue;
            };
            let served = &self.served;
            let (routes, conflicts) =
                merge_host(h, ages.iter().filter_map(|a| served.get(a)).map(|o| &**o));
            // A host only canaries name has no routes of its own.
            self.set_host_routes(h, (!routes.is_empty()).then(|| Arc::new(routes)));
            if conflicts.is_empty() {
                self.conflicts.remove(h);
            } else {
                self.conflicts.insert(h.clone(), conflicts);
            }
        }
        if db_changed {
            self.default_backend();
        }
        if tls_changed {
            self.tls_bindings();
        }
        if known_changed {
            self.routes.known_hosts = Arc::new(self.host_counts.keys().cloned().collect());
        }
        if tls_changed || kinds.contains(&Kind::Secret) {
            self.secrets(snapshot);
        }
        if routes_changed
            || kinds.contains(&Kind::Service)
            || kinds.contains(&Kind::EndpointSlice)
            || kinds.contains(&Kind::Endpoints)
        {
            let mut problems = BTreeSet::new();
            self.endpoints = resolve_endpoints(snapshot, &self.routes, &mut problems);
            self.endpoint_problems = problems.into_iter().collect();
        }
        if served_changed {
            self.served_keys = Arc::new(self.served.keys().map(|a| a.key.clone()).collect());
        }
        self.translation(snapshot)
    }

    fn set_host_routes(&mut self, host_key: &str, routes: Option<Arc<Vec<Route>>>) {
        let r = &mut self.routes;
        match (host_key, routes) {
            ("", Some(routes)) => r.hostless = routes,
            ("", None) => r.hostless = Arc::default(),
            (h, routes) => {
                let (map, key) = match h.strip_prefix("*.") {
                    Some(suffix) => (&mut r.wildcard_hosts, suffix),
                    None => (&mut r.exact_hosts, h),
                };
                match routes {
                    Some(routes) => {
                        map.insert(key.to_owned(), routes);
                    }
                    None => {
                        map.remove(key);
                    }
                }
            }
        }
    }

    /// The oldest served Ingress with a valid `spec.defaultBackend` has it; later ones are
    /// reported.
    fn default_backend(&mut self) {
        self.routes.default_backend = None;
        self.default_backend_problems.clear();
        for ing in self.served.values() {
            let Some(backend) = &ing.default_backend else {
                continue;
            };
            match &self.routes.default_backend {
                Some(existing) => self.default_backend_problems.push(ingress_problem(
                    &ing.age.key,
                    ProblemReason::DefaultBackendConflict,
                    format!(
                        "defaultBackend already set by older Ingress {}",
                        existing.ingress
                    ),
                )),
                None => {
                    self.routes.default_backend = Some(DefaultBackend {
                        backend: backend.clone(),
                        ingress: ing.source.clone(),
                    })
                }
            }
        }
    }

    /// TLS bindings in age order, and the hosts redirected to HTTPS: those whose every naming
    /// Ingress keeps the redirect on.
    fn tls_bindings(&mut self) {
        let mut bindings: Vec<TlsBinding> = Vec::new();
        let mut redirect: BTreeMap<&str, bool> = BTreeMap::new();
        for ing in self.served.values() {
            bindings.extend(ing.tls.iter().cloned());
            for h in &ing.tls_hosts {
                *redirect.entry(h.as_str()).or_insert(true) &= ing.redirect_on;
            }
        }
        self.routes.https_redirect_hosts = Arc::new(
            redirect
                .into_iter()
                .filter(|(_, on)| *on)
                .map(|(h, _)| h.to_owned())
                .collect(),
        );
        self.routes.tls = Arc::new(bindings);
    }

    /// PEM material of every bound Secret (and of `--default-certificate`), shared with the
    /// previous translation while a Secret's bytes are unchanged.
    fn secrets(&mut self, snapshot: &Snapshot) {
        let mut material = BTreeMap::new();
        let mut problems = Vec::new();
        let kept = &self.secret_material;
        let read = |key: &ObjectKey| -> Result<Arc<TlsSecret>, super::Reject> {
            let (cert_pem, key_pem) = tls_secret(snapshot, key)?;
            let same = kept
                .get(key)
                .filter(|m| m.cert_pem == cert_pem && m.key_pem == key_pem);
            Ok(same.cloned().unwrap_or_else(|| {
                Arc::new(TlsSecret {
                    cert_pem: cert_pem.to_vec(),
                    key_pem: key_pem.to_vec(),
                })
            }))
        };
        for binding in self.routes.tls.iter() {
            if binding.secret.name.contains('/') {
                continue;
            }
            match read(&binding.secret) {
                Ok(m) => {
                    material.insert(binding.secret.clone(), m);
                }
                Err((reason, detail)) => {
                    let ingress = ObjectKey::new(
                        binding.ingress.namespace.as_str(),
                        binding.ingress.name.as_str(),
                    );
                    problems.push(ingress_problem(&ingress, reason, detail));
                }
            }
        }
        if let Some(key) = self
            .settings
            .default_certificate
            .as_ref()
            .filter(|_| self.settings.tier.reads_secrets())
        {
            match read(key) {
                Ok(m) => {
                    material.insert(key.clone(), m);
                }
                Err((reason, detail)) => problems.push(Problem {
                    kind: "Secret",
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    reason,
                    detail: format!("--default-certificate: {detail}"),
                }),
            }
        }
        self.secret_material = material
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.tls_secrets = material;
        self.secret_problems = problems;
    }

    fn translation(&self, snapshot: &Snapshot) -> Translation {
        let mut problems: BTreeSet<Problem> = BTreeSet::new();
        for ing in self.served.values() {
            problems.extend(ing.problems.iter().cloned());
        }
        for c in self.conflicts.values() {
            problems.extend(c.iter().cloned());
        }
        problems.extend(self.mismatched.values().cloned());
        problems.extend(self.default_backend_problems.iter().cloned());
        problems.extend(self.secret_problems.iter().cloned());
        problems.extend(self.endpoint_problems.iter().cloned());
        Translation {
            routes: self.routes.clone(),
            endpoints: self.endpoints.clone(),
            tls_secrets: self.tls_secrets.clone(),
            problems: problems.into_iter().collect(),
            object_counts: snapshot.counts().to_vec(),
            served_ingresses: self.served_keys.clone(),
        }
    }
}

fn all_kinds() -> BTreeSet<Kind> {
    [
        Kind::Ingress,
        Kind::IngressClass,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Endpoints,
        Kind::Secret,
    ]
    .into_iter()
    .collect()
}

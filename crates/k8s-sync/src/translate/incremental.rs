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
    Age, DEFAULT_CLASS_ANNOTATION, Delta, IngressOut, TierSettings, Translation, class_of,
    hosts_named, ingress_problem, merge_host, parse_ingress, tls_secret,
};
use crate::config::{
    BackendKey, DefaultBackend, EndpointSet, IngressRef, Route, RoutingConfig, TlsHostBinding,
    TlsSecret,
};
use crate::object::{Changes, Kind, ObjectKey, Snapshot};
use crate::problem::{Problem, ProblemReason};
use crate::sorted_vec;

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
    /// Served Ingresses with problems of their own.
    with_problems: BTreeSet<Age>,
    mismatched: BTreeMap<ObjectKey, Problem>,
    /// Hosts each Ingress of any class names, and how many Ingresses name each host.
    named: HashMap<ObjectKey, Box<[String]>>,
    host_counts: HashMap<String, usize>,
    /// Served Ingresses with rules for each host key (`""`: host-less), oldest first.
    by_host: HashMap<String, Vec<Age>>,
    /// Conflicts found merging each host key's routes.
    conflicts: HashMap<String, Vec<Problem>>,
    /// The last result's parts, reused while their inputs are unchanged.
    routes: RoutingConfig,
    default_backend_problems: Vec<Problem>,
    /// Served Ingresses binding each host to a Secret (`spec.tls`), oldest first.
    tls_by_host: HashMap<String, Vec<Age>>,
    /// Per host deciding on the HTTPS redirect: how many Ingresses keep it on, and off.
    redirect_votes: HashMap<String, (usize, usize)>,
    /// Bindings naming each Secret, by Ingress.
    secret_users: BTreeMap<ObjectKey, Counts<IngressRef>>,
    tls_secrets: imbl::OrdMap<ObjectKey, Arc<TlsSecret>>,
    secret_problems: BTreeMap<ObjectKey, Vec<Problem>>,
    /// Routes (and the default backend) naming each backend, by Ingress: the smallest one is
    /// blamed when the backend cannot be resolved.
    backend_refs: BTreeMap<BackendKey, Counts<IngressRef>>,
    backend_problems: BTreeMap<BackendKey, Vec<Problem>>,
    /// EndpointSlices by Service (`(namespace, name)`), and the Service of each slice.
    slices_of: HashMap<(String, String), BTreeSet<ObjectKey>>,
    slice_service: HashMap<ObjectKey, (String, String)>,
    endpoints: EndpointSet,
    served_keys: imbl::OrdSet<ObjectKey>,
}

/// Backends a list of routes (or a default backend) names, with the naming Ingress.
/// A small multiset kept sorted in a Vec: most have one or two members, and a map per entry
/// would cost a node allocation of several hundred bytes each.
#[derive(Debug)]
struct Counts<T>(Vec<(T, usize)>);

impl<T> Default for Counts<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Ord + Clone> Counts<T> {
    fn add(&mut self, v: &T) {
        match self.0.binary_search_by(|(x, _)| x.cmp(v)) {
            Ok(i) => self.0[i].1 += 1,
            Err(i) => sorted_vec::insert_at(&mut self.0, i, (v.clone(), 1)),
        }
    }

    fn remove(&mut self, v: &T) {
        if let Ok(i) = self.0.binary_search_by(|(x, _)| x.cmp(v)) {
            self.0[i].1 -= 1;
            if self.0[i].1 == 0 {
                self.0.remove(i);
            }
        }
    }

    /// The smallest member.
    fn first(&self) -> Option<&T> {
        self.0.first().map(|(v, _)| v)
    }

    fn items(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(v, _)| v)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Hosts and Secrets whose TLS bindings or redirect votes changed in one translation.
#[derive(Default)]
struct TlsDirt {
    hosts: BTreeSet<String>,
    redirect: BTreeSet<String>,
    secrets: BTreeSet<ObjectKey>,
}

fn route_backends(routes: &[Route]) -> impl Iterator<Item = (&BackendKey, &IngressRef)> {
    routes.iter().flat_map(|r| {
        std::iter::once((&r.backend, &r.ingress))
            .chain(r.canary.iter().map(|c| (&c.backend, &c.ingress)))
    })
}

impl Translator {
    pub fn new(settings: TierSettings) -> Self {
        Self {
            settings,
            snapshot_id: None,
            served: BTreeMap::new(),
            age_of: HashMap::new(),
            with_problems: BTreeSet::new(),
            mismatched: BTreeMap::new(),
            named: HashMap::new(),
            host_counts: HashMap::new(),
            by_host: HashMap::new(),
            conflicts: HashMap::new(),
            routes: RoutingConfig::default(),
            default_backend_problems: Vec::new(),
            tls_by_host: HashMap::new(),
            redirect_votes: HashMap::new(),
            secret_users: BTreeMap::new(),
            tls_secrets: imbl::OrdMap::new(),
            secret_problems: BTreeMap::new(),
            backend_refs: BTreeMap::new(),
            backend_problems: BTreeMap::new(),
            slices_of: HashMap::new(),
            slice_service: HashMap::new(),
            endpoints: EndpointSet::default(),
            served_keys: imbl::OrdSet::new(),
        }
    }

    /// Translates everything, ignoring what was kept (the snapshot's change log is left as is).
    pub fn translate_all(mut self, snapshot: &Snapshot) -> Translation {
        let keys: Vec<ObjectKey> = snapshot.ingress_keys().cloned().collect();
        self.apply(snapshot, keys, None)
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
            let keys: Vec<ObjectKey> = snapshot.ingress_keys().cloned().collect();
            return self.apply(snapshot, keys, None);
        }
        let dirty = changes.ingresses.iter().cloned().collect();
        self.apply(snapshot, dirty, Some(&changes))
    }

    /// Applies changed Ingresses and, with `changes`, the other changes of the snapshot's log
    /// (`None`: a fresh start, everything changed).
    fn apply(
        &mut self,
        snapshot: &Snapshot,
        dirty: Vec<ObjectKey>,
        changes: Option<&Changes>,
    ) -> Translation {
        let fresh = changes.is_none();
        let class = ClassView::new(snapshot, &self.settings);
        let mut delta = Delta::default();
        let mut dirty_hosts: BTreeSet<String> = BTreeSet::new();
        let mut db_changed = fresh;
        let mut tls = TlsDirt::default();
        for key in &dirty {
            delta.ingresses.insert(key.clone());
            if let Some(age) = self.age_of.remove(key)
                && let Some(old) = self.served.remove(&age)
            {
                for h in old.host_keys() {
                    if let Some(ages) = self.by_host.get_mut(h)
                        && let Ok(i) = ages.binary_search(&age)
                    {
                        ages.remove(i);
                    }
                    dirty_hosts.insert(h.to_owned());
                }
                self.withdraw_tls(&old, &mut tls);
                db_changed |= old.default_backend.is_some();
                self.with_problems.remove(&age);
                self.served_keys.remove(key);
            }
            self.mismatched.remove(key);
            if let Some(old) = self.named.remove(key) {
                for h in old.iter() {
                    if let Some(n) = self.host_counts.get_mut(h) {
                        *n -= 1;
                        if *n == 0 {
                            self.host_counts.remove(h);
                            self.routes.known_hosts.remove(h);
                            delta.known_hosts.insert(h.clone());
                        }
                    }
                }
            }
            let ing = snapshot.ingresses.get(key);
            let named: BTreeSet<String> = match (ing, snapshot.other_class_ingresses.get(key)) {
                (Some(ing), _) => hosts_named(ing),
                (None, Some(other)) => other.hosts.iter().map(|h| h.to_string()).collect(),
                (None, None) => continue,
            };
            if !named.is_empty() {
                for h in &named {
                    let n = self.host_counts.entry(h.clone()).or_default();
                    *n += 1;
                    if *n == 1 {
                        self.routes.known_hosts.insert(h.clone());
                        delta.known_hosts.insert(h.clone());
                    }
                }
                self.named
                    .insert(key.clone(), named.into_iter().collect::<Vec<_>>().into());
            }
            // Another class's Ingress: its hosts are known, nothing of it is served.
            let Some(ing) = ing else {
                continue;
            };
            match class.decide(key, ing, &self.settings) {
                Decision::Serve => {
                    let out = parse_ingress(key, ing, &self.settings);
                    for h in out.host_keys() {
                        let ages = self.by_host.entry(h.to_owned()).or_default();
                        sorted_vec::insert(ages, out.age.clone());
                        dirty_hosts.insert(h.to_owned());
                    }
                    self.add_tls(&out, &mut tls);
                    db_changed |= out.default_backend.is_some();
                    if !out.problems.is_empty() {
                        self.with_problems.insert(out.age.clone());
                    }
                    self.served_keys.insert(key.clone());
                    self.age_of.insert(key.clone(), out.age.clone());
                    self.served.insert(out.age.clone(), Arc::new(out));
                }
                Decision::Mismatch(p) => {
                    self.mismatched.insert(key.clone(), p);
                }
                Decision::Ignore => {}
            }
        }

        // Backends whose naming routes changed.
        let mut dirty_backends: BTreeSet<BackendKey> = BTreeSet::new();
        for h in &dirty_hosts {
            let contributors = self.by_host.get(h).filter(|ages| !ages.is_empty());
            let routes = match contributors {
                None => {
                    self.by_host.remove(h);
                    self.conflicts.remove(h);
                    None
                }
                Some(ages) => {
                    let served = &self.served;
                    let (routes, conflicts) =
                        merge_host(h, ages.iter().filter_map(|a| served.get(a)).map(|o| &**o));
                    if conflicts.is_empty() {
                        self.conflicts.remove(h);
                    } else {
                        self.conflicts.insert(h.clone(), conflicts);
                    }
                    // A host only canaries name has no routes of its own.
                    (!routes.is_empty()).then(|| Arc::new(routes))
                }
            };
            let old = self.set_host_routes(h, routes.clone());
            if old.as_ref().map(|r| &***r) != routes.as_ref().map(|r| &***r) {
                delta.route_hosts.insert(h.clone());
            }
            for (b, i) in old.iter().flat_map(|r| route_backends(r)) {
                self.unref_backend(b, i, &mut dirty_backends);
            }
            for (b, i) in routes.iter().flat_map(|r| route_backends(r)) {
                self.ref_backend(b, i, &mut dirty_backends);
            }
        }
        if db_changed {
            let old = self.routes.default_backend.take();
            self.default_backend();
            if old != self.routes.default_backend {
                delta.default_backend = true;
            }
            if let Some(d) = &old {
                self.unref_backend(&d.backend, &d.ingress, &mut dirty_backends);
            }
            if let Some(d) = self.routes.default_backend.clone() {
                self.ref_backend(&d.backend, &d.ingress, &mut dirty_backends);
            }
        }
        self.tls_hosts(&tls, &mut delta);
        let mut secrets = tls.secrets;
        match changes.map(|c| c.keys_of(Kind::Secret)) {
            Some(Some(keys)) => secrets.extend(keys.iter().cloned()),
            // A relist or a fresh start: every Secret that is or was bound.
            _ => {
                secrets.extend(self.secret_users.keys().cloned());
                secrets.extend(self.tls_secrets.keys().cloned());
                secrets.extend(self.secret_problems.keys().cloned());
            }
        }
        if let Some(key) = self
            .settings
            .default_certificate
            .as_ref()
            .filter(|_| fresh && self.settings.tier.reads_secrets())
        {
            secrets.insert(key.clone());
        }
        self.secrets(snapshot, secrets, &mut delta);
        self.endpoints(snapshot, changes, dirty_backends, &mut delta);
        self.translation(snapshot, (!fresh).then_some(delta))
    }

    fn ref_backend(
        &mut self,
        b: &BackendKey,
        ingress: &IngressRef,
        dirty: &mut BTreeSet<BackendKey>,
    ) {
        let refs = self.backend_refs.entry(b.clone()).or_default();
        let before = refs.first().cloned();
        refs.add(ingress);
        if before.as_ref() != refs.first() {
            dirty.insert(b.clone());
        }
    }

    fn unref_backend(
        &mut self,
        b: &BackendKey,
        ingress: &IngressRef,
        dirty: &mut BTreeSet<BackendKey>,
    ) {
        let Some(refs) = self.backend_refs.get_mut(b) else {
            return;
        };
        let before = refs.first().cloned();
        refs.remove(ingress);
        if before.as_ref() != refs.first() {
            dirty.insert(b.clone());
        }
        if refs.is_empty() {
            self.backend_refs.remove(b);
        }
    }

    /// Resolves the backends that may have changed: those whose naming routes changed, and
    /// those of Services whose Service, EndpointSlices or Endpoints changed.
    fn endpoints(
        &mut self,
        snapshot: &Snapshot,
        changes: Option<&Changes>,
        mut dirty: BTreeSet<BackendKey>,
        delta: &mut Delta,
    ) {
        let keys_of = |kind| changes.and_then(|c: &Changes| c.keys_of(kind));
        let mut services: BTreeSet<(String, String)> = BTreeSet::new();
        let mut everything = false;
        match keys_of(Kind::EndpointSlice) {
            Some(keys) => {
                for key in keys {
                    if let Some(svc) = self.slice_service.remove(key) {
                        if let Some(set) = self.slices_of.get_mut(&svc) {
                            set.remove(key);
                            if set.is_empty() {
                                self.slices_of.remove(&svc);
                            }
                        }
                        services.insert(svc);
                    }
                    let now = snapshot
                        .endpoint_slices
                        .get(key)
                        .and_then(|s| super::service_of_slice(key, s));
                    if let Some(svc) = now {
                        self.slices_of
                            .entry(svc.clone())
                            .or_default()
                            .insert(key.clone());
                        self.slice_service.insert(key.clone(), svc.clone());
                        services.insert(svc);
                    }
                }
            }
            None => {
                self.slices_of.clear();
                self.slice_service.clear();
                for (key, slice) in &snapshot.endpoint_slices {
                    if let Some(svc) = super::service_of_slice(key, slice) {
                        self.slices_of
                            .entry(svc.clone())
                            .or_default()
                            .insert(key.clone());
                        self.slice_service.insert(key.clone(), svc);
                    }
                }
                everything = true;
            }
        }
        for kind in [Kind::Service, Kind::Endpoints] {
            match keys_of(kind) {
                Some(keys) => services.extend(
                    keys.iter()
                        .map(|k| (k.namespace.to_string(), k.name.to_string())),
                ),
                None => everything = true,
            }
        }
        if everything {
            dirty.extend(self.backend_refs.keys().cloned());
            dirty.extend(self.endpoints.0.keys().cloned());
        } else {
            for (ns, svc) in &services {
                let from = BackendKey {
                    namespace: ns.as_str().into(),
                    service: svc.as_str().into(),
                    port: crate::config::ServicePortRef::Number(i32::MIN),
                };
                dirty.extend(
                    self.backend_refs
                        .range(from..)
                        .map(|(k, _)| k)
                        .take_while(|k| *k.namespace == **ns && *k.service == **svc)
                        .cloned(),
                );
            }
        }
        for b in dirty {
            let Some(blame) = self.backend_refs.get(&b).and_then(|r| r.first()) else {
                if self.endpoints.0.remove(&b).is_some() {
                    delta.backends.insert(b.clone());
                }
                self.backend_problems.remove(&b);
                continue;
            };
            let mut problems = Vec::new();
            let slices = self
                .slices_of
                .get(&(b.namespace.to_string(), b.service.to_string()))
                .into_iter()
                .flatten()
                .filter_map(|k| snapshot.endpoint_slices.get(k).map(|s| &**s));
            let resolved = super::resolve_backend(snapshot, &b, blame, slices, &mut problems);
            if self.endpoints.0.get(&b) != Some(&resolved) {
                self.endpoints.0.insert(b.clone(), resolved);
                delta.backends.insert(b.clone());
            }
            if problems.is_empty() {
                self.backend_problems.remove(&b);
            } else {
                self.backend_problems.insert(b, problems);
            }
        }
    }

    /// Sets a host key's routes; returns the ones it had.
    fn set_host_routes(
        &mut self,
        host_key: &str,
        routes: Option<Arc<Vec<Route>>>,
    ) -> Option<Arc<Vec<Route>>> {
        let r = &mut self.routes;
        match (host_key, routes) {
            ("", routes) => {
                let old = std::mem::replace(&mut r.hostless, routes.unwrap_or_default());
                (!old.is_empty()).then_some(old)
            }
            (h, routes) => {
                let (map, key) = match h.strip_prefix("*.") {
                    Some(suffix) => (&mut r.wildcard_hosts, suffix),
                    None => (&mut r.exact_hosts, h),
                };
                match routes {
                    Some(routes) => map.insert(key.to_owned(), routes),
                    None => map.remove(key),
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

    /// Takes a served Ingress's TLS bindings and redirect votes away.
    fn withdraw_tls(&mut self, out: &IngressOut, dirt: &mut TlsDirt) {
        for h in out.tls_host_keys() {
            if let Some(ages) = self.tls_by_host.get_mut(h)
                && let Ok(i) = ages.binary_search(&out.age)
            {
                ages.remove(i);
            }
            dirt.hosts.insert(h.to_owned());
        }
        for b in &out.tls {
            if let Some(users) = self.secret_users.get_mut(&b.secret) {
                users.remove(&b.ingress);
                if users.is_empty() {
                    self.secret_users.remove(&b.secret);
                }
            }
            dirt.secrets.insert(b.secret.clone());
        }
        for h in out.redirect_host_keys() {
            if let Some(v) = self.redirect_votes.get_mut(h) {
                let n = if out.redirect_on { &mut v.0 } else { &mut v.1 };
                *n = n.saturating_sub(1);
                if *v == (0, 0) {
                    self.redirect_votes.remove(h);
                }
            }
            dirt.redirect.insert(h.to_owned());
        }
    }

    /// Adds a served Ingress's TLS bindings and redirect votes.
    fn add_tls(&mut self, out: &IngressOut, dirt: &mut TlsDirt) {
        for h in out.tls_host_keys() {
            let ages = self.tls_by_host.entry(h.to_owned()).or_default();
            sorted_vec::insert(ages, out.age.clone());
            dirt.hosts.insert(h.to_owned());
        }
        for b in &out.tls {
            self.secret_users
                .entry(b.secret.clone())
                .or_default()
                .add(&b.ingress);
            dirt.secrets.insert(b.secret.clone());
        }
        for h in out.redirect_host_keys() {
            let v = self.redirect_votes.entry(h.to_owned()).or_default();
            if out.redirect_on {
                v.0 += 1;
            } else {
                v.1 += 1;
            }
            dirt.redirect.insert(h.to_owned());
        }
    }

    /// Rebuilds the TLS bindings of the hosts whose bindings changed (each host's Secrets in
    /// age order), and the redirect of hosts whose votes changed: a host is redirected to
    /// HTTPS when every Ingress deciding on it keeps the redirect on.
    fn tls_hosts(&mut self, dirt: &TlsDirt, delta: &mut Delta) {
        for h in &dirt.hosts {
            let mut list = Vec::new();
            for age in self.tls_by_host.get(h).into_iter().flatten() {
                let Some(ing) = self.served.get(age) else {
                    continue;
                };
                for b in ing.tls.iter().filter(|b| b.hosts.iter().any(|x| x == h)) {
                    list.push(TlsHostBinding {
                        secret: b.secret.clone(),
                        ingress: b.ingress.clone(),
                    });
                }
            }
            if self.tls_by_host.get(h).is_some_and(|a| a.is_empty()) {
                self.tls_by_host.remove(h);
            }
            let old = if list.is_empty() {
                self.routes.tls.remove(h.as_str())
            } else {
                self.routes.tls.insert(h.clone(), Arc::new(list.clone()))
            };
            if old.as_deref().map(Vec::as_slice) != Some(list.as_slice()).filter(|l| !l.is_empty())
            {
                delta.tls_hosts.insert(h.clone());
            }
        }
        for h in &dirt.redirect {
            let on = self
                .redirect_votes
                .get(h)
                .is_some_and(|(on, off)| *on > 0 && *off == 0);
            let was = if on {
                self.routes.https_redirect_hosts.insert(h.clone()).is_some()
            } else {
                self.routes
                    .https_redirect_hosts
                    .remove(h.as_str())
                    .is_some()
            };
            if on != was {
                delta.https_hosts.insert(h.clone());
            }
        }
    }

    /// Reads the PEM material of the given Secrets again where they are bound (or are
    /// `--default-certificate`); material of unchanged bytes stays shared with the last
    /// translation. A Secret no longer bound is forgotten.
    fn secrets(&mut self, snapshot: &Snapshot, keys: BTreeSet<ObjectKey>, delta: &mut Delta) {
        let default = self
            .settings
            .default_certificate
            .as_ref()
            .filter(|_| self.settings.tier.reads_secrets());
        for key in keys {
            let users = self.secret_users.get(&key);
            let is_default = default == Some(&key);
            // A cross-namespace reference is bound (so its hosts keep their last good
            // certificate) but never read; the Ingress's own problem says why.
            if (users.is_none() && !is_default) || key.name.contains('/') {
                let removed = self.tls_secrets.remove(&key).is_some();
                if removed || self.secret_problems.remove(&key).is_some() || users.is_some() {
                    delta.secrets.insert(key);
                }
                continue;
            }
            delta.secrets.insert(key.clone());
            match tls_secret(snapshot, &key) {
                Ok(material) => {
                    self.secret_problems.remove(&key);
                    // Shared with the snapshot; the last one is kept while the bytes are the
                    // same, so the edge can tell an unchanged certificate by pointer.
                    let same = self
                        .tls_secrets
                        .get(&key)
                        .is_some_and(|m| Arc::ptr_eq(m, &material) || **m == *material);
                    if !same {
                        self.tls_secrets.insert(key, material);
                    }
                }
                Err((reason, detail)) => {
                    self.tls_secrets.remove(&key);
                    let mut problems: Vec<Problem> = users
                        .into_iter()
                        .flat_map(|u| u.items())
                        .map(|i| {
                            let ingress = ObjectKey::new(i.namespace.clone(), i.name.clone());
                            ingress_problem(&ingress, reason, detail.clone())
                        })
                        .collect();
                    if is_default {
                        problems.push(Problem {
                            kind: "Secret",
                            namespace: key.namespace.to_string(),
                            name: key.name.to_string(),
                            reason,
                            detail: format!("--default-certificate: {detail}"),
                        });
                    }
                    self.secret_problems.insert(key, problems);
                }
            }
        }
    }

    fn translation(&self, snapshot: &Snapshot, delta: Option<Delta>) -> Translation {
        let mut problems: BTreeSet<Problem> = BTreeSet::new();
        for age in &self.with_problems {
            if let Some(ing) = self.served.get(age) {
                problems.extend(ing.problems.iter().cloned());
            }
        }
        for c in self.conflicts.values() {
            problems.extend(c.iter().cloned());
        }
        problems.extend(self.mismatched.values().cloned());
        problems.extend(self.default_backend_problems.iter().cloned());
        problems.extend(self.secret_problems.values().flatten().cloned());
        problems.extend(self.backend_problems.values().flatten().cloned());
        Translation {
            routes: self.routes.clone(),
            endpoints: self.endpoints.clone(),
            tls_secrets: self.tls_secrets.clone(),
            problems: problems.into_iter().collect(),
            object_counts: snapshot.counts().to_vec(),
            served_ingresses: self.served_keys.clone(),
            delta,
        }
    }
}

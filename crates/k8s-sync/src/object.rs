//! The object kinds tandem reads, and the snapshot of them a source keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::TlsSecret;
use serde_json::Value;

/// `namespace/name`; cluster-scoped objects have an empty namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The kinds tandem reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Endpoints,
    Secret,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Secret => "Secret",
        }
    }
}

/// One object of a kind tandem uses.
#[derive(Clone, Debug)]
pub enum Object {
    Ingress(Box<Ingress>),
    IngressClass(Box<IngressClass>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Endpoints(Box<Endpoints>),
    Secret(Box<Secret>),
}

/// Why a document could not be read as an object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("document has no `kind`")]
    MissingKind,
    #[error("document has no `apiVersion`")]
    MissingApiVersion,
    #[error("{kind} {api_version}: {source}")]
    Invalid {
        kind: String,
        api_version: String,
        source: serde_json::Error,
    },
    #[error("{kind} has no metadata.name")]
    MissingName { kind: String },
}

impl Object {
    pub fn kind(&self) -> &'static str {
        self.kind_enum().as_str()
    }

    pub fn kind_enum(&self) -> Kind {
        match self {
            Self::Ingress(_) => Kind::Ingress,
            Self::IngressClass(_) => Kind::IngressClass,
            Self::Service(_) => Kind::Service,
            Self::EndpointSlice(_) => Kind::EndpointSlice,
            Self::Endpoints(_) => Kind::Endpoints,
            Self::Secret(_) => Kind::Secret,
        }
    }

    /// Drops what the data path never reads but costs memory at scale: managed fields and
    /// kubectl's last-applied copy of the whole object.
    pub fn trim(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        if let Some(a) = meta.annotations.as_mut() {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Ingress(o) => &mut o.metadata,
            Self::IngressClass(o) => &mut o.metadata,
            Self::Service(o) => &mut o.metadata,
            Self::EndpointSlice(o) => &mut o.metadata,
            Self::Endpoints(o) => &mut o.metadata,
            Self::Secret(o) => &mut o.metadata,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Ingress(o) => &o.metadata,
            Self::IngressClass(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::EndpointSlice(o) => &o.metadata,
            Self::Endpoints(o) => &o.metadata,
            Self::Secret(o) => &o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let m = self.meta();
        ObjectKey::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }

    /// Reads one manifest document. `Ok(vec![])` for kinds tandem does not use; a `List`
    /// yields its items. Namespaced objects without a namespace get `default`, as
    /// `kubectl apply` would give them in the default context.
    pub fn from_manifest(doc: Value) -> Result<Vec<Object>, ObjectError> {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .ok_or(ObjectError::MissingKind)?
            .to_owned();
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or(ObjectError::MissingApiVersion)?
            .to_owned();
        if kind == "List" || kind.ends_with("List") && api_version == "v1" {
            let items = match doc.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            };
            let mut out = Vec::new();
            for item in items {
                out.extend(Self::from_manifest(item)?);
            }
            return Ok(out);
        }
        let invalid = |source| ObjectError::Invalid {
            kind: kind.clone(),
            api_version: api_version.clone(),
            source,
        };
        let mut obj = match (api_version.as_str(), kind.as_str()) {
            ("networking.k8s.io/v1", "Ingress") => {
                Object::Ingress(serde_json::from_value(doc).map_err(invalid)?)
            }
            ("networking.k8s.io/v1", "IngressClass") => {
                Object::IngressClass(serde_json::from_value(doc).map_err(invalid)?)
            }
            ("v1", "Service") => Object::Service(serde_json::from_value(doc).map_err(invalid)?),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                Object::EndpointSlice(serde_json::from_value(doc).map_err(invalid)?)
            }
            ("v1", "Endpoints") => Object::Endpoints(serde_json::from_value(doc).map_err(invalid)?),
            ("v1", "Secret") => Object::Secret(serde_json::from_value(doc).map_err(invalid)?),
            _ => return Ok(Vec::new()),
        };
        if obj.meta().name.as_deref().unwrap_or("").is_empty() {
            return Err(ObjectError::MissingName { kind });
        }
        let cluster_scoped = matches!(obj, Object::IngressClass(_));
        let meta = obj.meta_mut();
        if cluster_scoped {
            meta.namespace = None;
        } else if meta.namespace.as_deref().unwrap_or("").is_empty() {
            meta.namespace = Some("default".to_owned());
        }
        Ok(vec![obj])
    }
}

/// Every object a source knows, by kind and key, and what changed since the translator last
/// looked ([`Snapshot::take_changes`]).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Ingresses kept whole: those of the served class, unclassed ones, and every one when the
    /// served class is not known.
    pub ingresses: BTreeMap<ObjectKey, Box<Ingress>>,
    /// Ingresses of other classes (see [`Snapshot::for_class`]).
    pub other_class_ingresses: BTreeMap<ObjectKey, OtherClassIngress>,
    pub ingress_classes: BTreeMap<ObjectKey, Box<IngressClass>>,
    pub services: BTreeMap<ObjectKey, Box<Service>>,
    pub endpoint_slices: BTreeMap<ObjectKey, Box<EndpointSlice>>,
    pub endpoints: BTreeMap<ObjectKey, Box<Endpoints>>,
    /// Secrets, without the `tls.crt` / `tls.key` bytes when they had both: those are moved
    /// into `tls_material`, shared from there by every translation, never copied.
    pub secrets: BTreeMap<ObjectKey, Box<Secret>>,
    tls_material: BTreeMap<ObjectKey, Arc<TlsSecret>>,
    /// The class this process serves, when known: an Ingress of another class is never
    /// served, so only what the translator reads from it (its class and hosts) is kept.
    served_class: Option<Arc<str>>,
    /// Which snapshot this is: a translator that last saw another one starts from scratch.
    id: u64,
    changes: Changes,
}

const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// Moves a Secret's `tls.crt` and `tls.key` out of it when it has both, non-empty (from `data`,
/// else `stringData`, field by field).
fn take_tls_material(secret: &mut Secret) -> Option<Arc<TlsSecret>> {
    fn in_data(secret: &Secret, name: &str) -> Option<bool> {
        let data = secret.data.as_ref().and_then(|d| d.get(name));
        if data.is_some_and(|b| !b.0.is_empty()) {
            return Some(true);
        }
        let string = secret.string_data.as_ref().and_then(|d| d.get(name));
        string.is_some_and(|s| !s.is_empty()).then_some(false)
    }
    let (crt_in_data, key_in_data) = (in_data(secret, TLS_CRT)?, in_data(secret, TLS_KEY)?);
    let mut take = |name: &str, in_data: bool| -> Vec<u8> {
        if in_data {
            let data = secret.data.as_mut().and_then(|d| d.remove(name));
            data.map(|b| b.0).unwrap_or_default()
        } else {
            let string = secret.string_data.as_mut().and_then(|d| d.remove(name));
            string.map(String::into_bytes).unwrap_or_default()
        }
    };
    let cert_pem = take(TLS_CRT, crt_in_data);
    let key_pem = take(TLS_KEY, key_in_data);
    Some(Arc::new(TlsSecret { cert_pem, key_pem }))
}

/// A Secret as a snapshot keeps it: its `tls.crt` / `tls.key` moved out (returned), and what
/// nothing reads dropped — other data keys (e.g. cert-manager's `ca.crt`), labels and
/// annotations. Its type and identity stay (the translator checks the type; Events name it).
fn secret_as_stored(secret: &mut Secret) -> Option<Arc<TlsSecret>> {
    let material = take_tls_material(secret);
    secret.data = None;
    secret.string_data = None;
    secret.metadata.labels = None;
    secret.metadata.annotations = None;
    material
}

/// What changed in a snapshot, by kind and key.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub ingresses: BTreeSet<ObjectKey>,
    /// Every Ingress (a relist of them).
    pub all_ingresses: bool,
    /// Other kinds with any change.
    pub kinds: BTreeSet<Kind>,
    /// Changed keys of the other kinds, except those in `relisted`.
    pub keys: BTreeMap<Kind, BTreeSet<ObjectKey>>,
    /// Other kinds replaced as a whole (a relist): any of their objects may have changed.
    pub relisted: BTreeSet<Kind>,
}

impl Changes {
    fn record(&mut self, kind: Kind, key: &ObjectKey) {
        match kind {
            Kind::Ingress => {
                if !self.all_ingresses {
                    self.ingresses.insert(key.clone());
                }
            }
            other => {
                self.kinds.insert(other);
                if !self.relisted.contains(&other) {
                    self.keys.entry(other).or_default().insert(key.clone());
                }
            }
        }
    }

    fn record_all(&mut self, kind: Kind) {
        match kind {
            Kind::Ingress => {
                self.all_ingresses = true;
                self.ingresses.clear();
            }
            other => {
                self.kinds.insert(other);
                self.relisted.insert(other);
                self.keys.remove(&other);
            }
        }
    }

    /// The changed keys of a kind other than Ingress; `None` when it was relisted as a whole.
    pub fn keys_of(&self, kind: Kind) -> Option<&BTreeSet<ObjectKey>> {
        static NONE: BTreeSet<ObjectKey> = BTreeSet::new();
        if self.relisted.contains(&kind) {
            None
        } else {
            Some(self.keys.get(&kind).unwrap_or(&NONE))
        }
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            ingresses: BTreeMap::new(),
            other_class_ingresses: BTreeMap::new(),
            ingress_classes: BTreeMap::new(),
            services: BTreeMap::new(),
            endpoint_slices: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            secrets: BTreeMap::new(),
            tls_material: BTreeMap::new(),
            served_class: None,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            changes: Changes {
                all_ingresses: true,
                ..Changes::default()
            },
        }
    }
}

/// What the translator reads from an Ingress of a class this process does not serve: the
/// hosts it names (known hosts bound the per-host metric labels), and its class. Kept instead of
/// the whole object: where an edge and a router watch the same Ingresses, each holds the
/// other's at a fraction of the size (an `Ingress` value alone is ~600 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherClassIngress {
    pub class: Box<str>,
    /// As [`crate::translate::hosts_named`] gives them: lowercase, each once, sorted.
    pub hosts: Box<[Box<str>]>,
}

impl OtherClassIngress {
    fn of(ing: &Ingress, class: &str) -> Self {
        let hosts = crate::translate::hosts_named(ing);
        Self {
            class: class.into(),
            hosts: hosts.into_iter().map(String::into_boxed_str).collect(),
        }
    }

    /// An Ingress object that reads the same: for a source that hands objects back (the
    /// manifest directory's shadowed duplicates).
    fn to_ingress(&self, key: &ObjectKey) -> Ingress {
        use k8s_openapi::api::networking::v1::{IngressRule, IngressSpec};
        let rules = self.hosts.iter().map(|h| IngressRule {
            host: Some(h.to_string()),
            http: None,
        });
        Ingress {
            metadata: ObjectMeta {
                name: Some(key.name.to_string()),
                namespace: Some(key.namespace.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: Some(self.class.to_string()),
                rules: Some(rules.collect()),
                ..IngressSpec::default()
            }),
            status: None,
        }
    }
}

impl Snapshot {
    /// A snapshot for a process serving `class`: Ingresses of other classes are kept as
    /// [`OtherClassIngress`]; translating it gives the same result as a full snapshot.
    pub fn for_class(class: &str) -> Self {
        Self {
            served_class: Some(class.into()),
            ..Self::default()
        }
    }

    /// What is kept of an Ingress of a class other than the one served (`None`: ours, or
    /// unclassed, or no class known: kept whole).
    fn other_class(&self, ing: &Ingress) -> Option<OtherClassIngress> {
        let served = self.served_class.as_deref()?;
        let class = crate::translate::class_of(ing).filter(|c| *c != served)?;
        Some(OtherClassIngress::of(ing, class))
    }

    /// Stores an Ingress (replacing what the key held, whole or as another class's).
    fn put_ingress(&mut self, key: ObjectKey, ing: Box<Ingress>) {
        match self.other_class(&ing) {
            Some(other) => {
                self.ingresses.remove(&key);
                self.other_class_ingresses.insert(key, other);
            }
            None => {
                self.other_class_ingresses.remove(&key);
                self.ingresses.insert(key, ing);
            }
        }
    }

    /// The keys of every Ingress, of any class.
    pub fn ingress_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.ingresses
            .keys()
            .chain(self.other_class_ingresses.keys())
    }

    /// This snapshot's identity.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What changed since the last call (everything, for a new snapshot).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Adds an object; returns `false` (and keeps the existing one) when the key is taken.
    pub fn insert(&mut self, obj: Object) -> bool {
        let key = obj.key();
        self.changes.record(obj.kind_enum(), &key);
        fn put<T>(map: &mut BTreeMap<ObjectKey, T>, key: ObjectKey, v: T) -> bool {
            match map.entry(key) {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                    true
                }
            }
        }
        match obj {
            Object::Ingress(o) => {
                if self.ingresses.contains_key(&key)
                    || self.other_class_ingresses.contains_key(&key)
                {
                    return false;
                }
                self.put_ingress(key, o);
                true
            }
            Object::IngressClass(o) => put(&mut self.ingress_classes, key, o),
            Object::Service(o) => put(&mut self.services, key, o),
            Object::EndpointSlice(o) => put(&mut self.endpoint_slices, key, o),
            Object::Endpoints(o) => put(&mut self.endpoints, key, o),
            Object::Secret(o) => {
                if self.secrets.contains_key(&key) {
                    return false;
                }
                self.store_secret(key, o);
                true
            }
        }
    }

    /// Adds or replaces an object.
    pub fn upsert(&mut self, obj: Object) {
        let key = obj.key();
        self.changes.record(obj.kind_enum(), &key);
        match obj {
            Object::Ingress(o) => self.put_ingress(key, o),
            Object::IngressClass(o) => drop(self.ingress_classes.insert(key, o)),
            Object::Service(o) => drop(self.services.insert(key, o)),
            Object::EndpointSlice(o) => drop(self.endpoint_slices.insert(key, o)),
            Object::Endpoints(o) => drop(self.endpoints.insert(key, o)),
            Object::Secret(o) => self.store_secret(key, o),
        }
    }

    /// Whether the snapshot holds exactly this object (same key, same content).
    pub fn holds(&self, obj: &Object) -> bool {
        let key = obj.key();
        match obj {
            Object::Ingress(o) => match self.other_class(o) {
                Some(other) => self.other_class_ingresses.get(&key) == Some(&other),
                None => self.ingresses.get(&key).is_some_and(|v| **v == **o),
            },
            Object::IngressClass(o) => self.ingress_classes.get(&key).map(|v| &**v) == Some(&**o),
            Object::Service(o) => self.services.get(&key).map(|v| &**v) == Some(&**o),
            Object::EndpointSlice(o) => self.endpoint_slices.get(&key).map(|v| &**v) == Some(&**o),
            Object::Endpoints(o) => self.endpoints.get(&key).map(|v| &**v) == Some(&**o),
            Object::Secret(o) => {
                let mut secret = (**o).clone();
                let material = secret_as_stored(&mut secret);
                self.secrets.get(&key).map(|v| &**v) == Some(&secret)
                    && self.tls_material.get(&key).map(|m| &**m) == material.as_deref()
            }
        }
    }

    /// Removes an object of a kind and hands it back.
    pub fn take(&mut self, kind: Kind, key: &ObjectKey) -> Option<Object> {
        self.changes.record(kind, key);
        match kind {
            Kind::Ingress => self.ingresses.remove(key).map(Object::Ingress).or_else(|| {
                let other = self.other_class_ingresses.remove(key)?;
                Some(Object::Ingress(Box::new(other.to_ingress(key))))
            }),
            Kind::IngressClass => self.ingress_classes.remove(key).map(Object::IngressClass),
            Kind::Service => self.services.remove(key).map(Object::Service),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).map(Object::EndpointSlice),
            Kind::Endpoints => self.endpoints.remove(key).map(Object::Endpoints),
            Kind::Secret => {
                let material = self.tls_material.remove(key);
                self.secrets.remove(key).map(|mut o| {
                    if let Some(m) = material {
                        let data = o.data.get_or_insert_with(Default::default);
                        data.insert(TLS_CRT.to_owned(), ByteString(m.cert_pem.clone()));
                        data.insert(TLS_KEY.to_owned(), ByteString(m.key_pem.clone()));
                    }
                    Object::Secret(o)
                })
            }
        }
    }

    /// Removes an object of a kind; returns whether it was there.
    pub fn remove(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        self.changes.record(kind, key);
        match kind {
            Kind::Ingress => {
                let other = self.other_class_ingresses.remove(key).is_some();
                self.ingresses.remove(key).is_some() || other
            }
            Kind::IngressClass => self.ingress_classes.remove(key).is_some(),
            Kind::Service => self.services.remove(key).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            Kind::Endpoints => self.endpoints.remove(key).is_some(),
            Kind::Secret => {
                self.tls_material.remove(key);
                self.secrets.remove(key).is_some()
            }
        }
    }

    /// Replaces every object of a kind at once (a completed relist).
    pub fn replace_kind(&mut self, kind: Kind, objects: Vec<Object>) {
        self.changes.record_all(kind);
        match kind {
            Kind::Ingress => {
                self.ingresses.clear();
                self.other_class_ingresses.clear();
            }
            Kind::IngressClass => self.ingress_classes.clear(),
            Kind::Service => self.services.clear(),
            Kind::EndpointSlice => self.endpoint_slices.clear(),
            Kind::Endpoints => self.endpoints.clear(),
            Kind::Secret => {
                self.secrets.clear();
                self.tls_material.clear();
            }
        }
        for o in objects {
            self.upsert(o);
        }
    }

    fn store_secret(&mut self, key: ObjectKey, mut secret: Box<Secret>) {
        match secret_as_stored(&mut secret) {
            Some(m) => self.tls_material.insert(key.clone(), m),
            None => self.tls_material.remove(&key),
        };
        self.secrets.insert(key, secret);
    }

    /// The `tls.crt` / `tls.key` bytes of a Secret that has both.
    pub(crate) fn tls_material(&self, key: &ObjectKey) -> Option<&Arc<TlsSecret>> {
        self.tls_material.get(key)
    }

    /// Object counts by kind, for logs and metrics.
    pub fn counts(&self) -> [(&'static str, usize); 6] {
        [
            (
                "Ingress",
                self.ingresses.len() + self.other_class_ingresses.len(),
            ),
            ("IngressClass", self.ingress_classes.len()),
            ("Service", self.services.len()),
            ("EndpointSlice", self.endpoint_slices.len()),
            ("Endpoints", self.endpoints.len()),
            ("Secret", self.secrets.len()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn other_classes_ingresses_are_kept_as_class_and_hosts() {
        let doc = |class: &str| {
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": format!("i-{class}"), "namespace": "shop",
                    "labels": {"team": "a"},
                    "annotations": {"kubernetes.io/ingress.class": class, "x/y": "z"}},
                "spec": {"tls": [{"hosts": ["a.example"], "secretName": "s"}],
                    "rules": [{"host": "b.example", "http": {"paths": [{"path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "svc", "port": {"number": 80}}}}]}},
                        {"http": {"paths": []}}]}})
        };
        let mut snap = Snapshot::for_class("mine");
        for class in ["mine", "theirs"] {
            for o in Object::from_manifest(doc(class)).unwrap() {
                assert!(snap.insert(o.clone()));
                assert!(
                    snap.holds(&o),
                    "{class}: stored as the same object would be"
                );
            }
        }
        let whole = &snap.ingresses[&ObjectKey::new("shop", "i-mine")];
        let Object::Ingress(original) = Object::from_manifest(doc("mine")).unwrap().remove(0)
        else {
            panic!("an Ingress");
        };
        assert_eq!(whole, &original);
        let key = ObjectKey::new("shop", "i-theirs");
        assert!(!snap.ingresses.contains_key(&key));
        let other = OtherClassIngress {
            class: "theirs".into(),
            hosts: ["a.example".into(), "b.example".into()].into(),
        };
        assert_eq!(snap.other_class_ingresses.get(&key), Some(&other));
        assert_eq!(snap.counts()[0], ("Ingress", 2));
        // Handed back (a shadowed duplicate) and stored again: the same.
        let back = snap.take(Kind::Ingress, &key).unwrap();
        assert!(snap.other_class_ingresses.is_empty());
        snap.upsert(back);
        assert_eq!(snap.other_class_ingresses.get(&key), Some(&other));
        // A new version naming the served class replaces it whole, and back again.
        let mut now_mine = doc("mine");
        now_mine["metadata"]["name"] = json!("i-theirs");
        snap.upsert(Object::from_manifest(now_mine).unwrap().remove(0));
        assert!(snap.ingresses.contains_key(&key));
        assert!(!snap.other_class_ingresses.contains_key(&key));
        snap.upsert(Object::from_manifest(doc("theirs")).unwrap().remove(0));
        assert!(!snap.ingresses.contains_key(&key));
        assert!(snap.remove(Kind::Ingress, &key));
        assert!(snap.other_class_ingresses.is_empty());
    }

    #[test]
    fn defaults_namespace_and_ignores_other_kinds() {
        let objs = Object::from_manifest(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
            "spec": {"ports": [{"port": 80}]}
        }))
        .unwrap();
        assert_eq!(objs[0].key(), ObjectKey::new("default", "a"));
        let none = Object::from_manifest(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}
        }))
        .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn tls_secret_bytes_are_kept_once_and_handed_back_whole() {
        let doc = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "s", "namespace": "n", "uid": "u1",
                "labels": {"a": "b"}, "annotations": {"cert-manager.io/issuer-name": "x"}},
            "data": {"tls.crt": "Q0VSVA==", "ca.crt": "eA=="}, "stringData": {"tls.key": "KEY"}});
        let obj = Object::from_manifest(doc).unwrap().remove(0);
        let key = ObjectKey::new("n", "s");
        let mut snap = Snapshot::default();
        snap.upsert(obj.clone());
        let m = snap.tls_material(&key).expect("material");
        assert_eq!(
            (m.cert_pem.as_slice(), m.key_pem.as_slice()),
            (&b"CERT"[..], &b"KEY"[..])
        );
        // The object keeps its identity and type; nothing reads the rest (no second copy of
        // the PEM bytes, no other data keys, labels or annotations).
        let stored = &snap.secrets[&key];
        assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(stored.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(stored.data, None);
        assert_eq!(stored.string_data, None);
        assert_eq!(stored.metadata.labels, None);
        assert_eq!(stored.metadata.annotations, None);
        assert!(snap.holds(&obj), "the same Secret is recognised");
        // Taken out, it has its PEM back in `data`.
        let Some(Object::Secret(back)) = snap.take(Kind::Secret, &key) else {
            panic!("taken");
        };
        assert_eq!(back.data.as_ref().unwrap()["tls.key"].0, b"KEY");
        assert_eq!(back.data.as_ref().unwrap()["tls.crt"].0, b"CERT");
        assert!(snap.tls_material(&key).is_none());
        snap.upsert(Object::Secret(back));
        assert!(snap.holds(&obj), "stored again, it is the same Secret");
    }

    #[test]
    fn ingress_class_is_cluster_scoped() {
        let objs = Object::from_manifest(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "c", "namespace": "x"}, "spec": {"controller": "a/b"}
        }))
        .unwrap();
        assert_eq!(objs[0].key(), ObjectKey::new("", "c"));
    }

    #[test]
    fn list_yields_items_and_errors_name_the_problem() {
        let objs = Object::from_manifest(json!({
            "apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e", "namespace": "n"}}
            ]
        }))
        .unwrap();
        assert_eq!(objs.len(), 1);
        assert!(matches!(
            Object::from_manifest(json!({"apiVersion": "v1"})),
            Err(ObjectError::MissingKind)
        ));
        let err = Object::from_manifest(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": "x"}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("Service"), "{err}");
    }
}

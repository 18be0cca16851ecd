//! Ingress status addresses, written by one replica: the holder of a `coordination.k8s.io/v1`
//! Lease per tier and class. Others serve traffic but never write; losing the Lease stops
//! writing. Status is written only on change and cleared from Ingresses this tier stops serving.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use crate::object::{ObjectKey, Snapshot};
use crate::pipeline::SyncObserver;
use crate::translate::Translation;

/// Where the addresses written into Ingress status come from.
#[derive(Clone, Debug)]
pub enum PublishAddresses {
    /// A Service's `spec.externalIPs`, else its `status.loadBalancer.ingress`.
    Service(ObjectKey),
    /// Fixed addresses (IPs or hostnames).
    Static(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct StatusConfig {
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
    pub publish: PublishAddresses,
}

/// An address as status carries it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Address {
    Ip(String),
    Hostname(String),
}

impl Address {
    fn parse(s: &str) -> Self {
        match s.parse::<IpAddr>() {
            Ok(_) => Self::Ip(s.to_owned()),
            Err(_) => Self::Hostname(s.to_owned()),
        }
    }

    fn from_status(i: &IngressLoadBalancerIngress) -> Option<Self> {
        i.ip.clone()
            .map(Self::Ip)
            .or_else(|| i.hostname.clone().map(Self::Hostname))
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Ip(ip) => json!({ "ip": ip }),
            Self::Hostname(h) => json!({ "hostname": h }),
        }
    }
}

/// What the status writer needs from each published snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusView {
    /// Served Ingresses and the addresses their status holds now (persistent: a new view
    /// shares every unchanged Ingress with the last one).
    pub served: imbl::OrdMap<ObjectKey, Vec<Address>>,
    /// The addresses to publish; `None` until the publish Service is known.
    pub desired: Option<Vec<Address>>,
}

fn current_addresses(ing: &Ingress) -> Vec<Address> {
    let mut v: Vec<Address> = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| list.iter().filter_map(Address::from_status).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn desired_addresses(snapshot: &Snapshot, publish: &PublishAddresses) -> Option<Vec<Address>> {
    let mut out = match publish {
        PublishAddresses::Static(list) => list.iter().map(|s| Address::parse(s)).collect(),
        PublishAddresses::Service(key) => {
            let svc = snapshot.services.get(key)?;
            let external: Vec<Address> = svc
                .spec
                .as_ref()
                .and_then(|s| s.external_ips.as_ref())
                .map(|ips| ips.iter().map(|s| Address::parse(s)).collect())
                .unwrap_or_default();
            if external.is_empty() {
                svc.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .map(|list| {
                        list.iter()
                            .filter_map(|i| {
                                i.ip.clone()
                                    .map(Address::Ip)
                                    .or_else(|| i.hostname.clone().map(Address::Hostname))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                external
            }
        }
    };
    out.sort();
    out.dedup();
    Some(out)
}

/// Feeds the status writer from the sync loop.
pub struct StatusObserver {
    publish: PublishAddresses,
    served: imbl::OrdMap<ObjectKey, Vec<Address>>,
    tx: watch::Sender<Arc<StatusView>>,
}

impl SyncObserver for StatusObserver {
    fn observe(&mut self, snapshot: &Snapshot, translation: &Translation) {
        // With a delta only the Ingresses it names are looked at again.
        let mut served = match &translation.delta {
            Some(delta) => {
                let mut served = self.served.clone();
                for k in &delta.ingresses {
                    match snapshot.ingresses.get(k) {
                        Some(i) if translation.served_ingresses.contains(k) => {
                            served.insert(k.clone(), current_addresses(i));
                        }
                        _ => {
                            served.remove(k);
                        }
                    }
                }
                served
            }
            None => imbl::OrdMap::new(),
        };
        if translation.delta.is_none() {
            for k in translation.served_ingresses.iter() {
                if let Some(i) = snapshot.ingresses.get(k) {
                    served.insert(k.clone(), current_addresses(i));
                }
            }
        }
        self.served = served.clone();
        let view = StatusView {
            served,
            desired: desired_addresses(snapshot, &self.publish),
        };
        self.tx.send_if_modified(|old| {
            if **old == view {
                false
            } else {
                *old = Arc::new(view);
                true
            }
        });
    }
}

/// Makes the observer and the receiving end for [`run_status_writer`].
pub fn status_channel(
    publish: PublishAddresses,
) -> (StatusObserver, watch::Receiver<Arc<StatusView>>) {
    let (tx, rx) = watch::channel(Arc::new(StatusView::default()));
    (
        StatusObserver {
            publish,
            served: imbl::OrdMap::new(),
            tx,
        },
        rx,
    )
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One attempt to take or keep the Lease. `Ok(true)` means we hold it now.
async fn acquire_or_renew(api: &Api<Lease>, cfg: &StatusConfig) -> Result<bool, kube::Error> {
    let duration_s = cfg.lease_duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&cfg.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.lease_name.clone()),
                namespace: Some(cfg.lease_namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let mine = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
    if !mine {
        let held_for = spec
            .lease_duration_seconds
            .map_or(cfg.lease_duration, |s| Duration::from_secs(s.max(0) as u64));
        let expired = match &spec.renew_time {
            Some(t) => {
                let age = Timestamp::now().duration_since(t.0);
                age.as_secs() as f64 + f64::from(age.subsec_nanos()) / 1e9 > held_for.as_secs_f64()
            }
            None => true,
        };
        if spec.holder_identity.is_some() && !expired {
            return Ok(false);
        }
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration_s);
    // The resourceVersion in `lease` makes this a compare-and-swap: a 409 means someone else won.
    match api
        .replace(&cfg.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn patch_status(
    api: &Api<Ingress>,
    key: &ObjectKey,
    addresses: &[Address],
) -> Result<(), kube::Error> {
    let api = Api::<Ingress>::namespaced(api.clone().into_client(), &key.namespace);
    let ingress: Vec<_> = addresses.iter().map(Address::to_json).collect();
    let body = if ingress.is_empty() {
        json!({ "status": { "loadBalancer": { "ingress": null } } })
    } else {
        json!({ "status": { "loadBalancer": { "ingress": ingress } } })
    };
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
}

/// Runs leader election and writes status while leader. Never returns.
pub async fn run_status_writer(
    client: Client,
    cfg: StatusConfig,
    mut view: watch::Receiver<Arc<StatusView>>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.lease_namespace);
    let ingresses: Api<Ingress> = Api::all(client);
    let mut leader = false;
    let mut last_renewed = tokio::time::Instant::now();
    // What this leader term has written, so unchanged status is not rewritten and Ingresses we
    // stop serving get cleared.
    let mut written: BTreeMap<ObjectKey, Vec<Address>> = BTreeMap::new();
    let mut renew_due = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= renew_due {
            renew_due = tokio::time::Instant::now() + cfg.renew_interval;
            match acquire_or_renew(&leases, &cfg).await {
                Ok(now_leader) => {
                    if now_leader != leader {
                        tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, leader = now_leader,
                            "leadership changed");
                        written.clear();
                    }
                    leader = now_leader;
                    if leader {
                        last_renewed = tokio::time::Instant::now();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %cfg.lease_name, "lease renewal failed");
                    // Without a renewal for a whole lease duration another replica may take
                    // over: stop writing before that can happen.
                    if leader && last_renewed.elapsed() >= cfg.lease_duration.mul_f32(0.8) {
                        tracing::info!(identity = %cfg.identity, "leadership lost");
                        leader = false;
                        written.clear();
                    }
                }
            }
        }
        if leader {
            let v = view.borrow_and_update().clone();
            if let Some(desired) = &v.desired {
                for (key, current) in &v.served {
                    let known = written.get(key).unwrap_or(current);
                    if known != desired || current != desired {
                        match patch_status(&ingresses, key, desired).await {
                            Ok(()) => {
                                tracing::info!(ingress = %key, addresses = ?desired, "status updated");
                                written.insert(key.clone(), desired.clone());
                            }
                            Err(e) => {
                                tracing::warn!(ingress = %key, error = %e, "status update failed")
                            }
                        }
                    } else {
                        written.insert(key.clone(), desired.clone());
                    }
                }
            }
            let served: BTreeSet<&ObjectKey> = v.served.keys().collect();
            let gone: Vec<ObjectKey> = written
                .keys()
                .filter(|k| !served.contains(k))
                .cloned()
                .collect();
            for key in gone {
                match patch_status(&ingresses, &key, &[]).await {
                    Ok(()) => tracing::info!(ingress = %key, "status cleared: no longer served"),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => tracing::warn!(ingress = %key, error = %e, "status clear failed"),
                }
                written.remove(&key);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(renew_due) => {}
            changed = view.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Object;
    use serde_json::json;

    #[test]
    fn publish_service_external_ips_then_load_balancer() {
        let mut snap = Snapshot::default();
        for o in Object::from_manifest(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "edge", "namespace": "ing"},
            "spec": {"externalIPs": ["192.0.2.20", "192.0.2.10"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}))
        .unwrap()
        {
            snap.insert(o);
        }
        let key = ObjectKey::new("ing", "edge");
        assert_eq!(
            desired_addresses(&snap, &PublishAddresses::Service(key.clone())),
            Some(vec![
                Address::Ip("192.0.2.10".into()),
                Address::Ip("192.0.2.20".into())
            ])
        );
        snap.services
            .get_mut(&key)
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .external_ips = None;
        assert_eq!(
            desired_addresses(&snap, &PublishAddresses::Service(key)),
            Some(vec![Address::Ip("198.51.100.1".into())])
        );
        assert_eq!(
            desired_addresses(&snap, &PublishAddresses::Service(ObjectKey::new("x", "y"))),
            None
        );
        assert_eq!(
            desired_addresses(
                &snap,
                &PublishAddresses::Static(vec!["lb.example.com".into()])
            ),
            Some(vec![Address::Hostname("lb.example.com".into())])
        );
    }
}

//! Kubernetes Events for rejected Ingresses and Secrets (and Services with invalid weight
//! annotations), so `kubectl describe` shows why an object is not served as written. Only problems new since the last rebuild are sent, and each
//! (object, reason) at most once per [`EVENT_INTERVAL`], so a broken object cannot flood the API.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::object::Snapshot;
use crate::pipeline::SyncObserver;
use crate::problem::Problem;
use crate::translate::Translation;

pub const EVENT_INTERVAL: Duration = Duration::from_secs(600);

pub struct EventObserver {
    last: BTreeSet<Problem>,
    tx: mpsc::Sender<(ObjectReference, Problem)>,
}

impl SyncObserver for EventObserver {
    fn observe(&mut self, snapshot: &Snapshot, translation: &Translation) {
        let now: BTreeSet<Problem> = translation.problems.iter().cloned().collect();
        for p in now.difference(&self.last) {
            let key = crate::ObjectKey::new(p.namespace.as_str(), p.name.as_str());
            let (api_version, meta) = match p.kind {
                "Ingress" => (
                    "networking.k8s.io/v1",
                    snapshot.ingresses.get(&key).map(|o| &o.metadata),
                ),
                "Secret" => ("v1", snapshot.secrets.get(&key).map(|o| &o.metadata)),
                "Service" => ("v1", snapshot.services.get(&key).map(|o| &o.metadata)),
                _ => continue,
            };
            let reference = ObjectReference {
                api_version: Some(api_version.to_owned()),
                kind: Some(p.kind.to_owned()),
                namespace: Some(p.namespace.clone()),
                name: Some(p.name.clone()),
                uid: meta.and_then(|m| m.uid.clone()),
                resource_version: meta.and_then(|m| m.resource_version.clone()),
                ..Default::default()
            };
            // A full queue drops the event: Events are advisory, the log line stays.
            let _ = self.tx.try_send((reference, p.clone()));
        }
        self.last = now;
    }
}

/// Makes the observer and runs the sender on the current runtime.
pub fn spawn_event_reporter(client: Client, controller: String, instance: String) -> EventObserver {
    let (tx, mut rx) = mpsc::channel::<(ObjectReference, Problem)>(256);
    tokio::spawn(async move {
        let recorder = Recorder::new(
            client,
            Reporter {
                controller,
                instance: Some(instance),
            },
        );
        let mut sent: HashMap<(String, String, String, &'static str), Instant> = HashMap::new();
        while let Some((reference, p)) = rx.recv().await {
            let key = (
                p.kind.to_owned(),
                p.namespace.clone(),
                p.name.clone(),
                p.reason.as_str(),
            );
            if sent.get(&key).is_some_and(|t| t.elapsed() < EVENT_INTERVAL) {
                continue;
            }
            sent.insert(key, Instant::now());
            let mut note = format!("{}: {}", p.reason.as_str(), p.detail);
            note.truncate(1000);
            let ev = Event {
                type_: EventType::Warning,
                reason: "Rejected".to_owned(),
                note: Some(note),
                action: "Translate".to_owned(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::warn!(error = %e, object = %format!("{}/{}", p.namespace, p.name), "cannot publish Event");
            }
        }
    });
    EventObserver {
        last: BTreeSet::new(),
        tx,
    }
}

//! The one pipeline every source feeds: a changed [`Snapshot`] is translated, the problems that
//! appeared or went away are logged, observers (status writer, Events) see the result, and the
//! tier's [`ConfigSink`] publishes it. Sources depend on this module, never the other way round.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use crate::object::Snapshot;
use crate::problem::Problem;
use crate::translate::{TierSettings, Translation, Translator};

/// Where a tier publishes each new translation (one atomic swap, off the hot path).
pub trait ConfigSink: Send + Sync + 'static {
    /// Called before observers see a translation: a tier may add problems it finds itself
    /// (the edge: certificates that do not parse), so they are logged, counted and reported.
    fn prepare(&self, _translation: &mut Translation) {}

    /// Called with every translation; the first call means the first full load of the source
    /// is published.
    fn apply(&self, translation: Translation);
}

/// Sees every published snapshot and its translation: status writing and Events hang off this.
pub trait SyncObserver: Send + 'static {
    fn observe(&mut self, snapshot: &Snapshot, translation: &Translation);
}

/// Translates a snapshot, reports what changed among the problems, lets observers see it and
/// hands it to the sink. Shared by every source.
pub(crate) struct Rebuilder {
    translator: Translator,
    sink: Arc<dyn ConfigSink>,
    observers: Vec<Box<dyn SyncObserver>>,
    reported: BTreeSet<Problem>,
}

impl Rebuilder {
    pub(crate) fn new(
        settings: TierSettings,
        sink: Arc<dyn ConfigSink>,
        observers: Vec<Box<dyn SyncObserver>>,
    ) -> Self {
        Self {
            translator: Translator::new(settings),
            sink,
            observers,
            reported: BTreeSet::new(),
        }
    }

    pub(crate) fn rebuild(&mut self, snapshot: &mut Snapshot) {
        self.rebuild_with(snapshot, &[]);
    }

    /// Rebuilds with problems the source found itself (files it could not read), so they are
    /// counted with the rest.
    pub(crate) fn rebuild_with(&mut self, snapshot: &mut Snapshot, source_problems: &[Problem]) {
        let started = Instant::now();
        // Re-translates only what changed since the last rebuild of this snapshot.
        let mut translation = self.translator.update(snapshot);
        if !source_problems.is_empty() {
            translation.problems.extend_from_slice(source_problems);
            translation.problems.sort();
            translation.problems.dedup();
        }
        self.sink.prepare(&mut translation);
        report_problems(&mut self.reported, &translation.problems);
        for o in self.observers.iter_mut() {
            o.observe(snapshot, &translation);
        }
        tracing::info!(
            routes = translation.routes.route_count(),
            backends = translation.endpoints.0.len(),
            problems = translation.problems.len(),
            ingresses = snapshot.ingresses.len() + snapshot.other_class_ingresses.len(),
            took_us = started.elapsed().as_micros() as u64,
            "config rebuilt"
        );
        self.sink.apply(translation);
    }
}

/// Logs problems that are new since the last translation, and those that went away.
fn report_problems(reported: &mut BTreeSet<Problem>, current: &[Problem]) {
    let now: BTreeSet<Problem> = current.iter().cloned().collect();
    // A rejected manifest file is logged by the source with its file and document fields.
    for p in now
        .difference(reported)
        .filter(|p| p.kind != "ManifestFile")
    {
        tracing::warn!(
            kind = p.kind,
            namespace = %p.namespace,
            name = %p.name,
            reason = p.reason.as_str(),
            detail = %p.detail,
            "object rejected"
        );
    }
    for p in reported.difference(&now) {
        tracing::info!(kind = p.kind, namespace = %p.namespace, name = %p.name, reason = p.reason.as_str(), "problem resolved");
    }
    *reported = now;
}

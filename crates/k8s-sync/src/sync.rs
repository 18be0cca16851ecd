//! Drives a source: on every change, translate and hand the result to the tier's sink.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;
use tokio::sync::mpsc;

use crate::api::SyncObserver;
use crate::manifest::{FileProblem, ManifestDir};
use crate::object::Snapshot;
use crate::problem::{Problem, ProblemReason};
use crate::translate::{TierSettings, Translation, translate};

/// Where a tier publishes each new translation (one atomic swap, off the hot path).
pub trait ConfigSink: Send + Sync + 'static {
    /// Called before observers see a translation: a tier may add problems it finds itself
    /// (the edge: certificates that do not parse), so they are logged, counted and reported.
    fn prepare(&self, _translation: &mut Translation) {}

    /// Called with every translation; the first call means the first full load of the source
    /// is published.
    fn apply(&self, translation: Translation);
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot read manifest directory {dir}: {source}")]
    Read {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch manifest directory {dir}: {source}")]
    Watch { dir: PathBuf, source: notify::Error },
}

/// Translates a snapshot, reports what changed among the problems, lets observers see it and
/// hands it to the sink. Shared by every source.
pub(crate) struct Rebuilder {
    settings: TierSettings,
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
            settings,
            sink,
            observers,
            reported: BTreeSet::new(),
        }
    }

    pub(crate) fn rebuild(&mut self, snapshot: &Snapshot) {
        self.rebuild_with(snapshot, &[]);
    }

    /// Rebuilds with problems the source found itself (files it could not read), so they are
    /// counted with the rest.
    pub(crate) fn rebuild_with(&mut self, snapshot: &Snapshot, source_problems: &[Problem]) {
        let started = Instant::now();
        let mut translation = translate(snapshot, &self.settings);
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
            ingresses = snapshot.ingresses.len(),
            took_us = started.elapsed().as_micros() as u64,
            "config rebuilt"
        );
        self.sink.apply(translation);
    }
}

/// Events are coalesced for this long, so an editor's write-rename-chmod is one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Rescan even without a file event: catches what inotify misses (e.g. some volume mounts).
const POLL: Duration = Duration::from_millis(1000);
/// While a changed file is settling (see [`crate::manifest::SETTLE`]), rescan this often.
const SETTLE_TICK: Duration = Duration::from_millis(25);

/// Watches a manifest directory until the task is dropped. Fails only if the directory cannot be
/// read at start; later read errors are logged and the last good config keeps serving.
pub async fn run_manifest_sync(
    dir: PathBuf,
    settings: TierSettings,
    sink: Arc<dyn ConfigSink>,
) -> Result<(), SyncError> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_res| {
        // A full channel already means "rescan soon".
        let _ = tx.try_send(());
    })
    .map_err(|source| SyncError::Watch {
        dir: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(|source| SyncError::Watch {
            dir: dir.clone(),
            source,
        })?;

    let mut source = ManifestDir::new(dir.clone());
    let mut rebuilder = Rebuilder::new(settings, sink, Vec::new());
    let mut first = true;
    let mut file_problems = Vec::new();
    loop {
        let mut settling = false;
        match source.rescan() {
            Ok(rescan) => {
                settling = rescan.settling;
                for p in &rescan.new_problems {
                    tracing::warn!(
                        file = %p.file.display(),
                        document = p.document,
                        reason = %p.reason,
                        "manifest file rejected; its last good objects stay in force"
                    );
                }
                // Rejected files count among the config problems (metric, "problem resolved").
                let now_problems: Vec<Problem> = source.problems().map(file_problem).collect();
                if rescan.changed || first || now_problems != file_problems {
                    file_problems = now_problems;
                    let (snapshot, duplicates) = source.snapshot();
                    for d in &duplicates {
                        tracing::warn!(file = %d.file.display(), reason = %d.reason, "duplicate object");
                    }
                    rebuilder.rebuild_with(&snapshot, &file_problems);
                    first = false;
                }
            }
            Err(source_err) if first => {
                return Err(SyncError::Read {
                    dir,
                    source: source_err,
                });
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "manifest directory unreadable; keeping last good config");
            }
        }
        // Wait for an event or the poll tick (a short tick while a file settles), then let a
        // burst settle.
        let _ = tokio::time::timeout(if settling { SETTLE_TICK } else { POLL }, rx.recv()).await;
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
    }
}

/// A manifest file that could not be read, as a config problem.
fn file_problem(p: &FileProblem) -> Problem {
    Problem {
        kind: "ManifestFile",
        namespace: String::new(),
        name: p.file.display().to_string(),
        reason: ProblemReason::ManifestRejected,
        detail: match p.document {
            Some(d) => format!("document {d}: {}", p.reason),
            None => p.reason.clone(),
        },
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

//! The manifest-directory source: watches a directory (notify + a 1 s poll), keeps each file's
//! last good objects ([`ManifestDir`]) and feeds every change to the pipeline.

mod dir;
mod flow_depth;

pub use dir::{FileProblem, ManifestDir, Rescan};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;

use crate::pipeline::{ConfigSink, Rebuilder};
use crate::problem::{Problem, ProblemReason};
use crate::translate::TierSettings;

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

/// Events are coalesced for this long, so an editor's write-rename-chmod is one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Rescan even without a file event: catches what inotify misses (e.g. some volume mounts).
const POLL: Duration = Duration::from_millis(1000);
/// While a changed file is settling (see [`dir::SETTLE`]), rescan this often.
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
                    let (mut snapshot, duplicates) = source.snapshot();
                    for d in &duplicates {
                        tracing::warn!(file = %d.file.display(), reason = %d.reason, "duplicate object");
                    }
                    rebuilder.rebuild_with(&mut snapshot, &file_problems);
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

//! The manifest-directory source: watches a directory (file events, and a whole walk every
//! second), keeps each file's last good objects ([`ManifestDir`]) in one snapshot changed in
//! place, and feeds every change to the pipeline.

mod dir;
mod flow_depth;

pub use dir::{FileProblem, ManifestDir, Rescan, Walked};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Events are coalesced for this long, so an editor's write-rename-chmod is usually one rebuild
/// (each rebuild costs only what changed, so a short window is enough).
const DEBOUNCE: Duration = Duration::from_millis(5);
/// Walk the whole directory even without a file event: catches what inotify misses (e.g. some
/// volume mounts). The walk runs on a blocking thread; only its differences are applied.
const POLL: Duration = Duration::from_millis(1000);
/// A large directory is walked less often: the time between two walks is at least this many
/// times the last walk's duration (20,000 files take ~0.1 s to walk: one walk per 2 s), so the
/// safety net costs at most ~5 % of a CPU whatever the size.
const POLL_PER_WALK_TIME: u32 = 20;
/// While a changed file is settling (see [`dir::SETTLE`]), look at it again this often.
const SETTLE_TICK: Duration = Duration::from_millis(25);

/// Paths file events named since the last look, and whether a whole walk is needed.
#[derive(Debug, Default)]
struct Pending {
    /// Path → whether an event said it is complete (moved in: written aside, then renamed).
    paths: HashMap<PathBuf, bool>,
    walk: bool,
}

impl Pending {
    fn record(&mut self, res: notify::Result<notify::Event>) {
        use notify::EventKind as K;
        use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
        let event = match res {
            Ok(e) if !e.need_rescan() => e,
            _ => {
                self.walk = true;
                return;
            }
        };
        let complete = match event.kind {
            // A file closed after writing may still be one of several writes in place (a
            // truncate, then the content): it settles like any other change.
            K::Access(AccessKind::Close(AccessMode::Write)) => false,
            // Our own reads, and other readers.
            K::Access(_) => return,
            K::Modify(ModifyKind::Name(RenameMode::To)) => true,
            K::Modify(ModifyKind::Name(RenameMode::Both)) => {
                // [from, to]: the source is gone, the destination complete.
                let mut paths = event.paths.into_iter();
                if let Some(from) = paths.next() {
                    self.paths.entry(from).or_insert(false);
                }
                for to in paths {
                    self.paths.insert(to, true);
                }
                return;
            }
            K::Create(_) | K::Remove(_) | K::Modify(_) => false,
            K::Any | K::Other => {
                self.walk = true;
                return;
            }
        };
        for path in event.paths {
            *self.paths.entry(path).or_insert(complete) |= complete;
        }
    }
}

/// Watches a manifest directory until the task is dropped. Fails only if the directory cannot be
/// read at start; later read errors are logged and the last good config keeps serving.
///
/// A file event is answered by looking at the paths it names only (a file renamed in is read
/// at once, one written in place once it has settled); a whole walk of the
/// directory (on a blocking thread) runs every [`POLL`] (less often for a directory that takes
/// long to walk, see [`POLL_PER_WALK_TIME`]) and whenever an event cannot be
/// answered path by path (a directory, a hidden entry such as a ConfigMap volume's `..data`
/// swap, an overflowed event queue). So a change costs the same however many files there are.
pub async fn run_manifest_sync(
    dir: PathBuf,
    settings: TierSettings,
    sink: Arc<dyn ConfigSink>,
) -> Result<(), SyncError> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let pending = Arc::new(Mutex::new(Pending::default()));
    let events = pending.clone();
    let mut watcher = notify::recommended_watcher(move |res| {
        events.lock().unwrap_or_else(|p| p.into_inner()).record(res);
        // A full channel already means "look soon".
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

    let mut source = ManifestDir::new(dir.clone()).serving_class(&settings.class);
    let first = source.rescan().map_err(|source| SyncError::Read {
        dir: dir.clone(),
        source,
    })?;
    let mut feed = Feed {
        rebuilder: Rebuilder::new(settings, sink, Vec::new()),
        file_problems: Vec::new(),
        reported_duplicates: Vec::new(),
    };
    feed.apply(&mut source, first, true);

    let mut walk: Option<tokio::task::JoinHandle<std::io::Result<Walked>>> = None;
    let mut walk_started = Instant::now();
    let mut next_walk = Instant::now() + POLL;
    loop {
        let settling = source.settling_paths();
        // While a walk is in flight its completion is the next event: a walk already due must
        // not wake the loop again at once (it would spin until the walk ends).
        let due = if walk.is_some() {
            Instant::now() + POLL
        } else {
            next_walk
        };
        let timer = if settling.is_empty() {
            due
        } else {
            due.min(Instant::now() + SETTLE_TICK)
        };
        let walk_done = async {
            match walk.as_mut() {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        };
        let mut want_walk = false;
        tokio::select! {
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let taken = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
                let looked = (!taken.walk)
                    .then(|| source.rescan_paths(taken.paths.iter().map(|(p, c)| (p.as_path(), *c))))
                    .flatten();
                match looked {
                    Some(rescan) => feed.apply(&mut source, rescan, false),
                    None => want_walk = true,
                }
            }
            done = walk_done => {
                walk = None;
                next_walk = Instant::now() + POLL.max(walk_started.elapsed() * POLL_PER_WALK_TIME);
                match done {
                    Ok(Ok(walked)) => {
                        let applying = Instant::now();
                        let rescan = source.apply_walk(walked);
                        tracing::debug!(took_us = applying.elapsed().as_micros() as u64,
                            changed = rescan.changed, "directory walk applied");
                        feed.apply(&mut source, rescan, false);
                    }
                    Ok(Err(e)) => tracing::error!(dir = %dir.display(), error = %e,
                        "manifest directory unreadable; keeping last good config"),
                    Err(e) => tracing::error!(dir = %dir.display(), error = %e,
                        "manifest directory walk failed; keeping last good config"),
                }
            }
            _ = tokio::time::sleep_until(timer.into()) => {
                if !settling.is_empty() {
                    match source.rescan_paths(settling.iter().map(|p| (p.as_path(), false))) {
                        Some(rescan) => feed.apply(&mut source, rescan, false),
                        None => want_walk = true,
                    }
                }
                want_walk |= Instant::now() >= next_walk;
            }
        }
        if want_walk && walk.is_none() {
            let root = dir.clone();
            walk_started = Instant::now();
            walk = Some(tokio::task::spawn_blocking(move || Walked::read(&root)));
        }
    }
}

/// Hands what a look at the directory found to the pipeline.
struct Feed {
    rebuilder: Rebuilder,
    file_problems: Vec<Problem>,
    reported_duplicates: Vec<dir::FileProblem>,
}

impl Feed {
    fn apply(&mut self, source: &mut ManifestDir, rescan: Rescan, first: bool) {
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
        if !(rescan.changed || first || now_problems != self.file_problems) {
            return;
        }
        self.file_problems = now_problems;
        let duplicates = source.duplicates();
        if duplicates != self.reported_duplicates {
            for d in duplicates
                .iter()
                .filter(|d| !self.reported_duplicates.contains(d))
            {
                tracing::warn!(file = %d.file.display(), reason = %d.reason, "duplicate object");
            }
            self.reported_duplicates = duplicates;
        }
        self.rebuilder
            .rebuild_with(source.snapshot_mut(), &self.file_problems);
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

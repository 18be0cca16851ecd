//! The manifest-directory source: every `*.yaml`, `*.yml` and `*.json` file under a directory,
//! multi-document, re-read when it changes. A file that fails to parse is reported and its last
//! good objects stay in force, so one bad edit never drops routes.
//!
//! The directory is input an operator (or whoever can write to a volume) controls, so reading it
//! is bounded: files larger than [`MAX_FILE_BYTES`], with more than [`MAX_TOKENS`] tokens or
//! nesting deeper than [`MAX_NESTING`] are rejected before the YAML parser sees them, duplicate
//! mapping keys reject a document, the walk never follows a symlink loop nor descends more than
//! [`MAX_DIR_DEPTH`] directories, and a file is read only once it has stopped changing (see
//! [`SETTLE`]), so a file rewritten in place is not read half-written.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::flow_depth::{Exceeded, prescan};
use crate::object::{Kind, Object, ObjectKey, Snapshot};

/// Largest manifest file read, in bytes (16 MiB). The API server refuses requests over 3 MiB and
/// etcd objects over 1.5 MiB, so this holds several thousand ordinary objects per file; a larger
/// file is rejected without being read (its last good objects stay in force).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Most YAML tokens (scalars, indicators, brackets) read in one file: one million, about 3.5 MiB
/// of ordinary manifests (some 20,000 Services). The parser holds every event of a document in
/// memory, about 100 bytes each, so this bounds one file's parse however its bytes are spent
/// (measured with a debug build: 3.5 MB of Services in 1.5 s and 130 MB RSS; 850 KB of `[[1]],`
/// in 1 s and 220 MB) instead of 16 MiB of brackets taking 17 s and 1.6 GB. More objects can be
/// split over several files.
pub const MAX_TOKENS: usize = 1_000_000;

/// Deepest nesting of mappings and sequences accepted in a document, and of flow collections
/// (`[ ]`, `{ }`, i.e. all of JSON) in a file. The objects tandem reads are about 10 levels deep
/// and even large CustomResourceDefinition schemas stay under 50; the YAML scanner's time grows
/// with the square of flow nesting, so the text is checked before parsing (25,000 levels would
/// otherwise take seconds during which no other change is applied).
pub const MAX_NESTING: usize = 64;

/// Deepest directory level read below the manifest directory (symlinked directories count).
pub const MAX_DIR_DEPTH: usize = 32;

/// A changed file is read once its size, mtime and inode have stayed the same for this long: a
/// file rewritten in place (truncate, then write) is not read half-written. The first scan at
/// start-up reads every file at once.
pub const SETTLE: Duration = Duration::from_millis(100);

/// A file that became empty while it had objects keeps them until it has stayed empty this long:
/// the gap between a truncate and the first write can be longer than [`SETTLE`] for a slow writer.
pub const EMPTY_SETTLE: Duration = Duration::from_millis(500);

/// A file (or one document of it) that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileProblem {
    pub file: PathBuf,
    /// Zero-based document index within the file, when the problem is in one document.
    pub document: Option<usize>,
    pub reason: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some(d) => write!(f, "{} document {}: {}", self.file.display(), d, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// An object's identity across files.
type ObjectId = (Kind, ObjectKey);

#[derive(Debug)]
struct FileState {
    stamp: FileStamp,
    /// When this version was seen.
    read_at: Instant,
    /// The objects of the last good read (each once, in document order); they stay in force
    /// while the file is broken.
    objects: Vec<ObjectId>,
    /// Those of its objects an earlier file also defines: not in force, kept to take over if
    /// the earlier file lets go of them.
    shadowed: HashMap<ObjectId, Object>,
    problem: Option<FileProblem>,
}

impl FileState {
    fn new(stamp: FileStamp) -> Self {
        Self {
            stamp,
            read_at: Instant::now(),
            objects: Vec::new(),
            shadowed: HashMap::new(),
            problem: None,
        }
    }
}

/// The result of one rescan.
#[derive(Debug, Default)]
pub struct Rescan {
    /// Whether any file's objects were added, changed or removed.
    pub changed: bool,
    /// Problems found in files read (or in the directory walk) during this rescan, each reported
    /// once while it lasts.
    pub new_problems: Vec<FileProblem>,
    /// Some changed file is still settling: rescan again after a short tick, not a full poll.
    pub settling: bool,
}

/// A directory of manifests, the last good objects of each file in it, and the one snapshot of
/// the objects in force, changed in place (so the translator sees only what changed).
#[derive(Debug)]
pub struct ManifestDir {
    root: PathBuf,
    /// Paths are shared with `defined_in` (one allocation per file).
    files: BTreeMap<Arc<Path>, FileState>,
    snapshot: Snapshot,
    /// The files defining each object, in path order: the first file's object is in force.
    defined_in: HashMap<ObjectId, Owners>,
    /// Objects defined by more than one file.
    duplicated: BTreeSet<ObjectId>,
    /// Objects a file defines twice (the first stays), by file.
    repeated: BTreeMap<PathBuf, Vec<FileProblem>>,
    /// How many files show each version read, so content renamed or linked in is recognised.
    stamps: HashMap<FileStamp, usize>,
    /// Changed files not read yet: the stamp seen and since when it has not changed.
    settling: BTreeMap<PathBuf, (FileStamp, Instant)>,
    /// Problems of the directory walk (symlink loops, too deep), as of the last rescan.
    walk_problems: BTreeSet<FileProblem>,
    scanned: bool,
    settle: Duration,
    empty_settle: Duration,
}

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            snapshot: Snapshot::default(),
            defined_in: HashMap::new(),
            duplicated: BTreeSet::new(),
            repeated: BTreeMap::new(),
            stamps: HashMap::new(),
            settling: BTreeMap::new(),
            walk_problems: BTreeSet::new(),
            scanned: false,
            settle: SETTLE,
            empty_settle: EMPTY_SETTLE,
        }
    }

    /// For a process serving `class`: Ingresses of other classes are kept lean (see
    /// [`Snapshot::for_class`]). Call before the first rescan.
    pub fn serving_class(mut self, class: &str) -> Self {
        self.snapshot = Snapshot::for_class(class);
        self
    }

    /// Reads changed files at once, without waiting for them to settle.
    #[cfg(test)]
    fn without_settling(mut self) -> Self {
        self.settle = Duration::ZERO;
        self.empty_settle = Duration::ZERO;
        self
    }

    /// Walks the whole directory, then re-reads files whose stamp changed (once they have
    /// settled) and forgets deleted ones.
    pub fn rescan(&mut self) -> std::io::Result<Rescan> {
        let walked = Walked::read(&self.root)?;
        Ok(self.apply_walk(walked))
    }

    /// Applies a walk of the directory made by [`Walked::read`] (possibly on another thread):
    /// files whose stamp differs from what was read are read again, files not found are
    /// forgotten.
    pub fn apply_walk(&mut self, walked: Walked) -> Rescan {
        let Walked {
            files: found,
            problems: walk_problems,
            started,
        } = walked;
        let mut out = Rescan::default();
        out.new_problems
            .extend(walk_problems.difference(&self.walk_problems).cloned());
        self.walk_problems = walk_problems;
        // A walk made on another thread may be older than what file events have shown since:
        // a file read after the walk started is newer than the walk's view of it. Both maps
        // are in path order, so one pass over them finds what differs (looking each path up
        // would cost a path comparison per tree level per file: ~0.1 s at 20,000 files).
        let mut gone: Vec<PathBuf> = Vec::new();
        let mut differ: Vec<(PathBuf, FileStamp)> = Vec::new();
        {
            let mut known = self.files.iter().peekable();
            let mut seen = found.iter().peekable();
            loop {
                let order = match (known.peek(), seen.peek()) {
                    (None, None) => break,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some((k, _)), Some((f, _))) => (***k).cmp(f.as_path()),
                };
                match order {
                    std::cmp::Ordering::Less => {
                        if let Some((path, state)) = known.next()
                            && state.read_at < started
                        {
                            gone.push(path.to_path_buf());
                        }
                    }
                    std::cmp::Ordering::Greater => {
                        if let Some((path, stamp)) = seen.next() {
                            differ.push((path.clone(), *stamp));
                        }
                    }
                    std::cmp::Ordering::Equal => {
                        if let (Some((path, state)), Some((_, stamp))) = (known.next(), seen.next())
                            && state.stamp != *stamp
                            && state.read_at < started
                        {
                            differ.push((path.to_path_buf(), *stamp));
                        }
                    }
                }
            }
        }
        self.settling.retain(|path, _| found.contains_key(path));
        // Files found first: content renamed from a file now gone is still recognised.
        for (path, stamp) in differ {
            self.visit(path, stamp, false, &mut out);
        }
        for path in &gone {
            self.forget_file(path);
        }
        out.changed |= !gone.is_empty();
        self.scanned = true;
        out
    }

    /// Looks at the given paths only (each changed, by a file event): `complete` ones were
    /// moved in (written aside, then renamed), so they are read without waiting to settle. Returns
    /// `None` when a path is not a plain manifest file directly in the directory, nor one
    /// already known: then only a whole walk gives the right answer.
    pub fn rescan_paths<'a>(
        &mut self,
        paths: impl IntoIterator<Item = (&'a Path, bool)>,
    ) -> Option<Rescan> {
        let mut out = Rescan::default();
        let mut checked = Vec::new();
        for (path, complete) in paths {
            let known = self.files.contains_key(path) || self.settling.contains_key(path);
            let plain = path.parent() == Some(self.root.as_path())
                && is_manifest(path)
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !(known || plain) {
                return None;
            }
            // Follows a symlink, like the walk; a directory needs the walk.
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() => checked.push((path, Some(stamp_of(&meta)), complete)),
                Ok(_) => return None,
                Err(_) => checked.push((path, None, complete)),
            }
        }
        for (path, stamp, complete) in checked {
            match stamp {
                Some(stamp) => self.visit(path.to_owned(), stamp, complete, &mut out),
                None => {
                    self.settling.remove(path);
                    if self.files.contains_key(path) {
                        self.forget_file(path);
                        out.changed = true;
                    }
                }
            }
        }
        Some(out)
    }

    /// Paths waiting to settle, to look at again after a short tick.
    pub fn settling_paths(&self) -> Vec<PathBuf> {
        self.settling.keys().cloned().collect()
    }

    /// Reads a file seen with `stamp` unless that version was read already; a changed file is
    /// read only once it has settled, unless it is `complete` or shows content already read.
    fn visit(&mut self, path: PathBuf, stamp: FileStamp, complete: bool, out: &mut Rescan) {
        let previous = self.files.get(path.as_path());
        if previous.is_some_and(|s| s.stamp == stamp) {
            self.settling.remove(&path);
            return;
        }
        // A path now naming another inode was replaced whole (written aside, then renamed
        // over: editors, kubelet's volume swaps, `mv`): nothing to wait for. Nor for a version
        // already read under another path (a rename or a hard link of settled content).
        let replaced = previous.is_some_and(|s| s.stamp.inode != stamp.inode);
        let known = self.stamps.contains_key(&stamp);
        if self.scanned && !complete && !known && !replaced {
            // Read a changed file only once it has stopped changing.
            let had_objects = previous.is_some_and(|s| !s.objects.is_empty());
            let wait = if stamp.len == 0 && had_objects {
                self.empty_settle
            } else {
                self.settle
            };
            let now = Instant::now();
            let since = match self.settling.get(&path) {
                Some((seen, since)) if *seen == stamp => *since,
                _ => {
                    self.settling.insert(path.clone(), (stamp, now));
                    now
                }
            };
            if now.duration_since(since) < wait {
                out.settling = true;
                return;
            }
        }
        let parsed = read_manifest(&path, stamp.len);
        // Changed while being read: read it again once it settles.
        if self.scanned && file_stamp(&path) != Some(stamp) {
            self.settling.remove(&path);
            out.settling = true;
            return;
        }
        self.settling.remove(&path);
        self.set_stamp(&path, stamp);
        match parsed {
            Ok(objects) => {
                if let Some(state) = self.files.get_mut(path.as_path()) {
                    state.problem = None;
                }
                self.set_file_objects(&path, objects);
                out.changed = true;
            }
            Err(problem) => {
                // The objects of the last good read, if any, stay in force.
                out.new_problems.push(problem.clone());
                if let Some(state) = self.files.get_mut(path.as_path()) {
                    state.problem = Some(problem);
                }
            }
        }
    }

    /// Records the version of a file read now (adding the file if new).
    fn set_stamp(&mut self, path: &Path, stamp: FileStamp) {
        if !self.files.contains_key(path) {
            self.files.insert(Arc::from(path), FileState::new(stamp));
        }
        let Some(state) = self.files.get_mut(path) else {
            return;
        };
        state.read_at = Instant::now();
        let old = std::mem::replace(&mut state.stamp, stamp);
        if old != stamp || !self.stamps.contains_key(&stamp) {
            forget_stamp(&mut self.stamps, old);
            *self.stamps.entry(stamp).or_default() += 1;
        }
    }

    /// Files that are currently broken (their last good objects are in force), and problems of
    /// the directory walk.
    pub fn problems(&self) -> impl Iterator<Item = &FileProblem> {
        self.files
            .values()
            .filter_map(|s| s.problem.as_ref())
            .chain(self.walk_problems.iter())
    }

    /// The objects in force, with what changed since the translator last looked. An object
    /// defined in two files is taken from the first file in path order (see
    /// [`ManifestDir::duplicates`]).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn snapshot_mut(&mut self) -> &mut Snapshot {
        &mut self.snapshot
    }

    /// Objects ignored because an earlier file (or an earlier document of the same file)
    /// defines them too.
    pub fn duplicates(&self) -> Vec<FileProblem> {
        let mut out: Vec<FileProblem> = self.repeated.values().flatten().cloned().collect();
        for id in &self.duplicated {
            let Some(files) = self.defined_in.get(id) else {
                continue;
            };
            out.extend(
                files
                    .iter()
                    .skip(1)
                    .map(|file| duplicate_problem(file, id, "file")),
            );
        }
        out
    }

    /// Puts a file's newly read objects in force (where no earlier file defines them) and
    /// withdraws those it no longer defines.
    fn set_file_objects(&mut self, path: &Path, objects: Vec<Object>) {
        let mut ids = Vec::with_capacity(objects.len());
        let mut seen: HashSet<ObjectId> = HashSet::with_capacity(objects.len());
        let mut repeated = Vec::new();
        let mut kept = Vec::with_capacity(objects.len());
        for obj in objects {
            let id = (obj.kind_enum(), obj.key());
            if seen.insert(id.clone()) {
                ids.push(id);
                kept.push(obj);
            } else {
                repeated.push(duplicate_problem(path, &id, "document of this file"));
            }
        }
        let before = self
            .files
            .get_mut(path)
            .map(|f| std::mem::take(&mut f.objects))
            .unwrap_or_default();
        for id in before.iter().filter(|id| !seen.contains(*id)) {
            self.release(path, id);
        }
        for (id, obj) in ids.iter().zip(kept) {
            self.claim(path, id, obj);
        }
        if let Some(f) = self.files.get_mut(path) {
            f.objects = ids;
        }
        if repeated.is_empty() {
            self.repeated.remove(path);
        } else {
            self.repeated.insert(path.to_owned(), repeated);
        }
    }

    /// Withdraws every object of a file that is gone.
    fn forget_file(&mut self, path: &Path) {
        if let Some(state) = self.files.get(path) {
            for id in state.objects.clone() {
                self.release(path, &id);
            }
        }
        if let Some(state) = self.files.remove(path) {
            forget_stamp(&mut self.stamps, state.stamp);
        }
        self.repeated.remove(path);
    }

    /// A file defines an object: in force if no earlier file defines it.
    fn claim(&mut self, path: &Path, id: &ObjectId, obj: Object) {
        let shared = match self.files.get_key_value(path) {
            Some((p, _)) => p.clone(),
            None => Arc::from(path),
        };
        let owners = self.defined_in.entry(id.clone()).or_default();
        let previous_first = owners.first().cloned();
        owners.insert(shared);
        let first = owners.first().is_some_and(|p| **p == *path);
        if owners.len() > 1 {
            self.duplicated.insert(id.clone());
        }
        match previous_first {
            Some(prev) if *prev == *path => {
                if !self.snapshot.holds(&obj) {
                    self.snapshot.upsert(obj);
                }
            }
            Some(prev) if first => {
                // This file comes before the one whose object was in force: that one's object
                // is shadowed from now on.
                if let Some(old) = self.snapshot.take(id.0, &id.1)
                    && let Some(f) = self.files.get_mut(&prev)
                {
                    f.shadowed.insert(id.clone(), old);
                }
                self.snapshot.upsert(obj);
            }
            None => self.snapshot.upsert(obj),
            Some(_) => {
                if let Some(f) = self.files.get_mut(path) {
                    f.shadowed.insert(id.clone(), obj);
                }
            }
        }
    }

    /// A file no longer defines an object: the next file defining it takes over, if any.
    fn release(&mut self, path: &Path, id: &ObjectId) {
        if let Some(f) = self.files.get_mut(path) {
            f.shadowed.remove(id);
        }
        let Some(owners) = self.defined_in.get_mut(id) else {
            return;
        };
        let was_first = owners.first().is_some_and(|p| **p == *path);
        owners.remove(path);
        let next = owners.first().cloned();
        if owners.len() <= 1 {
            self.duplicated.remove(id);
        }
        if next.is_none() {
            self.defined_in.remove(id);
        }
        if !was_first {
            return;
        }
        let successor = next.and_then(|n| self.files.get_mut(&n)?.shadowed.remove(id));
        match successor {
            Some(obj) => self.snapshot.upsert(obj),
            None => {
                self.snapshot.remove(id.0, &id.1);
            }
        }
    }
}

/// The files defining one object, in path order: almost always one, so a sorted Vec of shared
/// paths (a B-tree set would allocate a node of several hundred bytes per object).
#[derive(Debug, Default)]
struct Owners(Vec<Arc<Path>>);

impl Owners {
    fn first(&self) -> Option<&Arc<Path>> {
        self.0.first()
    }

    fn insert(&mut self, path: Arc<Path>) {
        crate::sorted_vec::insert(&mut self.0, path);
    }

    fn remove(&mut self, path: &Path) {
        if let Ok(i) = self.0.binary_search_by(|p| (**p).cmp(path)) {
            self.0.remove(i);
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Path>> {
        self.0.iter()
    }
}

fn forget_stamp(stamps: &mut HashMap<FileStamp, usize>, stamp: FileStamp) {
    if let Some(n) = stamps.get_mut(&stamp) {
        *n -= 1;
        if *n == 0 {
            stamps.remove(&stamp);
        }
    }
}

fn duplicate_problem(file: &Path, (kind, key): &ObjectId, earlier: &str) -> FileProblem {
    FileProblem {
        file: file.to_owned(),
        document: None,
        reason: format!(
            "{} {key} is defined in an earlier {earlier}; this one is ignored",
            kind.as_str()
        ),
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn stamp_of(meta: &std::fs::Metadata) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    }
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path).ok().map(|m| stamp_of(&m))
}

/// Walks the directory, following symlinks, skipping hidden entries (which also skips the
/// `..data` directories of a mounted ConfigMap while following its top-level symlinks), in name
/// order. A directory is read once per walk (by device and inode): a symlink back to a directory
/// being walked is a loop, reported and not followed; a second path to a directory already read
/// is skipped. Deeper than [`MAX_DIR_DEPTH`] is reported and not read.
/// The manifest files found by one walk of the directory, and the walk's problems.
#[derive(Debug)]
pub struct Walked {
    files: BTreeMap<PathBuf, FileStamp>,
    problems: BTreeSet<FileProblem>,
    started: Instant,
}

impl Walked {
    /// Walks a manifest directory (blocking file-system calls: run it off the async threads).
    pub fn read(root: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(root)?;
        let mut walked = Walked {
            files: BTreeMap::new(),
            problems: BTreeSet::new(),
            started: Instant::now(),
        };
        let mut walk = Walk {
            out: &mut walked.files,
            problems: &mut walked.problems,
            visited: BTreeSet::from([(meta.dev(), meta.ino())]),
            ancestors: vec![(meta.dev(), meta.ino())],
        };
        walk.dir(root, 0)?;
        Ok(walked)
    }
}

struct Walk<'a> {
    out: &'a mut BTreeMap<PathBuf, FileStamp>,
    problems: &'a mut BTreeSet<FileProblem>,
    visited: BTreeSet<(u64, u64)>,
    /// The directories from the root down to the one being read.
    ancestors: Vec<(u64, u64)>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, depth: usize) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                entries.push(entry.path());
            }
        }
        entries.sort();
        for path in entries {
            // Follows symlinks; a dangling one is skipped.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if self.ancestors.contains(&id) {
                    self.problems.insert(FileProblem {
                        file: path,
                        document: None,
                        reason: "symlink loop: leads back to a directory being read; not followed"
                            .to_owned(),
                    });
                    continue;
                }
                if !self.visited.insert(id) {
                    continue; // already read through another path
                }
                if depth + 1 > MAX_DIR_DEPTH {
                    self.problems.insert(FileProblem {
                        file: path,
                        document: None,
                        reason: format!(
                            "more than {MAX_DIR_DEPTH} directory levels below the manifest directory; not read"
                        ),
                    });
                    continue;
                }
                self.ancestors.push(id);
                // An unreadable subdirectory fails the whole rescan, as before: the last good
                // config stays rather than that directory's objects being dropped.
                let read = self.dir(&path, depth + 1);
                self.ancestors.pop();
                read?;
            } else if meta.is_file() && is_manifest(&path) {
                self.out.insert(path, stamp_of(&meta));
            }
        }
        Ok(())
    }
}

/// Reads and parses one file within the limits.
fn read_manifest(path: &Path, len: u64) -> Result<Vec<Object>, FileProblem> {
    let problem = |reason: String| FileProblem {
        file: path.to_owned(),
        document: None,
        reason,
    };
    let too_large = || {
        problem(format!(
            "file is larger than {MAX_FILE_BYTES} bytes (16 MiB); not read"
        ))
    };
    if len > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| problem(e.to_string()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    match prescan(&text, MAX_NESTING, MAX_TOKENS) {
        Ok(_) => {}
        Err(Exceeded::Depth) => {
            return Err(problem(format!(
                "flow collections ([ ], {{ }}) nest deeper than {MAX_NESTING} levels; not parsed"
            )));
        }
        Err(Exceeded::Tokens) => {
            return Err(problem(format!(
                "more than {MAX_TOKENS} YAML tokens; not parsed (split the file)"
            )));
        }
    }
    parse_documents(path, &text)
}

/// Parses every document of a file (YAML is a superset of JSON, so one parser reads both).
fn parse_documents(path: &Path, text: &str) -> Result<Vec<Object>, FileProblem> {
    let mut objects = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let problem = |reason: String| FileProblem {
            file: path.to_owned(),
            document: Some(index),
            reason,
        };
        let value = StrictValue { depth: 0 }
            .deserialize(doc)
            .map_err(|e| problem(e.to_string()))?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        objects.extend(Object::from_manifest(value).map_err(|e| problem(e.to_string()))?);
    }
    Ok(objects)
}

/// Deserializes a document into a JSON value like `serde_json::Value` does, but refuses a
/// mapping with the same key twice (the API server's strict decoding reports those too; taking
/// the last one silently would hide a typo'd override) and nesting deeper than [`MAX_NESTING`].
#[derive(Clone, Copy)]
struct StrictValue {
    depth: usize,
}

impl StrictValue {
    fn nested<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_NESTING {
            return Err(E::custom(format!(
                "nesting deeper than {MAX_NESTING} levels"
            )));
        }
        Ok(Self {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";

    #[test]
    fn reads_multi_document_files_and_keeps_last_good_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(
            &file,
            format!("{SVC}---\n{}", SVC.replace("name: a", "name: b")),
        )
        .unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "not: [yaml").unwrap();
        let mut md = ManifestDir::new(dir.path()).without_settling();
        let r = md.rescan().unwrap();
        assert!(r.changed && r.new_problems.is_empty());
        assert_eq!(md.snapshot().services.len(), 2);

        // Break the second document: the file is reported, its old objects stay.
        std::fs::write(&file, format!("{SVC}---\nkind: [oops\n")).unwrap();
        let r = md.rescan().unwrap();
        assert_eq!(r.new_problems.len(), 1);
        assert_eq!(r.new_problems[0].document, Some(1));
        assert_eq!(md.snapshot().services.len(), 2);

        // Fix it: only one Service now.
        std::fs::write(&file, SVC).unwrap();
        assert!(md.rescan().unwrap().changed);
        assert_eq!(md.snapshot().services.len(), 1);
        assert_eq!(md.problems().count(), 0);

        // Delete: gone.
        std::fs::remove_file(&file).unwrap();
        assert!(md.rescan().unwrap().changed);
        assert!(md.snapshot().services.is_empty());
    }

    #[test]
    fn duplicates_are_reported_and_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.yaml"), SVC).unwrap();
        std::fs::write(dir.path().join("2.yml"), SVC).unwrap();
        let mut md = ManifestDir::new(dir.path());
        md.rescan().unwrap();
        let (snap, dups) = (md.snapshot(), md.duplicates());
        assert_eq!(snap.services.len(), 1);
        assert_eq!(dups.len(), 1);
        assert!(dups[0].file.ends_with("2.yml"));
    }

    #[test]
    fn a_shadowed_duplicate_takes_over_when_the_first_file_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let port = |p: u16| SVC.replace("port: 80", &format!("port: {p}"));
        let ports = |md: &ManifestDir| -> Vec<i32> {
            md.snapshot()
                .services
                .values()
                .flat_map(|s| {
                    s.spec
                        .as_ref()
                        .unwrap()
                        .ports
                        .as_ref()
                        .unwrap()
                        .iter()
                        .map(|p| p.port)
                })
                .collect()
        };
        std::fs::write(dir.path().join("2.yaml"), port(82)).unwrap();
        let mut md = ManifestDir::new(dir.path()).without_settling();
        md.rescan().unwrap();
        assert_eq!(ports(&md), [82]);
        // An earlier file defines it too: that one is in force, the later one reported.
        std::fs::write(dir.path().join("1.yaml"), port(81)).unwrap();
        md.rescan().unwrap();
        assert_eq!(ports(&md), [81]);
        assert_eq!(md.duplicates().len(), 1);
        assert!(md.duplicates()[0].file.ends_with("2.yaml"));
        // A change to the shadowed copy changes nothing in force.
        md.snapshot_mut().take_changes();
        std::fs::write(dir.path().join("2.yaml"), port(83)).unwrap();
        md.rescan().unwrap();
        assert_eq!(ports(&md), [81]);
        assert!(md.snapshot_mut().take_changes().kinds.is_empty());
        // The earlier file goes: the later one's latest copy takes over.
        std::fs::remove_file(dir.path().join("1.yaml")).unwrap();
        md.rescan().unwrap();
        assert_eq!(ports(&md), [83]);
        assert!(md.duplicates().is_empty());
        // Twice in one file: the first document wins, the second is reported.
        std::fs::write(
            dir.path().join("2.yaml"),
            format!("{}---\n{}", port(84), port(85)),
        )
        .unwrap();
        md.rescan().unwrap();
        assert_eq!(ports(&md), [84]);
        assert_eq!(md.duplicates().len(), 1);
        std::fs::remove_file(dir.path().join("2.yaml")).unwrap();
        md.rescan().unwrap();
        assert!(md.snapshot().services.is_empty() && md.duplicates().is_empty());
    }

    #[test]
    fn only_changed_objects_reach_the_change_log() {
        let dir = tempfile::tempdir().unwrap();
        let ing = |name: &str, host: &str| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec: {{rules: [{{host: {host}}}]}}\n"
            )
        };
        std::fs::write(
            dir.path().join("a.yaml"),
            format!("{}---\n{}", ing("a", "a.example"), ing("b", "b.example")),
        )
        .unwrap();
        std::fs::write(dir.path().join("c.yaml"), ing("c", "c.example")).unwrap();
        let mut md = ManifestDir::new(dir.path()).without_settling();
        md.rescan().unwrap();
        let first = md.snapshot_mut().take_changes();
        assert!(
            first.all_ingresses,
            "a new snapshot starts with everything changed"
        );
        // b changes, a stays the same, c is untouched.
        std::fs::write(
            dir.path().join("a.yaml"),
            format!("{}---\n{}", ing("a", "a.example"), ing("b", "b2.example")),
        )
        .unwrap();
        md.rescan().unwrap();
        let changes = md.snapshot_mut().take_changes();
        assert_eq!(
            changes.ingresses.into_iter().collect::<Vec<_>>(),
            [ObjectKey::new("default", "b")]
        );
        std::fs::remove_file(dir.path().join("c.yaml")).unwrap();
        md.rescan().unwrap();
        let changes = md.snapshot_mut().take_changes();
        assert_eq!(
            changes.ingresses.into_iter().collect::<Vec<_>>(),
            [ObjectKey::new("default", "c")]
        );
        assert_eq!(md.snapshot().ingresses.len(), 2);
    }

    #[test]
    fn unchanged_rescan_reports_no_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("1.json"),
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"j"}}"#,
        )
        .unwrap();
        let mut md = ManifestDir::new(dir.path());
        assert!(md.rescan().unwrap().changed);
        assert!(!md.rescan().unwrap().changed);
        assert_eq!(md.snapshot().services.len(), 1);
    }
    fn problem_reasons(r: &Rescan) -> Vec<String> {
        r.new_problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn deep_nesting_is_rejected_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, SVC).unwrap();
        let mut md = ManifestDir::new(dir.path()).without_settling();
        md.rescan().unwrap();
        let n = 25_000;
        for (name, text) in [
            (
                "flow sequence",
                format!("{}{}", "[".repeat(n), "]".repeat(n)),
            ),
            (
                "flow mapping",
                format!("{}1{}", "{a: ".repeat(n), "}".repeat(n)),
            ),
            ("JSON", format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))),
            ("block sequence", format!("{}x\n", "- ".repeat(n))),
        ] {
            std::fs::write(&file, format!("{SVC}---\n{text}")).unwrap();
            let started = Instant::now();
            let r = md.rescan().unwrap();
            let took = started.elapsed();
            let reasons = problem_reasons(&r);
            assert_eq!(reasons.len(), 1, "{name}: {reasons:?}");
            assert!(reasons[0].contains("64 levels"), "{name}: {reasons:?}");
            assert!(took < Duration::from_secs(1), "{name}: took {took:?}");
            // The file's last good objects stay in force.
            assert_eq!(md.snapshot().services.len(), 1, "{name}");
        }
        // Nesting within the limit is fine, in flow and block style.
        let deep_ok = format!(
            "{SVC}---\napiVersion: example.com/v1\nkind: Deep\nmetadata: {{name: d}}\nspec: {}1{}\n---\napiVersion: example.com/v1\nkind: Deep\nspec:\n{}x\n",
            "[".repeat(60),
            "]".repeat(60),
            "- ".repeat(60)
        );
        std::fs::write(&file, deep_ok).unwrap();
        let r = md.rescan().unwrap();
        assert!(r.new_problems.is_empty(), "{:?}", problem_reasons(&r));
    }

    #[test]
    fn oversized_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, SVC).unwrap();
        let mut md = ManifestDir::new(dir.path()).without_settling();
        md.rescan().unwrap();
        // A sparse file: nothing is allocated, and nothing must be read.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let r = md.rescan().unwrap();
        assert!(
            problem_reasons(&r)[0].contains("larger than"),
            "{:?}",
            problem_reasons(&r)
        );
        assert_eq!(md.snapshot().services.len(), 1);

        // Small in bytes but dense in tokens (each `[]` is two parser events).
        let dense = format!("{SVC}---\n[{}]\n", "[],".repeat(MAX_TOKENS / 2));
        assert!((dense.len() as u64) < MAX_FILE_BYTES);
        std::fs::write(&file, dense).unwrap();
        let started = Instant::now();
        let r = md.rescan().unwrap();
        assert!(
            problem_reasons(&r)[0].contains("tokens"),
            "{:?}",
            problem_reasons(&r)
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(md.snapshot().services.len(), 1);
    }

    #[test]
    fn duplicate_keys_reject_the_document() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), SVC).unwrap();
        let mut md = ManifestDir::new(dir.path()).without_settling();
        md.rescan().unwrap();
        let cases = [
            ("a.yaml", format!("{SVC}---\n{}", SVC.replace("metadata: {name: a}", "metadata: {name: b, name: c}"))),
            ("a.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec: {ports: [{port: 80}]}\nmetadata:\n  name: b\n".to_owned()),
            ("b.json", r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x","name":"y"}}"#.to_owned()),
        ];
        for (name, text) in cases {
            std::fs::write(dir.path().join(name), &text).unwrap();
            let r = md.rescan().unwrap();
            let reasons = problem_reasons(&r);
            assert_eq!(reasons.len(), 1, "{text}: {reasons:?}");
            assert!(
                reasons[0].contains("duplicate key \"name\"")
                    || reasons[0].contains("duplicate key \"metadata\""),
                "{reasons:?}"
            );
            let snap = md.snapshot();
            assert_eq!(
                snap.services.len(),
                1,
                "only a.yaml's last good Service: {text}"
            );
        }
    }

    #[test]
    fn symlink_loops_are_reported_once_and_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.yaml"), SVC).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/b.yaml"), SVC.replace("name: a", "name: b")).unwrap();
        symlink(".", root.join("self")).unwrap();
        symlink("..", root.join("sub/up")).unwrap();
        // A ConfigMap volume: files are symlinks into `..data`, itself a symlink.
        std::fs::create_dir(root.join("..2024_01_01")).unwrap();
        std::fs::write(
            root.join("..2024_01_01/c.yaml"),
            SVC.replace("name: a", "name: c"),
        )
        .unwrap();
        symlink("..2024_01_01", root.join("..data")).unwrap();
        symlink("..data/c.yaml", root.join("c.yaml")).unwrap();
        // A symlinked directory elsewhere that is not a loop.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(
            other.path().join("d.yaml"),
            SVC.replace("name: a", "name: d"),
        )
        .unwrap();
        symlink(other.path(), root.join("linked")).unwrap();

        let mut md = ManifestDir::new(root).without_settling();
        let r = md.rescan().unwrap();
        let mut loops: Vec<_> = r.new_problems.iter().map(|p| p.file.clone()).collect();
        loops.sort();
        assert_eq!(
            loops,
            vec![root.join("self"), root.join("sub/up")],
            "{:?}",
            problem_reasons(&r)
        );
        let (snap, dups) = (md.snapshot(), md.duplicates());
        let names: Vec<_> = snap.services.keys().map(|k| &*k.name).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert!(dups.is_empty(), "{dups:?}");
        // Reported once while it lasts, still listed among the problems.
        let r = md.rescan().unwrap();
        assert!(r.new_problems.is_empty() && !r.changed);
        assert_eq!(md.problems().count(), 2);
    }

    #[test]
    fn directory_depth_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_owned();
        for i in 0..=MAX_DIR_DEPTH {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("a.yaml"), SVC).unwrap();
        let mut md = ManifestDir::new(dir.path());
        let r = md.rescan().unwrap();
        assert_eq!(r.new_problems.len(), 1, "{:?}", problem_reasons(&r));
        assert!(md.snapshot().services.is_empty());
    }

    #[test]
    fn a_renamed_file_is_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), SVC).unwrap();
        let mut md = ManifestDir::new(dir.path());
        md.rescan().unwrap();
        std::fs::rename(dir.path().join("a.yaml"), dir.path().join("b.yaml")).unwrap();
        let r = md.rescan().unwrap();
        assert!(r.changed && !r.settling);
        assert_eq!(md.snapshot().services.len(), 1);
    }

    #[test]
    fn a_changed_file_is_read_once_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        let two = format!("{SVC}---\n{}", SVC.replace("name: a", "name: b"));
        std::fs::write(&file, &two).unwrap();
        let mut md = ManifestDir::new(dir.path());
        assert!(md.rescan().unwrap().changed, "the first scan reads at once");
        assert_eq!(md.snapshot().services.len(), 2);

        // Truncated at a document boundary, as a writer in the middle of an in-place rewrite
        // leaves it: not read while it keeps changing or until it has settled.
        std::fs::write(&file, SVC).unwrap();
        let r = md.rescan().unwrap();
        assert!(r.settling && !r.changed);
        std::thread::sleep(SETTLE / 2);
        std::fs::write(&file, &two).unwrap(); // the writer finishes
        let r = md.rescan().unwrap();
        assert!(r.settling && !r.changed);
        assert_eq!(md.snapshot().services.len(), 2);
        std::thread::sleep(SETTLE + SETTLE / 2);
        let r = md.rescan().unwrap();
        assert!(r.changed && !r.settling);
        assert_eq!(md.snapshot().services.len(), 2);

        // A file left empty keeps its objects for EMPTY_SETTLE, then is honoured.
        std::fs::write(&file, "").unwrap();
        assert!(md.rescan().unwrap().settling);
        std::thread::sleep(SETTLE + SETTLE / 2);
        assert!(md.rescan().unwrap().settling);
        assert_eq!(md.snapshot().services.len(), 2);
        std::thread::sleep(EMPTY_SETTLE);
        assert!(md.rescan().unwrap().changed);
        assert!(md.snapshot().services.is_empty());
    }
}

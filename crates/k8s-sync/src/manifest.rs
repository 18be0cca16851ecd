//! The manifest-directory source: every `*.yaml`, `*.yml` and `*.json` file under a directory,
//! multi-document, re-read when it changes. A file that fails to parse is reported and its last
//! good objects stay in force, so one bad edit never drops routes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::object::{Object, Snapshot};

/// A file (or one document of it) that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

#[derive(Debug)]
struct FileState {
    stamp: FileStamp,
    /// Objects of the last good read; kept while the file is broken.
    objects: Vec<Object>,
    problem: Option<FileProblem>,
}

/// The result of one rescan.
#[derive(Debug, Default)]
pub struct Rescan {
    /// Whether any file's objects were added, changed or removed.
    pub changed: bool,
    /// Problems found in files read during this rescan.
    pub new_problems: Vec<FileProblem>,
}

/// A directory of manifests and the last good objects of each file in it.
#[derive(Debug)]
pub struct ManifestDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
        }
    }

    /// Re-reads files whose stamp changed, forgets deleted ones.
    pub fn rescan(&mut self) -> std::io::Result<Rescan> {
        let mut found = BTreeMap::new();
        collect_files(&self.root, &mut found)?;
        let mut out = Rescan::default();
        let before = self.files.len();
        self.files.retain(|path, _| found.contains_key(path));
        out.changed |= self.files.len() != before;
        for (path, stamp) in found {
            if self.files.get(&path).is_some_and(|s| s.stamp == stamp) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| FileProblem {
                    file: path.clone(),
                    document: None,
                    reason: e.to_string(),
                })
                .and_then(|text| parse_documents(&path, &text));
            match parsed {
                Ok(objects) => {
                    self.files.insert(
                        path,
                        FileState {
                            stamp,
                            objects,
                            problem: None,
                        },
                    );
                    out.changed = true;
                }
                Err(problem) => {
                    out.new_problems.push(problem.clone());
                    // Keep the objects of the last good read, if any.
                    let objects = self
                        .files
                        .remove(&path)
                        .map(|s| s.objects)
                        .unwrap_or_default();
                    self.files.insert(
                        path,
                        FileState {
                            stamp,
                            objects,
                            problem: Some(problem),
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Files that are currently broken (their last good objects are in force).
    pub fn problems(&self) -> impl Iterator<Item = &FileProblem> {
        self.files.values().filter_map(|s| s.problem.as_ref())
    }

    /// All objects in force. An object defined in two files is taken from the first file in
    /// path order and the other is reported.
    pub fn snapshot(&self) -> (Snapshot, Vec<FileProblem>) {
        let mut snap = Snapshot::default();
        let mut dups = Vec::new();
        for (path, state) in &self.files {
            for obj in &state.objects {
                let (kind, key) = (obj.kind(), obj.key());
                if !snap.insert(obj.clone()) {
                    dups.push(FileProblem {
                        file: path.clone(),
                        document: None,
                        reason: format!(
                            "{kind} {key} is defined in an earlier file; this one is ignored"
                        ),
                    });
                }
            }
        }
        (snap, dups)
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Walks `dir`, following symlinks, skipping hidden entries (which also skips the `..data`
/// directories of a mounted ConfigMap while following its top-level symlinks).
fn collect_files(dir: &Path, out: &mut BTreeMap<PathBuf, FileStamp>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follows symlinks; a dangling one is skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            collect_files(&path, out)?;
        } else if meta.is_file() && is_manifest(&path) {
            use std::os::unix::fs::MetadataExt;
            out.insert(
                path,
                FileStamp {
                    modified: meta.modified().ok(),
                    len: meta.len(),
                    inode: meta.ino(),
                },
            );
        }
    }
    Ok(())
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
        let value = serde_json::Value::deserialize(doc).map_err(|e| problem(e.to_string()))?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        objects.extend(Object::from_manifest(value).map_err(|e| problem(e.to_string()))?);
    }
    Ok(objects)
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
        let mut md = ManifestDir::new(dir.path());
        let r = md.rescan().unwrap();
        assert!(r.changed && r.new_problems.is_empty());
        assert_eq!(md.snapshot().0.services.len(), 2);

        // Break the second document: the file is reported, its old objects stay.
        std::fs::write(&file, format!("{SVC}---\nkind: [oops\n")).unwrap();
        let r = md.rescan().unwrap();
        assert_eq!(r.new_problems.len(), 1);
        assert_eq!(r.new_problems[0].document, Some(1));
        assert_eq!(md.snapshot().0.services.len(), 2);

        // Fix it: only one Service now.
        std::fs::write(&file, SVC).unwrap();
        assert!(md.rescan().unwrap().changed);
        assert_eq!(md.snapshot().0.services.len(), 1);
        assert_eq!(md.problems().count(), 0);

        // Delete: gone.
        std::fs::remove_file(&file).unwrap();
        assert!(md.rescan().unwrap().changed);
        assert!(md.snapshot().0.services.is_empty());
    }

    #[test]
    fn duplicates_are_reported_and_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.yaml"), SVC).unwrap();
        std::fs::write(dir.path().join("2.yml"), SVC).unwrap();
        let mut md = ManifestDir::new(dir.path());
        md.rescan().unwrap();
        let (snap, dups) = md.snapshot();
        assert_eq!(snap.services.len(), 1);
        assert_eq!(dups.len(), 1);
        assert!(dups[0].file.ends_with("2.yml"));
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
        assert_eq!(md.snapshot().0.services.len(), 1);
    }
}

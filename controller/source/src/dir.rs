//! The state of a manifests directory: what each file last yielded, and the objects the directory as a whole
//! contributes.

use crate::event::SourceEvent;
use crate::parse::{file_ref, parse_manifests};
use causeway_model::{Diagnostic, Severity};
use causeway_translate::{KubeObject, ObjectKey};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Files modified this recently are re-read on every scan even when their size and mtime look unchanged, so that
/// two writes within one mtime tick (coarse-timestamp filesystems) are still seen.
const RECENT: Duration = Duration::from_secs(2);

/// Whether a directory entry is a manifests file: `*.yaml`, `*.yml` or `*.json`, not hidden (editors' swap and
/// backup files start with a dot or end in `~`, so they are ignored).
pub fn is_manifest_file(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
}

/// What one file last yielded.
#[derive(Clone, Debug)]
struct FileState {
    len: u64,
    modified: Option<SystemTime>,
    hash: u64,
    objects: BTreeMap<ObjectKey, KubeObject>,
    diagnostics: Vec<Diagnostic>,
}

/// The objects and diagnostics of a manifests directory.
///
/// Policy for a file that fails to parse (it may be half-written): the documents that do parse are applied, and
/// the objects the file yielded at its last clean parse that are now missing are **kept**, with a warning, until
/// the file parses without errors again or is deleted. Likewise an empty file keeps its previous objects (editors
/// truncate before writing). So a write caught half-way never deletes objects permanently; the next scan after
/// the write completes applies the real change. A deleted file deletes its objects.
///
/// The same object (kind, namespace, name) in two files: the file whose name sorts first wins, with a warning.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirState {
    dir: PathBuf,
    files: BTreeMap<String, FileState>,
    /// Set when the directory itself could not be read on the last scan.
    dir_error: Option<Diagnostic>,
    /// What was last reported as events (for diffs).
    sent_objects: BTreeMap<ObjectKey, KubeObject>,
    sent_diagnostics: Vec<Diagnostic>,
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl DirState {
    pub(crate) fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned(), ..Self::default() }
    }

    /// Re-read the directory: new, changed and removed files. Returns an error only when the directory cannot be
    /// listed (the previous state is then kept and a diagnostic reported).
    pub(crate) fn scan(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                self.dir_error = Some(Diagnostic::error(
                    file_ref(&self.dir.display().to_string()),
                    "",
                    format!("cannot read the manifests directory: {e}; keeping the objects read before"),
                ));
                return Err(e);
            }
        };
        self.dir_error = None;
        let mut seen = BTreeSet::new();
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if !is_manifest_file(&name) {
                continue;
            }
            // `fs::metadata` follows symlinks (ConfigMap volumes are symlinks into `..data/`).
            let Ok(meta) = std::fs::metadata(entry.path()) else { continue };
            if !meta.is_file() {
                continue;
            }
            seen.insert(name.clone());
            let modified = meta.modified().ok();
            let recent = modified.is_none_or(|m| now.duration_since(m).map_or(true, |age| age < RECENT));
            if let Some(old) = self.files.get(&name)
                && old.len == meta.len()
                && old.modified == modified
                && !recent
            {
                continue;
            }
            match std::fs::read(entry.path()) {
                Ok(bytes) => self.update_file(&name, meta.len(), modified, &bytes),
                // Removed between listing and reading: the next scan sees it gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    seen.remove(&name);
                }
                Err(e) => {
                    let diag = Diagnostic::error(
                        file_ref(&name),
                        "",
                        format!("cannot read the file: {e}; keeping the objects read before"),
                    );
                    let state = self.files.entry(name).or_insert_with(|| FileState {
                        len: 0,
                        modified: None,
                        hash: 0,
                        objects: BTreeMap::new(),
                        diagnostics: Vec::new(),
                    });
                    state.diagnostics = vec![diag];
                    // Retry on the next scan even if size and mtime stay the same (a chmod changes neither).
                    state.len = u64::MAX;
                }
            }
        }
        self.files.retain(|name, _| seen.contains(name));
        Ok(())
    }

    /// Parse new content of `name` and fold it in under the half-written-file policy.
    pub(crate) fn update_file(&mut self, name: &str, len: u64, modified: Option<SystemTime>, bytes: &[u8]) {
        let hash = hash_bytes(bytes);
        if let Some(old) = self.files.get_mut(name)
            && old.hash == hash
            && old.len == len
        {
            old.modified = modified;
            return;
        }
        let (objects, mut diagnostics) = parse_manifests(name, bytes);
        let mut objects: BTreeMap<ObjectKey, KubeObject> = objects.into_iter().map(|o| (o.key(), o)).collect();
        let failed = diagnostics.iter().any(|d| d.severity == Severity::Error);
        let empty = bytes.iter().all(u8::is_ascii_whitespace);
        if let Some(old) = self.files.get(name)
            && (failed || empty)
        {
            let kept: Vec<_> = old.objects.iter().filter(|(k, _)| !objects.contains_key(k)).collect();
            if !kept.is_empty() {
                let why = if empty { "the file is empty" } else { "the file has errors" };
                diagnostics.push(Diagnostic::warning(
                    file_ref(name),
                    "",
                    format!(
                        "{why}; keeping {} object(s) from its last good version until it parses cleanly or is deleted",
                        kept.len()
                    ),
                ));
                let kept: Vec<_> = kept.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                objects.extend(kept);
            }
        }
        self.files.insert(name.to_owned(), FileState { len, modified, hash, objects, diagnostics });
    }

    /// Forget a file (it was deleted).
    #[cfg(test)]
    pub(crate) fn remove_file(&mut self, name: &str) {
        self.files.remove(name);
    }

    /// The objects of the whole directory (first file by name wins a duplicate key) and every diagnostic.
    pub(crate) fn effective(&self) -> (BTreeMap<ObjectKey, KubeObject>, Vec<Diagnostic>) {
        let mut objects: BTreeMap<ObjectKey, KubeObject> = BTreeMap::new();
        let mut owner: BTreeMap<ObjectKey, &str> = BTreeMap::new();
        let mut diags: Vec<Diagnostic> = self.dir_error.iter().cloned().collect();
        for (name, file) in &self.files {
            diags.extend(file.diagnostics.iter().cloned());
            for (key, obj) in &file.objects {
                if let Some(first) = owner.get(key) {
                    diags.push(Diagnostic::warning(
                        key.object_ref(),
                        "",
                        format!("defined in both {first} and {name}; the one in {first} is used"),
                    ));
                    continue;
                }
                owner.insert(key.clone(), name);
                objects.insert(key.clone(), obj.clone());
            }
        }
        (objects, diags)
    }

    /// The events that bring a consumer from what was last reported to the current state: deletes, then applies
    /// of new or changed objects, then the diagnostics when they changed (`origin` names this source).
    pub(crate) fn take_events(&mut self, origin: &str, force_diagnostics: bool) -> Vec<SourceEvent> {
        let (objects, diagnostics) = self.effective();
        let mut events = Vec::new();
        for key in self.sent_objects.keys() {
            if !objects.contains_key(key) {
                events.push(SourceEvent::Delete(key.clone()));
            }
        }
        for (key, obj) in &objects {
            if self.sent_objects.get(key) != Some(obj) {
                events.push(SourceEvent::Apply(obj.clone()));
            }
        }
        if force_diagnostics || diagnostics != self.sent_diagnostics {
            events.push(SourceEvent::Diagnostics { origin: origin.to_owned(), diagnostics: diagnostics.clone() });
        }
        self.sent_objects = objects;
        self.sent_diagnostics = diagnostics;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC_A: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";
    const SVC_B: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}\n";

    fn keys(events: &[SourceEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                SourceEvent::Apply(o) => format!("apply {}", o.key()),
                SourceEvent::Delete(k) => format!("delete {k}"),
                SourceEvent::Diagnostics { diagnostics, .. } => format!("diagnostics {}", diagnostics.len()),
                SourceEvent::InitDone { source } => format!("init-done {source}"),
            })
            .collect()
    }

    #[test]
    fn half_written_file_keeps_its_last_good_objects() {
        let mut dir = DirState::new(Path::new("/nonexistent"));
        let both = format!("{SVC_A}---\n{SVC_B}");
        dir.update_file("s.yaml", 1, None, both.as_bytes());
        assert_eq!(keys(&dir.take_events("m", false)), ["apply Service default/a", "apply Service default/b"]);
        // Cut in the middle of the second document: b must not be deleted.
        let cut = &both[..both.len() - 20];
        dir.update_file("s.yaml", 2, None, cut.as_bytes());
        assert_eq!(keys(&dir.take_events("m", false)), ["diagnostics 2"]);
        // Truncated to nothing (an editor about to write): still nothing deleted.
        dir.update_file("s.yaml", 3, None, b"");
        assert_eq!(keys(&dir.take_events("m", false)), ["diagnostics 1"]);
        // The complete new content drops b for real.
        dir.update_file("s.yaml", 4, None, SVC_A.as_bytes());
        assert_eq!(keys(&dir.take_events("m", false)), ["delete Service default/b", "diagnostics 0"]);
        dir.remove_file("s.yaml");
        assert_eq!(keys(&dir.take_events("m", false)), ["delete Service default/a"]);
    }

    #[test]
    fn duplicate_objects_across_files_first_file_wins() {
        let mut dir = DirState::new(Path::new("/nonexistent"));
        dir.update_file("a.yaml", 1, None, SVC_A.as_bytes());
        let other = SVC_A.replace("10.96.0.1", "10.96.0.9");
        dir.update_file("b.yaml", 1, None, other.as_bytes());
        let (objects, diags) = dir.effective();
        assert_eq!(objects.len(), 1);
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("a.yaml"), "{}", diags[0]);
        // Removing the winner promotes the other definition (an update, not a delete).
        dir.take_events("m", false);
        dir.remove_file("a.yaml");
        assert_eq!(keys(&dir.take_events("m", false)), ["apply Service default/a", "diagnostics 0"]);
    }

    #[test]
    fn manifest_file_names() {
        for (name, want) in [
            ("a.yaml", true),
            ("a.yml", true),
            ("a.json", true),
            (".a.yaml", false),
            ("a.yaml~", false),
            ("a.txt", false),
            ("a.yaml.swp", false),
        ] {
            assert_eq!(is_manifest_file(name), want, "{name}");
        }
    }
}

//! The manifests directory every agent and the edge proxy watch (`--manifests DIR`, design §4): one file per
//! group of objects, replaced atomically (write a name without a watched extension, then `rename`), or, for the
//! bad-input check, written half-way on purpose.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::yaml;

/// The watched directory.
#[derive(Debug, Clone)]
pub struct ManifestDir {
    /// Its path.
    pub dir: PathBuf,
}

impl ManifestDir {
    /// Creates the directory.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The path of file `stem`.
    pub fn file(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.yaml"))
    }

    /// Replaces `stem.yaml` with `docs` in one `rename`, so a watcher never reads a partial file.
    pub fn write(&self, stem: &str, docs: &[Value]) -> Result<()> {
        let tmp = self.dir.join(format!(".{stem}.tmp"));
        let text = yaml::to_yaml_stream(docs);
        std::fs::write(&tmp, text).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        let dst = self.file(stem);
        std::fs::rename(&tmp, &dst)
            .map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), dst.display()), e))
    }

    /// Writes `stem.yaml` in place, cut off inside a quoted value about `fraction` of the way through, as a
    /// writer that crashed half-way would leave it. The cut lands just after an opening quote, so the text is
    /// never accidentally a complete, valid document. Returns the number of bytes written.
    pub fn write_truncated(&self, stem: &str, docs: &[Value], fraction: f64) -> Result<usize> {
        let text = yaml::to_yaml_stream(docs);
        let from = ((text.len() as f64) * fraction.clamp(0.0, 1.0)) as usize;
        let cut = text
            .char_indices()
            .skip_while(|(i, _)| *i < from)
            .find(|(i, _)| text[*i..].starts_with(": \""))
            .map(|(i, _)| i + 4)
            .ok_or_else(|| Error::check(format!("no quoted value after byte {from} to cut {stem}.yaml in")))?;
        let dst = self.file(stem);
        std::fs::write(&dst, &text.as_bytes()[..cut])
            .map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
        Ok(cut)
    }

    /// Removes `stem.yaml` (a delete event for its objects).
    pub fn remove(&self, stem: &str) -> Result<()> {
        let p = self.file(stem);
        std::fs::remove_file(&p).map_err(|e| Error::io(format!("removing {}", p.display()), e))
    }
}

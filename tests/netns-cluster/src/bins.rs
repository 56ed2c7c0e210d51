//! Finding the binaries under test. They are other packages' binaries, so Cargo gives us no `CARGO_BIN_EXE_*`
//! for them: the test executable runs from `<target>/<profile>/deps/`, and the workspace build puts the
//! binaries one level up. `CAUSEWAY_BIN_DIR` overrides the directory.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The three binaries the cluster runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `causeway` (controller + edge proxy).
    pub causeway: PathBuf,
    /// `causeway-node` (node agent).
    pub node: PathBuf,
    /// `causeway-cni` (CNI plugin).
    pub cni: PathBuf,
}

impl Bins {
    /// The directory to search: `$CAUSEWAY_BIN_DIR`, else the parent of the test executable's `deps/`.
    pub fn default_dir() -> Result<PathBuf> {
        if let Some(d) = std::env::var_os("CAUSEWAY_BIN_DIR") {
            return Ok(PathBuf::from(d));
        }
        let exe = std::env::current_exe().map_err(|e| Error::io("locating the test executable", e))?;
        let parent = exe.parent().unwrap_or(Path::new("."));
        Ok(if parent.file_name().is_some_and(|n| n == "deps") { parent.parent().unwrap_or(parent) } else { parent }
            .to_path_buf())
    }

    /// Finds all three in `dir`, naming the first one missing.
    pub fn locate(dir: &Path) -> Result<Self> {
        let find = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::MissingBinary { name: name.into(), package: name.into(), dir: dir.display().to_string() })
            }
        };
        Ok(Self { causeway: find("causeway")?, node: find("causeway-node")?, cni: find("causeway-cni")? })
    }
}

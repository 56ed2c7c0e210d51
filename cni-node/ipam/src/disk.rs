//! host-local's on-disk store, byte for byte:
//!
//! ```text
//! <dataDir>/<network>/            mode 0755, created on demand
//!     lock                        flock(LOCK_EX) held while the store is open
//!     10.244.1.5                  mode 0600, "<containerID>\r\n<ifname>" (no trailing newline)
//!     last_reserved_ip.0          the last address reserved in range set 0
//! ```
//!
//! The reference `host-local` binary can share a directory with us: it takes the same lock and reads
//! the same files.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::StoreError;
use crate::store::{Owner, Reservation, Store, owner_content, parse_owner, select_owned};

/// Prefix of the per-range-set "last reserved" files.
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";

/// The store directory of one network, locked for as long as this value lives.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl DiskStore {
    /// Open (creating if needed) `<data_dir>/<network>` and take its exclusive lock, blocking until it is
    /// free. `network` must already be validated as a CNI network name (no `/`, not `.`/`..`).
    pub fn lock(data_dir: &Path, network: &str) -> Result<Self, StoreError> {
        let dir = data_dir.join(network);
        DirBuilder::new().recursive(true).mode(0o755).create(&dir).map_err(|e| StoreError::io("create", &dir, e))?;
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|e| StoreError::io("open", &lock_path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| StoreError::io("lock", &lock_path, std::io::Error::from(errno)))?;
        Ok(DiskStore { dir, _lock: lock })
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }
}

impl Store for DiskStore {
    fn reserve(&mut self, id: &str, ifname: &str, ip: IpAddr, range_id: &str) -> Result<bool, StoreError> {
        let path = self.ip_path(ip);
        // O_CREAT|O_EXCL: an existing file means the address is taken.
        let mut f = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(StoreError::io("create", &path, e)),
        };
        if let Err(e) = f.write_all(owner_content(id, ifname).as_bytes()) {
            // Do not leave a reservation with unknown content behind.
            let _ = fs::remove_file(&path);
            return Err(StoreError::io("write", &path, e));
        }
        let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_id}"));
        if let Err(e) = fs::write(&last, ip.to_string()) {
            let _ = fs::remove_file(&path);
            return Err(StoreError::io("write", &last, e));
        }
        Ok(true)
    }

    fn last_reserved_ip(&self, range_id: &str) -> Result<Option<IpAddr>, StoreError> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_id}"));
        match fs::read_to_string(&path) {
            // A garbled file only costs us the starting point, as in host-local.
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), StoreError> {
        let path = self.ip_path(ip);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", &path, e)),
        }
    }

    fn release_by_id(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        let all = self.list()?;
        let ips: Vec<IpAddr> = select_owned(&all, id, ifname).iter().map(|r| r.ip).collect();
        for ip in &ips {
            self.release(*ip)?;
        }
        Ok(ips)
    }

    fn get_by_id(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        let all = self.list()?;
        Ok(select_owned(&all, id, ifname).iter().map(|r| r.ip).collect())
    }

    fn owner(&self, ip: IpAddr) -> Result<Option<Owner>, StoreError> {
        let path = self.ip_path(ip);
        match fs::read_to_string(&path) {
            Ok(content) => Ok(Some(parse_owner(&content))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }

    fn list(&self) -> Result<Vec<Reservation>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| StoreError::io("read", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("read", &self.dir, e))?;
            // Only files named by an address are reservations (skips `lock` and `last_reserved_ip.*`).
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(content) => out.push(Reservation { ip, owner: parse_owner(&content) }),
                // Released concurrently by a process that does not honour the lock: nothing to report.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("read", &path, e)),
            }
        }
        out.sort_by_key(|r| crate::range::ip_to_u128(r.ip));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_match_host_local_format() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = DiskStore::lock(tmp.path(), "net1").unwrap();
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        assert!(s.reserve(" abc ", "eth0", ip, "0").unwrap());
        assert!(!s.reserve("other", "eth0", ip, "0").unwrap(), "O_EXCL must refuse a taken address");
        let dir = tmp.path().join("net1");
        assert_eq!(fs::read(dir.join("10.244.1.5")).unwrap(), b"abc\r\neth0");
        assert_eq!(fs::metadata(dir.join("10.244.1.5")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(), "10.244.1.5");
        assert_eq!(s.last_reserved_ip("0").unwrap(), Some(ip));
        assert_eq!(s.last_reserved_ip("1").unwrap(), None);
        let v6: IpAddr = "fd00:10:244:1::5".parse().unwrap();
        assert!(s.reserve("abc", "net1", v6, "1").unwrap());
        assert!(dir.join("fd00:10:244:1::5").exists());
        assert_eq!(s.get_by_id("abc", "eth0").unwrap(), vec![ip]);
        assert_eq!(s.release_by_id("abc", "eth0").unwrap(), vec![ip]);
        assert_eq!(s.release_by_id("abc", "eth0").unwrap(), Vec::<IpAddr>::new(), "repeat release is a no-op");
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn legacy_id_only_files_are_released() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("net1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("10.0.0.7"), "legacy-id\n").unwrap();
        let mut s = DiskStore::lock(tmp.path(), "net1").unwrap();
        assert_eq!(s.get_by_id("legacy-id", "eth0").unwrap(), vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.release_by_id("legacy-id", "eth0").unwrap().len(), 1);
        assert!(!dir.join("10.0.0.7").exists());
    }

    #[test]
    fn lock_is_an_exclusive_flock_on_dir_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DiskStore::lock(tmp.path(), "net1").unwrap();
        let other = File::open(tmp.path().join("net1/lock")).unwrap();
        let busy = Flock::lock(other, FlockArg::LockExclusiveNonblock);
        assert!(busy.is_err(), "a second flock must fail while the store is open");
        drop(s);
        let other = File::open(tmp.path().join("net1/lock")).unwrap();
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_ok(), "lock must be released on drop");
    }
}

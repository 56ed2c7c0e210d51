//! Network namespace handles.
//!
//! We never move the plugin's own threads between namespaces for longer than it takes to open a netlink
//! socket: [`netlink_in`] enters the target namespace on a fresh, dedicated `std::thread` (which ends right
//! after), and the socket it opens stays bound to that namespace. This is the Rust counterpart of the Go
//! plugins' `runtime.LockOSThread()` discipline.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

use crate::netlink::{Netlink, NlError};

/// Why `CNI_NETNS` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path does not exist.
    #[error("{path} does not exist")]
    NotFound {
        /// The path given.
        path: String,
    },
    /// The path exists but is not a network namespace, or is our own.
    #[error("{path}: {reason}")]
    Invalid {
        /// The path given.
        path: String,
        /// Why.
        reason: String,
    },
    /// Opening or entering it failed otherwise.
    #[error("{path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: String,
}

impl NetNs {
    /// Open `path` and make sure it is a network namespace other than the caller's (unless `allow_own`,
    /// libcni's `CNI_NETNS_OVERRIDE`).
    pub fn open(path: &str, allow_own: bool) -> Result<Self, NetnsError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(NetnsError::NotFound { path: path.into() }),
            Err(e) => return Err(NetnsError::Io { path: path.into(), source: e }),
        };
        let fs = fstatfs(file.as_fd()).map_err(|e| NetnsError::Io { path: path.into(), source: e.into() })?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(NetnsError::Invalid {
                path: path.into(),
                reason: "not a network namespace (not on nsfs)".into(),
            });
        }
        if !allow_own {
            let own = std::fs::metadata("/proc/thread-self/ns/net")
                .map_err(|e| NetnsError::Io { path: "/proc/thread-self/ns/net".into(), source: e })?;
            let md = file.metadata().map_err(|e| NetnsError::Io { path: path.into(), source: e })?;
            if own.dev() == md.dev() && own.ino() == md.ino() {
                return Err(NetnsError::Invalid {
                    path: path.into(),
                    reason: "is the plugin's own network namespace".into(),
                });
            }
        }
        Ok(NetNs { file, path: path.into() })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The namespace file (for `IFLA_NET_NS_FD`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A netlink socket inside this namespace.
    pub fn netlink(&self) -> Result<Netlink, NlError> {
        netlink_in(&self.file)
    }

    /// Start opening a netlink socket inside this namespace on a dedicated thread, so the caller can do
    /// host-side work meanwhile; [`PendingNetlink::wait`] collects it.
    pub fn netlink_async(&self) -> Result<PendingNetlink, NetnsError> {
        let file = self.file.try_clone().map_err(|e| NetnsError::Io { path: self.path.clone(), source: e })?;
        let handle = std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NlError::Io(e.into()))?;
                Netlink::open()
                // The thread ends here: it never runs anything else in the pod's namespace.
            })
            .map_err(|e| NetnsError::Io { path: self.path.clone(), source: e })?;
        Ok(PendingNetlink(handle))
    }
}

/// A netlink socket being opened inside a namespace.
#[derive(Debug)]
pub struct PendingNetlink(std::thread::JoinHandle<Result<Netlink, NlError>>);

impl PendingNetlink {
    /// Wait for the socket.
    pub fn wait(self) -> Result<Netlink, NlError> {
        self.0.join().unwrap_or_else(|_| Err(NlError::Io(io::Error::other("namespace thread panicked"))))
    }
}

/// Open a netlink socket inside the namespace `ns` from a dedicated thread that enters it and ends.
pub fn netlink_in(ns: &File) -> Result<Netlink, NlError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NlError::Io(e.into()))?;
            Netlink::open()
        })
        .join()
        .unwrap_or_else(|_| Err(NlError::Io(io::Error::other("namespace thread panicked"))))
    })
}

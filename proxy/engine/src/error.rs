//! Errors of the proxy's setup and serving (not of single requests: those become HTTP statuses).

use std::io;
use std::net::SocketAddr;

/// Why the proxy or the admin server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A metric could not be registered (for example a second proxy on the same registry).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The TLS server configuration was refused by rustls.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The start-up default certificate could not be generated.
    #[error("cannot generate the default certificate: {0}")]
    DefaultCertificate(#[from] rcgen::Error),
    /// Another I/O failure of a listener.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

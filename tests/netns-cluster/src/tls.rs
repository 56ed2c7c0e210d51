//! Test certificates: one CA and a leaf per host, generated in the test (rcgen), written where curl and the
//! Secrets need them.

use crate::error::{Error, Result};

/// A CA and leaves signed by it.
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate (PEM), for `curl --cacert`.
    pub ca_pem: String,
    /// `(host, cert PEM, key PEM)` per leaf.
    pub leaves: Vec<(String, String, String)>,
}

/// Generates a CA and one leaf certificate for each of `hosts`.
pub fn generate(hosts: &[&str]) -> Result<TestPki> {
    let err = |e: rcgen::Error| Error::check(format!("generating test certificates: {e}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "causeway netns test CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(err)?;
    let mut leaves = Vec::new();
    for host in hosts {
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(err)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, *host);
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &ca).map_err(err)?;
        leaves.push((host.to_string(), cert.pem(), key.serialize_pem()));
    }
    Ok(TestPki { ca_pem: ca.pem(), leaves })
}

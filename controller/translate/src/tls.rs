//! `kubernetes.io/tls` Secrets to certificates.

use causeway_model::{Diagnostic, ObjectRef, TlsCertificate};
use k8s_openapi::api::core::v1::Secret;

/// The Secret type holding a certificate and key.
pub(crate) const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The certificate chain and key of a TLS Secret (PEM).
#[derive(Clone, Debug)]
pub(crate) struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Check a Secret is a usable TLS Secret and take out its PEM blocks. The error is a diagnostic on the Secret;
/// `fallback` ends the message: what happens instead.
pub(crate) fn cert_key(secret: &Secret, fallback: &str) -> Result<CertKey, Box<Diagnostic>> {
    let obj = ObjectRef::new(
        "Secret",
        secret.metadata.namespace.clone().unwrap_or_default(),
        secret.metadata.name.clone().unwrap_or_default(),
    );
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    if ty != TLS_SECRET_TYPE {
        return Err(Box::new(Diagnostic::error(
            obj,
            "type",
            format!("type is {ty:?}, not \"{TLS_SECRET_TYPE}\"; {fallback}"),
        )));
    }
    let field = |key: &str, marker: &str, what: &str| -> Result<String, Box<Diagnostic>> {
        let path = format!("data[\"{key}\"]");
        let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
            return Err(Box::new(Diagnostic::error(obj.clone(), path, format!("{key} is missing; {fallback}"))));
        };
        let Ok(text) = std::str::from_utf8(&bytes.0) else {
            return Err(Box::new(Diagnostic::error(obj.clone(), path, format!("{key} is not PEM text; {fallback}"))));
        };
        if !text.contains(marker) {
            return Err(Box::new(Diagnostic::error(
                obj.clone(),
                path,
                format!("{key} holds no PEM {what} (no {marker:?} line); {fallback}"),
            )));
        }
        Ok(text.to_owned())
    };
    let cert_pem = field("tls.crt", "-----BEGIN CERTIFICATE-----", "certificate")?;
    let key_pem = field("tls.key", "PRIVATE KEY-----", "private key")?;
    Ok(CertKey { cert_pem, key_pem })
}

/// The default certificate from `--default-tls-secret ns/name`, or a diagnostic.
pub(crate) fn default_certificate(
    index: &crate::Index,
    secret: Option<&(String, String)>,
    diags: &mut Vec<Diagnostic>,
) -> Option<TlsCertificate> {
    let (ns, name) = secret?;
    let obj = ObjectRef::new("Secret", ns.clone(), name.clone());
    let Some(secret) = index.secret(ns, name) else {
        diags.push(Diagnostic::error(
            obj,
            "",
            "the --default-tls-secret Secret does not exist; the proxy uses its generated certificate",
        ));
        return None;
    };
    match cert_key(secret, "the proxy uses its generated default certificate") {
        Ok(ck) => Some(TlsCertificate { hosts: Vec::new(), cert_pem: ck.cert_pem, key_pem: ck.key_pem, secret: obj }),
        Err(d) => {
            diags.push(*d);
            None
        }
    }
}

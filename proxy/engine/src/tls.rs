//! TLS: certificates loaded from the table, chosen per handshake by SNI from the *current* table.
//!
//! The rustls [`ServerConfig`] is built once; its resolver reads the live [`CompiledTable`], so a new
//! certificate needs no restart and no new config.

use crate::table::CompiledTable;
use arc_swap::ArcSwap;
use causeway_model::TlsCertificate;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Certificates of one compiled table, by SNI.
pub(crate) struct CertMap {
    pub exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`.
    pub wildcard: HashMap<String, Arc<CertifiedKey>>,
    pub default: Arc<CertifiedKey>,
}

impl CertMap {
    /// Exact SNI first, then the wildcard for its parent domain, else the default certificate.
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(sni) = sni else { return self.default.clone() };
        let sni = sni.trim_end_matches('.');
        let lower;
        let sni = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = sni.to_ascii_lowercase();
            lower.as_str()
        } else {
            sni
        };
        if let Some(k) = self.exact.get(sni) {
            return k.clone();
        }
        if let Some((_, parent)) = sni.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return k.clone();
        }
        self.default.clone()
    }
}

/// A certificate parsed from PEM, with its leaf's expiry.
pub(crate) struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// notAfter of the leaf as Unix seconds, when it could be read.
    pub not_after: Option<i64>,
}

/// Parses a certificate chain and its key, and checks that they belong together.
pub(crate) fn load(cert: &TlsCertificate) -> Result<LoadedCert, String> {
    load_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
}

/// As [`load`], from PEM bytes.
pub(crate) fn load_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCert, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".to_owned());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("tls.key is not a valid PEM private key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key is not a supported key type: {e}"))?;
    let not_after = not_after_unix(chain[0].as_ref());
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| format!("tls.key does not match the certificate in tls.crt: {e}"))?;
    Ok(LoadedCert { key: Arc::new(certified), not_after })
}

/// Generates the self-signed certificate served when the table names no default one.
pub(crate) fn generate_default() -> Result<Arc<CertifiedKey>, rcgen::Error> {
    let generated = rcgen::generate_simple_self_signed(vec!["causeway-default.invalid".to_owned()])?;
    let cert_pem = generated.cert.pem();
    let key_pem = generated.signing_key.serialize_pem();
    // Our own freshly generated pair always loads; map the impossible failure to an rcgen error anyway.
    load_pem(cert_pem.as_bytes(), key_pem.as_bytes()).map(|l| l.key).map_err(|_| rcgen::Error::CouldNotParseKeyPair)
}

/// Picks certificates from the live table.
pub(crate) struct TableResolver {
    pub table: Arc<ArcSwap<CompiledTable>>,
}

impl fmt::Debug for TableResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for TableResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.table.load().certs.pick(hello.server_name()))
    }
}

/// TLS 1.2 and 1.3 only, ALPN h2 then http/1.1, certificates from the live table.
pub(crate) fn server_config(table: Arc<ArcSwap<CompiledTable>>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(TableResolver { table }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// === DER: just enough to read a certificate's notAfter ===

/// Reads one DER TLV at the start of `input`: (tag, contents, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// notAfter of an X.509 certificate (DER) as Unix seconds.
pub(crate) fn not_after_unix(der: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = der_tlv(der)? else { return None };
    let (0x30, tbs, _) = der_tlv(cert)? else { return None };
    let mut rest = tbs;
    // Optional explicit [0] version.
    if rest.first() == Some(&0xa0) {
        rest = der_tlv(rest)?.2;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = der_tlv(rest)?.2;
    }
    let (0x30, validity, _) = der_tlv(rest)? else { return None };
    let (_, _, after_not_before) = der_tlv(validity)?;
    let (tag, time, _) = der_tlv(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    parse_asn1_time(tag, text)
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn parse_asn1_time(tag: u8, text: &str) -> Option<i64> {
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let (month, day) = (num(&rest[..2])?, num(&rest[2..4])?);
    let (hour, min, sec) = (num(&rest[4..6])?, num(&rest[6..8])?, num(&rest[8..10])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_asn1_time(0x17, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_asn1_time(0x18, "20380119031408Z"), Some(2_147_483_648));
        assert_eq!(parse_asn1_time(0x17, "49123123595Z"), None);
    }

    #[test]
    fn reads_not_after_of_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after_unix(cert.der()), Some(days_from_civil(2031, 7, 4) * 86_400));
        assert_eq!(not_after_unix(b"\x30\x03\x02\x01"), None);
    }

    #[test]
    fn der_reader_never_panics() {
        // Every prefix and many corruptions of a real certificate, plus random bytes.
        let cert = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let der = cert.cert.der().to_vec();
        for end in 0..der.len() {
            let _ = not_after_unix(&der[..end]);
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let mut bytes = der.clone();
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
            let _ = not_after_unix(&bytes);
            let random: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
            let _ = not_after_unix(&random);
            let _ = load_pem(&random, &random);
        }
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".to_owned()]).unwrap();
        let err = load_pem(a.cert.pem().as_bytes(), b.signing_key.serialize_pem().as_bytes()).err().unwrap();
        assert!(err.contains("does not match"), "{err}");
        assert!(load_pem(b"garbage", b"garbage").is_err());
    }
}

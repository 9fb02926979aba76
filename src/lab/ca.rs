//! The lab CA, created at `lab up` (its key never leaves memory), and the server
//! configurations it mints for the origins: one certificate per SNI (or per address when the
//! client sends none), cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Minted configurations kept at most (the cache is emptied when full).
const CACHE_MAX: usize = 10_000;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen failed.
    #[error("cannot make a certificate: {0}")]
    Mint(#[from] rcgen::Error),
    /// rustls refused the certificate.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A lab's certificate authority.
pub struct LabCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    cache: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for LabCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabCa").finish_non_exhaustive()
    }
}

impl LabCa {
    /// A fresh CA for lab `lab`.
    pub fn new(lab: &str) -> Result<LabCa, CaError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("blocklab lab {lab} CA"));
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(LabCa {
            cert,
            key,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM (what `SSL_CERT_FILE` points at).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The server configuration presenting a certificate for `name` (a DNS name or an
    /// address), minted once and cached.
    pub fn server_config(&self, name: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.get(&name).cloned()) {
            return Ok(c);
        }
        let mut params = rcgen::CertificateParams::new(vec![name.clone()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let chain = vec![cert.der().clone(), self.der()];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(name, Arc::clone(&cfg));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_per_name_and_caches() {
        let ca = LabCa::new("t").unwrap();
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let a = ca.server_config("Example.org.").unwrap();
        let b = ca.server_config("example.org").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(ca.server_config("10.77.0.2").is_ok());
    }
}

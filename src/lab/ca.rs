//! The lab CA, created at `lab up` (its key never leaves memory), and the server
//! configurations it mints for the origins: one certificate per SNI (or per address when the
//! client sends none), cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

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
    keys: Mutex<HashMap<String, Arc<CertifiedKey>>>,
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
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM (what `SSL_CERT_FILE` points at).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate and key for `name`, signed by the CA: (chain, PKCS#8 key).
    fn mint(
        &self,
        name: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((
            vec![cert.der().clone(), self.der()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ))
    }

    /// The signed certificate for `name` as rustls serves it (for the QUIC origin), minted
    /// once and cached.
    pub fn certified_key(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.keys.lock().ok().and_then(|c| c.get(&name).cloned()) {
            return Ok(k);
        }
        let (chain, key) = self.mint(&name)?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let k = Arc::new(CertifiedKey::new(chain, signer));
        if let Ok(mut c) = self.keys.lock() {
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(name, Arc::clone(&k));
        }
        Ok(k)
    }

    /// The server configuration presenting a certificate for `name` (a DNS name or an
    /// address), minted once and cached.
    pub fn server_config(&self, name: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.get(&name).cloned()) {
            return Ok(c);
        }
        let (chain, key) = self.mint(&name)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
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

/// Mints per SNI inside a rustls handshake (the QUIC origin); a ClientHello without SNI gets
/// a certificate for [`NO_SNI_NAME`].
#[derive(Debug)]
pub struct Resolver(pub Arc<LabCa>);

/// The certificate name given to clients that send no SNI.
pub const NO_SNI_NAME: &str = "origin.blocklab.lab";

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().unwrap_or(NO_SNI_NAME);
        self.0.certified_key(name).ok()
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
        let k = ca.certified_key("example.org").unwrap();
        assert_eq!(k.cert.len(), 2);
    }
}

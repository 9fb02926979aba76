//! Test inputs made by real TLS stacks. One copy, shared by the unit tests, `tests/common`
//! and `benches/inpath.rs` (they include this file with `#[path]`).

use std::sync::Arc;

/// The first flight of a rustls client connecting to `name` (a real ClientHello record).
pub(crate) fn rustls_client_hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

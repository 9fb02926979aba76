//! The connectivity step: TCP connects to every resolved endpoint (directly, or as `CONNECT`
//! tunnels through the HTTP proxy under test) and, for `https://` URLs, TLS handshakes with the
//! URL's SNI using `rustls`. Established connections are kept for the web step, as current
//! OONI probes do.
//!
//! Trust: `--ca FILE` (PEM), else the system bundle; `--insecure` accepts any certificate
//! (lab use only: an HTTPS success then no longer proves the real server answered).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::facts::{ConnectFacts, TlsFacts};
use super::failure;

/// A byte stream the web step can use (plain TCP, a tunnel, or TLS over either).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub type Stream = Box<dyn Io>;

/// Why the TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read or holds no certificate.
    #[error("{path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The TLS client configuration: roots from `ca` (PEM), else the system bundle, or no
/// verification at all with `insecure`.
pub fn tls_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let paths: Vec<&Path> = match ca {
            Some(p) => vec![p],
            None => SYSTEM_BUNDLES
                .iter()
                .map(Path::new)
                .filter(|p| p.exists())
                .take(1)
                .collect(),
        };
        for p in paths {
            let shown = p.display().to_string();
            let ca_err = |reason: String| TlsSetupError::Ca {
                path: shown.clone(),
                reason,
            };
            let pem = std::fs::read(p).map_err(|e| ca_err(format!("cannot read: {e}")))?;
            let mut n = 0;
            for cert in rustls_pemfile_certs(&pem).map_err(ca_err)? {
                if roots.add(cert).is_ok() {
                    n += 1;
                }
            }
            if n == 0 && ca.is_some() {
                return Err(ca_err("no usable certificate in the file".into()));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens a TCP connection to `target`, directly or as a `CONNECT target` tunnel through
/// `proxy`.
pub async fn connect(
    target: SocketAddr,
    proxy: Option<SocketAddr>,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let target_name = target.to_string();
    let step = async {
        match proxy {
            None => TcpStream::connect(target)
                .await
                .map_err(|e| failure::from_io(&e)),
            Some(p) => {
                let mut s = TcpStream::connect(p)
                    .await
                    .map_err(|e| failure::from_io(&e))?;
                let req = format!(
                    "CONNECT {target_name} HTTP/1.1\r\nHost: {target_name}\r\nUser-Agent: {UA}\r\n\r\n"
                );
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| failure::from_io(&e))?;
                let head = read_head(&mut s).await?;
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&head) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => return Err("unknown_failure: malformed proxy response".into()),
                }
                match resp.code {
                    Some(c) if (200..300).contains(&c) => Ok(s),
                    Some(c) => Err(format!("unknown_failure: proxy answered {c} to CONNECT")),
                    None => Err("unknown_failure: malformed proxy response".into()),
                }
            }
        }
    };
    match tokio::time::timeout(timeout, step).await {
        Ok(r) => r,
        Err(_) => Err(failure::TIMEOUT.into()),
    }
}

/// The User-Agent sent (a common browser's, as OONI does).
pub const UA: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// Reads an HTTP response head (through the blank line) without reading past it.
pub async fn read_head<R: AsyncRead + Unpin>(s: &mut R) -> Result<Vec<u8>, String> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    loop {
        let n = s.read(&mut byte).await.map_err(|e| failure::from_io(&e))?;
        if n == 0 {
            return Err(failure::EOF.into());
        }
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
        if head.len() > 64 * 1024 {
            return Err("unknown_failure: response head too large".into());
        }
    }
}

/// Performs a TLS handshake with `sni` over `stream`.
pub async fn handshake(
    stream: TcpStream,
    sni: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<(Stream, String), String> {
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| format!("unknown_failure: bad server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Err(_) => Err(failure::TIMEOUT.into()),
        Ok(Err(e)) => Err(failure::from_io(&e)),
        Ok(Ok(tls)) => {
            let version = match tls.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "",
            };
            Ok((Box::new(tls), version.to_string()))
        }
    }
}

/// One endpoint's connectivity step: connect, then TLS when `sni` is given.
pub async fn endpoint(
    addr: SocketAddr,
    proxy: Option<SocketAddr>,
    sni: Option<String>,
    tls: Arc<ClientConfig>,
    timeout: Duration,
    start: Instant,
) -> (ConnectFacts, Option<TlsFacts>, Option<Stream>) {
    let r = connect(addr, proxy, timeout).await;
    let t = start.elapsed().as_secs_f64();
    let tcp = match r {
        Ok(s) => s,
        Err(f) => {
            let c = ConnectFacts {
                addr,
                failure: Some(f),
                t,
            };
            return (c, None, None);
        }
    };
    let c = ConnectFacts {
        addr,
        failure: None,
        t,
    };
    let Some(sni) = sni else {
        return (c, None, Some(Box::new(tcp)));
    };
    let r = handshake(tcp, &sni, tls, timeout).await;
    let t = start.elapsed().as_secs_f64();
    match r {
        Ok((s, v)) => (
            c,
            Some(TlsFacts {
                addr,
                server_name: sni,
                failure: None,
                tls_version: Some(v),
                t,
            }),
            Some(s),
        ),
        Err(f) => (
            c,
            Some(TlsFacts {
                addr,
                server_name: sni,
                failure: Some(f),
                tls_version: None,
                t,
            }),
            None,
        ),
    }
}

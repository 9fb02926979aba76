//! OONI failure strings (`ooni/spec` `data-formats/df-007-errors.md`, as produced by
//! `ooni/probe-cli` `netxlite`) from Rust I/O, TLS and DNS errors.
//!
//! Only OONI's strings are used; anything they do not name becomes
//! `unknown_failure: <detail>`, as OONI does.

use std::io;

/// The connection was reset (RST).
pub const CONNECTION_RESET: &str = "connection_reset";
/// The peer refused the connection.
pub const CONNECTION_REFUSED: &str = "connection_refused";
/// An operation timed out.
pub const TIMEOUT: &str = "generic_timeout_error";
/// The peer closed the connection early.
pub const EOF: &str = "eof_error";
/// The resolver said the name does not exist.
pub const DNS_NXDOMAIN: &str = "dns_nxdomain_error";
/// The resolver refused the query.
pub const DNS_REFUSED: &str = "dns_refused_error";
/// The resolver answered SERVFAIL (or another error rcode).
pub const DNS_SERVER_MISBEHAVING: &str = "dns_server_misbehaving";
/// The resolver answered with no address.
pub const DNS_NO_ANSWER: &str = "dns_no_answer";

/// The OONI string for an I/O error (TLS errors wrapped in it included).
pub fn from_io(e: &io::Error) -> String {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return from_tls(tls);
    }
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            CONNECTION_RESET.into()
        }
        io::ErrorKind::ConnectionRefused => CONNECTION_REFUSED.into(),
        io::ErrorKind::TimedOut => TIMEOUT.into(),
        io::ErrorKind::UnexpectedEof => EOF.into(),
        io::ErrorKind::HostUnreachable => "host_unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network_unreachable".into(),
        io::ErrorKind::AddrNotAvailable => "address_not_available".into(),
        _ => format!("unknown_failure: {e}"),
    }
}

/// The OONI string for a TLS handshake error.
pub fn from_tls(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "ssl_invalid_hostname".into()
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "ssl_unknown_authority".into()
        }
        Error::InvalidCertificate(_) => "ssl_invalid_certificate".into(),
        _ => "ssl_failed_handshake".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_map_to_ooni_strings() {
        let k = |k| from_io(&io::Error::from(k));
        assert_eq!(k(io::ErrorKind::ConnectionReset), "connection_reset");
        assert_eq!(k(io::ErrorKind::ConnectionRefused), "connection_refused");
        assert_eq!(k(io::ErrorKind::TimedOut), "generic_timeout_error");
        assert_eq!(k(io::ErrorKind::UnexpectedEof), "eof_error");
        assert!(k(io::ErrorKind::Other).starts_with("unknown_failure: "));
    }

    #[test]
    fn tls_errors_inside_io_errors() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(from_io(&e), "ssl_unknown_authority");
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        );
        assert_eq!(from_io(&e), "ssl_invalid_hostname");
    }
}

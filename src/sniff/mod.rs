//! Pure parsers for what an on-path censor reads without decrypting: no I/O, no tokio, no
//! tracing, no clock.
//!
//! - [`client_hello`]: TLS and DTLS ClientHellos: SNI, ALPN, ECH presence, JA4 fingerprint.
//! - [`http_head`]: the Host and path of a plain HTTP request.
//! - [`quic`]: QUIC v1 Initial packets: removing their protection (RFC 9001) and reading the
//!   ClientHello from their CRYPTO frames.

pub mod client_hello;
pub mod http_head;
pub mod quic;

#[cfg(test)]
pub(crate) mod testdata;

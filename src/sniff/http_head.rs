//! Plain-HTTP request sniffing: the Host and path of the request at the start of a stream.
//!
//! [`parse`] mirrors the ClientHello parser: `Ok(Some(head))` for a request head with a Host
//! header, `Ok(None)` for bytes that are not an HTTP/1.x request (or name no host),
//! `Err(Incomplete)` while the head is not yet complete.

use super::client_hello::Incomplete;

/// The longest request head the sniffer waits for.
pub const MAX_HEAD: usize = 16 * 1024;

/// What a censor reads from a plain HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHead {
    /// Host name from the `Host` header, lower-case, without port.
    pub host: String,
    /// Port from the `Host` header, if any.
    pub port: Option<u16>,
    /// Request target path (origin-form), or `/`.
    pub path: String,
}

/// Whether `buf` starts like an HTTP request line (an upper-case method then a space).
pub fn looks_like_http(buf: &[u8]) -> bool {
    let method_len = buf.iter().take_while(|c| c.is_ascii_uppercase()).count();
    if method_len == buf.len() {
        return method_len > 0 && method_len <= 10;
    }
    (1..=10).contains(&method_len) && buf[method_len] == b' '
}

/// Splits `host[:port]` (IPv6 literals in brackets) into a lower-case host and a port.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((h.to_ascii_lowercase(), port));
    }
    let (h, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (s, None),
    };
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty() {
        return None;
    }
    Some((h.to_ascii_lowercase(), port))
}

/// The request head at the start of `buf` (see the module docs).
pub fn parse(buf: &[u8]) -> Result<Option<HttpHead>, Incomplete> {
    if buf.is_empty() {
        return Err(Incomplete);
    }
    if !looks_like_http(&buf[..buf.len().min(11)]) {
        return Ok(None);
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Ok(None)
        } else {
            Err(Incomplete)
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Ok(None);
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (_method, target) = (parts.next(), parts.next().unwrap_or("/"));
    let path = if target.starts_with('/') {
        target.to_string()
    } else if let Some(after) = target.split_once("://").map(|x| x.1) {
        after
            .find('/')
            .map_or("/".to_string(), |i| after[i..].to_string())
    } else {
        "/".to_string()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("host") {
            return Ok(split_host_port(value).map(|(host, port)| HttpHead { host, port, path }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_then_stable() {
        let req = b"GET /a/b?c HTTP/1.1\r\nUser-Agent: x\r\nHost: Facebook.com:8080\r\n\r\n";
        for i in 0..req.len() {
            assert_eq!(parse(&req[..i]), Err(Incomplete), "prefix {i}");
        }
        let want = HttpHead {
            host: "facebook.com".into(),
            port: Some(8080),
            path: "/a/b?c".into(),
        };
        assert_eq!(parse(req), Ok(Some(want.clone())));
        let mut more = req.to_vec();
        more.extend(b"body");
        assert_eq!(parse(&more), Ok(Some(want)));
    }

    #[test]
    fn not_http_or_no_host() {
        assert_eq!(parse(&[0x16, 3, 1]), Ok(None));
        assert_eq!(parse(b"get / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n"), Ok(None));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nhost: [::1]:80\r\n\r\n")
                .unwrap()
                .unwrap()
                .host,
            "::1"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&bytes);
            let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            req.extend(&bytes);
            let _ = parse(&req);
        }
    }
}

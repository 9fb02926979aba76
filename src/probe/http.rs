//! The web step: one HTTP/1.1 `GET` for the URL on an established connection (origin form),
//! or through the HTTP proxy (absolute form), with the body read up to a size and a time
//! limit and the download rate measured. Redirects are recorded, never followed: a lab probe
//! must not chase a censor's blockpage host outside the lab.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::facts::HttpFacts;
use super::failure;
use super::net::{read_head, Stream, UA};

/// Limits of the body download.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Timeout for sending the request and receiving the response head.
    pub timeout: Duration,
    /// Maximum body bytes kept and downloaded.
    pub max_body: usize,
    /// Maximum time spent downloading the body.
    pub download_time: Duration,
}

/// The request head for `url`; `absolute` for a forward proxy.
pub fn request_head(url: &url::Url, absolute: bool) -> String {
    let host = url.host_str().unwrap_or("");
    let host_header = match url.port() {
        Some(p) => format!("{}:{p}", bracket(host)),
        None => bracket(host),
    };
    let target = if absolute {
        url.as_str().to_string()
    } else {
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {UA}\r\n\
         Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
         Accept-Language: en-US;q=0.8,en;q=0.5\r\nAccept-Encoding: identity\r\n\
         Connection: close\r\n\r\n"
    )
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// OONI's title extraction (`(?i)<title>([^<]{1,512})</title>`).
pub fn title(body: &[u8]) -> String {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(?i)<title>([^<]{1,512})</title>").ok());
    let text = String::from_utf8_lossy(body);
    re.as_ref()
        .and_then(|r| r.captures(&text))
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
        .unwrap_or_default()
}

/// Sends the GET on `stream` and reads the response.
pub async fn get(
    mut stream: Stream,
    url: &url::Url,
    absolute: bool,
    limits: Limits,
    start: Instant,
) -> HttpFacts {
    let sent = Instant::now();
    let head = async {
        stream
            .write_all(request_head(url, absolute).as_bytes())
            .await
            .map_err(|e| failure::from_io(&e))?;
        stream.flush().await.map_err(|e| failure::from_io(&e))?;
        read_head(&mut stream).await
    };
    let head = match tokio::time::timeout(limits.timeout, head).await {
        Err(_) => Err(failure::TIMEOUT.to_string()),
        Ok(r) => r,
    };
    let head = match head {
        Ok(h) => h,
        Err(f) => return failed(f, start),
    };
    let mut hbuf = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut hbuf);
    let (status, headers) = match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => (
            resp.code,
            resp.headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect::<Vec<_>>(),
        ),
        _ => return failed("unknown_failure: malformed HTTP response".into(), start),
    };
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.trim().to_string())
    };
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = if chunked {
        None
    } else {
        header("content-length").and_then(|v| v.parse().ok())
    };
    let (raw, truncated, failure) = read_body(&mut stream, chunked, length, limits).await;
    let download = Some((raw.len() as u64, sent.elapsed().as_secs_f64()));
    let body = if chunked { dechunk(&raw) } else { raw };
    HttpFacts {
        failure,
        status,
        title: title(&body),
        headers,
        body,
        body_is_truncated: truncated,
        download,
        t: start.elapsed().as_secs_f64(),
    }
}

fn failed(f: String, start: Instant) -> HttpFacts {
    HttpFacts {
        failure: Some(f),
        t: start.elapsed().as_secs_f64(),
        ..HttpFacts::default()
    }
}

/// Reads the raw body: `(bytes, truncated, failure)`.
async fn read_body(
    stream: &mut Stream,
    chunked: bool,
    length: Option<usize>,
    limits: Limits,
) -> (Vec<u8>, bool, Option<String>) {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::sleep(limits.download_time);
    tokio::pin!(deadline);
    loop {
        if let Some(l) = length {
            if raw.len() >= l {
                raw.truncate(l);
                return (raw, false, None);
            }
        }
        if chunked && raw.ends_with(b"0\r\n\r\n") {
            return (raw, false, None);
        }
        if raw.len() >= limits.max_body {
            raw.truncate(limits.max_body);
            return (raw, true, None);
        }
        tokio::select! {
            _ = &mut deadline => return (raw, true, None),
            r = stream.read(&mut buf) => match r {
                Ok(0) => {
                    // Closed: complete unless a length promised more.
                    let short = length.is_some_and(|l| raw.len() < l);
                    return (raw, short, None);
                }
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => {
                    let f = failure::from_io(&e);
                    return (raw, true, Some(f));
                }
            }
        }
    }
}

/// Decodes a chunked body, tolerating truncation (what arrived is kept).
pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_txt = String::from_utf8_lossy(&rest[..eol]);
        let size_txt = size_txt.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_txt, 16) else {
            break;
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(rest.len());
        out.extend_from_slice(&rest[..take]);
        if rest.len() < size + 2 {
            break;
        }
        rest = &rest[size + 2..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn titles_the_ooni_way() {
        assert_eq!(
            title(b"<html><TITLE>Example Domain</TITLE>"),
            "Example Domain"
        );
        assert_eq!(title(b"<title lang=en>x</title>"), "");
        assert_eq!(title(b"no title"), "");
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(dechunk(b"5\r\nhel"), b"hel");
    }

    #[test]
    fn request_forms() {
        let u = url::Url::parse("http://facebook.com:8080/a?b=c").unwrap();
        let h = request_head(&u, false);
        assert!(
            h.starts_with("GET /a?b=c HTTP/1.1\r\nHost: facebook.com:8080\r\n"),
            "{h}"
        );
        let h = request_head(&u, true);
        assert!(
            h.starts_with("GET http://facebook.com:8080/a?b=c HTTP/1.1\r\n"),
            "{h}"
        );
        let u = url::Url::parse("https://[::1]/").unwrap();
        assert!(request_head(&u, false).contains("Host: [::1]\r\n"));
    }

    /// Serves `response` (then stalls for `stall` or closes) to one client; returns the URL.
    async fn serve_once(response: &'static [u8], stall: Option<Duration>) -> url::Url {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            s.write_all(response).await.unwrap();
            if let Some(d) = stall {
                tokio::time::sleep(d).await;
            }
        });
        url::Url::parse(&format!("http://lab.example:{port}/")).unwrap()
    }

    async fn fetch(url: &url::Url, limits: Limits) -> HttpFacts {
        let port = url.port().unwrap();
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        get(Box::new(s), url, false, limits, Instant::now()).await
    }

    fn limits() -> Limits {
        Limits {
            timeout: Duration::from_secs(2),
            max_body: 1 << 20,
            download_time: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn chunked_response_from_a_real_socket() {
        let u = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Lab: 1\r\n\r\n\
              10\r\n<title>A</title>\r\n0\r\n\r\n",
            Some(Duration::from_secs(5)),
        )
        .await;
        let h = fetch(&u, limits()).await;
        assert_eq!(h.failure, None);
        assert_eq!(h.status, Some(200));
        assert_eq!(h.body, b"<title>A</title>");
        assert_eq!(h.title, "A");
        assert!(!h.body_is_truncated);
        assert!(h.headers.iter().any(|(k, v)| k == "X-Lab" && v == "1"));
    }

    #[tokio::test]
    async fn a_stalled_body_is_truncated_at_the_download_time() {
        let u = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
            Some(Duration::from_secs(5)),
        )
        .await;
        let h = fetch(&u, limits()).await;
        assert_eq!(h.failure, None);
        assert_eq!(h.body, b"only ten b");
        assert!(h.body_is_truncated);
        let (bytes, secs) = h.download.unwrap();
        assert_eq!(bytes, 10);
        assert!(secs >= 0.5, "{secs}");
    }

    #[tokio::test]
    async fn a_closed_connection_without_response_is_eof_error() {
        let u = serve_once(b"", None).await;
        let h = fetch(&u, limits()).await;
        assert_eq!(h.failure.as_deref(), Some("eof_error"));
        assert_eq!(h.status, None);
    }
}

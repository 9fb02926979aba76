//! The one test harness. The gateway two ways: in-process ([`Gateway`]:
//! `blocklab::serve::start` on its own runtime, bound addresses from `Serving`, its log captured
//! per gateway) and as the real binary ([`Blocklab`], for signals and exit codes). Around it:
//! one configurable [`Dnsmasq`] upstream, [`free_port`], [`require`] (a missing tool fails the
//! test, never skips it), origin servers (plain HTTP with hyper, HTTPS with rustls and a test CA
//! from rcgen) and real `curl`. Everything listens on loopback only.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Rules of a lab jurisdiction without `http_blockpage` (so a local 451) using every
/// technique the proxy enacts (`tests/data/rules/lab.toml`).
pub const LAB_RULES: &str = include_str!("../data/rules/lab.toml");

/// Fails the test when `tool` is not on PATH. Never skips: under `CI=true` and everywhere else a
/// missing tool is a failure, with the package to install.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(tool).is_file());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        found,
        "required tool `{tool}` is missing{}: install it (the PKGS list of .ci/run names its Debian package)",
        if ci { " under CI=true" } else { "" }
    );
}

/// Runs `blocklab serve` (the binary) on `config`, written to `dir/c.toml`, which must be
/// refused before anything is bound (exit status 2); returns what it printed on stderr.
pub fn serve_refuses(dir: &Path, config: &str) -> String {
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// A loopback port free for both UDP and TCP (the OS may hand it out again: bind soon).
pub fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A real `dnsmasq` upstream on a free loopback port, serving what it is configured with;
/// killed on drop.
pub struct Dnsmasq {
    child: Child,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// What a [`Dnsmasq`] serves: `addn-hosts` lines, `--address`, `--cname`, `--txt-record`
/// values and any other flag.
#[derive(Default, Clone)]
pub struct DnsmasqConfig {
    hosts: String,
    args: Vec<String>,
}

impl DnsmasqConfig {
    /// hosts(5) lines (`ADDRESS NAME`), served with TTL 300 under the local domain `test`.
    pub fn hosts(mut self, lines: &str) -> Self {
        self.hosts.push_str(lines);
        self
    }

    /// `--address=VALUE`, e.g. `/facebook.com/127.0.0.1`, or `/rt.com/` for NXDOMAIN.
    pub fn address(self, value: &str) -> Self {
        self.arg(&format!("--address={value}"))
    }

    /// Any other dnsmasq flag, e.g. `--cname=a.test,b.test` or `--dns-forward-max=1000`.
    pub fn arg(mut self, flag: &str) -> Self {
        self.args.push(flag.to_string());
        self
    }

    /// Starts it and waits until it answers.
    pub fn start(self) -> Dnsmasq {
        Dnsmasq::start_with(self)
    }
}

impl Dnsmasq {
    /// A builder.
    pub fn config() -> DnsmasqConfig {
        DnsmasqConfig::default()
    }

    fn start_with(cfg: DnsmasqConfig) -> Dnsmasq {
        require("dnsmasq");
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, &cfg.hosts).unwrap();
        for _ in 0..10 {
            let port = free_port();
            let mut child = Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--local=/test/",
                    "--local-ttl=300",
                    "--user=root",
                    "--pid-file=",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", hosts.display()))
                .args(&cfg.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken: try another
                }
                if answers(addr) {
                    return Dnsmasq {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start");
    }

    /// Stops it (the upstream goes away).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a DNS server answers anything on `addr` within 300 ms.
fn answers(addr: SocketAddr) -> bool {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // A query for `ready.check. A`, id 0x5253.
    let mut q = vec![0x52, 0x53, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "check"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let _ = s.send_to(&q, addr);
    let mut buf = [0u8; 512];
    matches!(s.recv(&mut buf), Ok(n) if n >= 12 && buf[..2] == [0x52, 0x53])
}

/// Writes `config` as `blocklab.toml` and `rules` (file name -> text) into `rules/` of a new
/// temporary directory.
fn config_dir(config: &str, rules: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    if !rules.is_empty() {
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        for (name, text) in rules {
            std::fs::write(dir.path().join("rules").join(name), text).unwrap();
        }
    }
    let path = dir.path().join("blocklab.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

/// Log lines of one in-process gateway.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A gateway running in this process (`blocklab::serve::start`) on a runtime of its own, whose
/// threads log (as the binary would, without colours) into a buffer of this gateway only.
/// Stopped on drop. Threads the gateway starts itself (the DNS frontend's UDP threads) log
/// nowhere: tests that assert those lines run the binary ([`Blocklab::start_logging`]).
pub struct Gateway {
    serving: Option<blocklab::serve::Serving>,
    rt: Option<tokio::runtime::Runtime>,
    log: LogBuf,
    /// The config directory (`blocklab.toml`, `rules/`).
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `config` (with `rules` in `rules/`), logging at `info`; panics when it cannot.
    pub fn start(config: &str, rules: &[(&str, &str)]) -> Gateway {
        Gateway::start_logging(config, rules, "info")
    }

    /// [`Gateway::start`] with an `EnvFilter` directive for the captured log.
    pub fn start_logging(config: &str, rules: &[(&str, &str)], filter: &str) -> Gateway {
        Gateway::try_start(config, rules, filter).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the gateway, or says why it did not start (config or bind error).
    pub fn try_start(
        config: &str,
        rules: &[(&str, &str)],
        filter: &str,
    ) -> Result<Gateway, String> {
        let (dir, path) = config_dir(config, rules);
        let log = LogBuf::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let dispatch = tracing::Dispatch::new(subscriber);
        let d = dispatch.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                // For the thread's whole life: everything this runtime runs logs here.
                std::mem::forget(tracing::dispatcher::set_default(&d));
            })
            .build()
            .unwrap();
        let config = blocklab::config::Config::load(&path).map_err(|e| e.to_string())?;
        // Started from a plain thread, so that async tests (inside a runtime) can call this.
        let handle = rt.handle().clone();
        let started = std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                handle.block_on(blocklab::serve::start(config))
            })
        })
        .join()
        .unwrap();
        match started {
            Ok(serving) => Ok(Gateway {
                serving: Some(serving),
                rt: Some(rt),
                log,
                dir,
            }),
            Err(e) => {
                rt.shutdown_background();
                Err(e.to_string())
            }
        }
    }

    fn serving(&self) -> &blocklab::serve::Serving {
        self.serving.as_ref().unwrap()
    }

    /// The first bound address of `listener` (`dns/udp`, `dns/tcp`, `http`, `tls`, `quic`,
    /// `relay/udp`, `relay/tcp`, `admin`).
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.serving()
            .addr(listener)
            .unwrap_or_else(|| panic!("no `{listener}` listener in {:?}", self.serving().addrs()))
    }

    /// Every bound address of `listener`, in bind order.
    pub fn addrs(&self, listener: &str) -> Vec<SocketAddr> {
        self.serving()
            .addrs()
            .into_iter()
            .filter(|(n, _)| *n == listener)
            .map(|(_, a)| a)
            .collect()
    }

    /// The shared context (policy, metrics, reload).
    pub fn gateway(&self) -> &Arc<blocklab::gateway::Gateway> {
        &self.serving().gateway
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.0.lock().unwrap()).into_owned()
    }

    /// Waits up to 5 s for a log line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str]) -> String {
        wait_line(|| self.log(), parts)
    }

    /// Stops every task and flushes the decision log.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.serving.take() {
            s.shutdown();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn wait_line(log: impl Fn() -> String, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = log();
        if let Some(l) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.to_string();
        }
        if Instant::now() > deadline {
            panic!("no log line with {parts:?} in:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[path = "../../src/sniff/testdata.rs"]
mod sniff_testdata;

/// The first flight of a rustls client connecting to `name`: a real TLS ClientHello record
/// (`src/sniff/testdata.rs`, the library's own test input).
pub fn client_hello(name: &str) -> Vec<u8> {
    sniff_testdata::rustls_client_hello(name)
}

/// A TLS ClientHello record naming `name`, with an `encrypted_client_hello` (0xfe0d) outer
/// extension when `ech` (the layout of draft-ietf-tls-esni: outer type, HPKE suite, config
/// id, encapsulated key, payload).
pub fn crafted_client_hello(name: &str, ech: bool) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let mut exts = Vec::new();
    let mut sni = vec![0];
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name.as_bytes());
    let mut list = (sni.len() as u16).to_be_bytes().to_vec();
    list.extend(sni);
    ext(&mut exts, 0x0000, &list);
    ext(&mut exts, 0x000a, &[0, 2, 0, 29]); // supported_groups: x25519
    ext(&mut exts, 0x000d, &[0, 2, 4, 3]); // signature_algorithms: ecdsa_secp256r1_sha256
    ext(&mut exts, 0x002b, &[2, 3, 4]); // supported_versions: TLS 1.3
    if ech {
        let mut e = vec![0]; // outer
        e.extend([0, 1, 0, 1]); // HKDF-SHA256, AES-128-GCM
        e.push(0x42); // config id
        e.extend(32u16.to_be_bytes());
        e.extend([0x5a; 32]); // enc
        e.extend(144u16.to_be_bytes());
        e.extend([0xa5; 144]); // payload
        ext(&mut exts, 0xfe0d, &e);
    }
    let mut body = vec![3, 3];
    body.extend([0x11; 32]); // random
    body.push(0); // session id
    body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]); // cipher suites
    body.extend([1, 0]); // compression: null
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// Deterministic body bytes for `/bytes/N`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 8)) as u8)
        .collect()
}

async fn origin_service(
    req: Request<Incoming>,
    scheme: &'static str,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    let body = if let Some(n) = path.strip_prefix("/bytes/") {
        pattern(n.parse().unwrap_or(0))
    } else {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        format!("hello from the {scheme} origin: host={host} path={path}\n").into_bytes()
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// Plain HTTP and HTTPS origin servers on 127.0.0.1, with the test CA that signed the HTTPS
/// certificate (for facebook.com, twitter.com, microsoft.com, example.org and a few more).
pub struct Origin {
    /// The plain HTTP server.
    pub http: SocketAddr,
    /// Connections the plain HTTP server accepted.
    pub http_accepted: Arc<std::sync::atomic::AtomicUsize>,
    /// The HTTPS server.
    pub https: SocketAddr,
    /// The CA certificate (PEM) for `curl --cacert`.
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

/// Names the HTTPS origin's certificate covers.
pub const NAMES: &[&str] = &[
    "facebook.com",
    "twitter.com",
    "microsoft.com",
    "example.org",
    "blocked.example",
    "drop.example",
    "reset.example",
    "ipdrop.example",
    "ipreset.example",
    "throttle.example",
];

impl Origin {
    /// Starts both servers on 127.0.0.1 on the current tokio runtime.
    pub async fn start() -> Origin {
        Origin::start_on("127.0.0.1".parse().unwrap()).await
    }

    /// Starts both servers on `ip` (free ports).
    pub async fn start_on(ip: std::net::IpAddr) -> Origin {
        let dir = tempfile::tempdir().unwrap();
        let http_l = TcpListener::bind((ip, 0)).await.unwrap();
        let https_l = TcpListener::bind((ip, 0)).await.unwrap();
        let http = http_l.local_addr().unwrap();
        let https = https_l.local_addr().unwrap();
        let http_accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&http_accepted);
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = http_l.accept().await else {
                    continue;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|r| origin_service(r, "http"));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });

        // A test CA and a leaf certificate for the lab names.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "blocklab test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = https_l.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|r| origin_service(r, "https"));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Origin {
            http,
            http_accepted,
            https,
            ca,
            _dir: dir,
        }
    }
}

/// `blocklab serve` as the real binary (for signals and exit codes), its config in a temporary
/// directory; killed on drop.
pub struct Blocklab {
    child: Child,
    /// Bound addresses by listener name (`http`, `tls`, ...), from its `listening` lines (the
    /// binary's only report of them).
    pub listeners: HashMap<String, SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    /// The config directory.
    pub dir: tempfile::TempDir,
}

/// Spawns `cmd` (a `blocklab serve` command line) with `RUST_LOG=filter`, no colour and stderr
/// piped; every stderr line goes to `log` and to the returned receiver.
pub fn spawn_logged(
    cmd: &mut Command,
    filter: &str,
    log: &Arc<Mutex<Vec<String>>>,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .env("RUST_LOG", filter)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start blocklab");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            log.lock().unwrap().push(line);
        }
    });
    (child, rx)
}

impl Blocklab {
    /// Writes `config` (and `rules`: file name -> text, in `rules/`) and starts the gateway;
    /// waits until every listener in `expect` is announced.
    pub fn start(config: &str, rules: &[(&str, &str)], expect: &[&str]) -> Blocklab {
        Blocklab::start_logging(config, rules, expect, "info")
    }

    /// [`Blocklab::start`] with `RUST_LOG=filter`.
    pub fn start_logging(
        config: &str,
        rules: &[(&str, &str)],
        expect: &[&str],
        filter: &str,
    ) -> Blocklab {
        let (dir, path) = config_dir(config, rules);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, rx) = spawn_logged(
            Command::new(env!("CARGO_BIN_EXE_blocklab"))
                .arg("serve")
                .arg("--config")
                .arg(&path),
            filter,
            &log,
        );
        let mut gw = Blocklab {
            child,
            listeners: HashMap::new(),
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while expect.iter().any(|e| !gw.listeners.contains_key(*e)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("blocklab did not announce {expect:?}; log:\n{}", gw.log());
            };
            if let Some((name, addr)) = parse_listening(&line) {
                gw.listeners.entry(name).or_insert(addr);
            }
        }
        gw
    }

    /// The address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.listeners[name]
    }

    /// The gateway's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `TERM`, `HUP`) to the gateway with the real `kill`.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the gateway to exit; its exit code (panics if still running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to 5 s for a log line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str]) -> String {
        wait_line(|| self.log(), parts)
    }
}

impl Drop for Blocklab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `listening listener=http addr=127.0.0.1:1234` -> ("http", addr).
pub fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains("listening") {
        return None;
    }
    let field = |key: &str| {
        let i = line.find(key)? + key.len();
        let rest = &line[i..];
        let end = rest.find(' ').unwrap_or(rest.len());
        Some(rest[..end].trim_matches('"').to_string())
    };
    Some((field("listener=")?, field("addr=")?.parse().ok()?))
}

/// What a curl run gave.
pub struct CurlOut {
    /// Exit code.
    pub code: i32,
    /// HTTP status (`%{http_code}`), 0 when none.
    pub status: u16,
    /// The response body.
    pub body: Vec<u8>,
    /// The response headers (`-D`).
    pub headers: String,
    /// curl's stderr.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Debug for CurlOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.body[..self.body.len().min(300)];
        f.debug_struct("CurlOut")
            .field("code", &self.code)
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("body_start", &String::from_utf8_lossy(shown))
            .field("headers", &self.headers)
            .field("stderr", &self.stderr)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

/// Runs real `curl` with `args` (plus `-sS`, a body file and a header dump). Panics — and so
/// fails the test — when curl is not installed.
pub async fn curl(args: &[&str]) -> CurlOut {
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body");
    let head_path = dir.path().join("head");
    let start = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "", "-o"])
        .arg(&body_path)
        .arg("-D")
        .arg(&head_path)
        .args(["-w", "%{http_code}"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .unwrap_or_else(|e| panic!("curl is required for these tests and could not be run: {e}"));
    let elapsed = start.elapsed();
    CurlOut {
        code: out.status.code().unwrap_or(-1),
        // With several URLs curl prints one code per URL: the last one counts.
        status: {
            let codes = String::from_utf8_lossy(&out.stdout).trim().to_string();
            codes[codes.len().saturating_sub(3)..].parse().unwrap_or(0)
        },
        body: std::fs::read(&body_path).unwrap_or_default(),
        headers: std::fs::read_to_string(&head_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    }
}

/// The `[hosts]` table pointing every test name at 127.0.0.1.
pub fn hosts_table() -> String {
    let mut s = String::from("[hosts]\n");
    for n in NAMES {
        s.push_str(&format!("\"{n}\" = [\"127.0.0.1\"]\n"));
    }
    s
}

/// OONI's HTTP blockpage fingerprints (the copy `blocklab probe` embeds, `src/probe/data/`).
pub fn ooni_http_fingerprints() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/probe/data/fingerprints_http.csv")
}

/// A CA and server/client certificates (P-256) in `dir`, made with the openssl CLI, for
/// OpenVPN's `--ca ca.crt --cert {server,client}.crt --key {server,client}.key`.
pub fn openvpn_pki(dir: &Path) {
    require("openssl");
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]);
    ca.extend(["-subj", "/CN=blocklab-test-ca"]);
    run(&ca);
    for n in ["server", "client"] {
        let (key, csr, crt, subj) = (
            format!("{n}.key"),
            format!("{n}.csr"),
            format!("{n}.crt"),
            format!("/CN={n}"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        run(&req);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
        ]);
    }
}

/// A real OpenVPN process (from [`openvpn`]); killed on drop. `lines`: its stdout, line by line,
/// then its stderr in one piece.
pub struct OpenVpn {
    child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Drop for OpenVpn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OpenVpn {
    /// Waits up to `within` for a line containing `needle`; whether it came, and all lines read.
    pub fn wait_for(&self, needle: &str, within: Duration) -> (bool, String) {
        let deadline = Instant::now() + within;
        let mut seen = String::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            seen.push_str(&l);
            seen.push('\n');
            if l.contains(needle) {
                return (true, seen);
            }
        }
        (false, seen)
    }
}

/// The arguments of an OpenVPN TLS server on `local:port` with the certificates of
/// [`openvpn_pki`].
pub fn openvpn_server_args(proto: &str, local: &str, port: u16) -> Vec<String> {
    let port = port.to_string();
    [
        "--proto",
        proto,
        "--local",
        local,
        "--lport",
        &port,
        "--tls-server",
        "--dh",
        "none",
        "--cert",
        "server.crt",
        "--key",
        "server.key",
    ]
    .map(String::from)
    .to_vec()
}

/// The arguments of an OpenVPN TLS client of `remote:port` with the certificates of
/// [`openvpn_pki`].
pub fn openvpn_client_args(proto: &str, remote: &str, port: u16) -> Vec<String> {
    let port = port.to_string();
    [
        "--proto",
        proto,
        "--remote",
        remote,
        &port,
        "--nobind",
        "--tls-client",
        "--connect-retry",
        "1",
        "--cert",
        "client.crt",
        "--key",
        "client.key",
    ]
    .map(String::from)
    .to_vec()
}

/// Starts `openvpn` (inside network namespace `ns` when given) in `dir` with no tunnel device,
/// the CA of [`openvpn_pki`] and `args`.
pub fn openvpn(ns: Option<&str>, dir: &Path, args: &[String]) -> OpenVpn {
    require("openvpn");
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "openvpn"]);
            c
        }
        None => Command::new("openvpn"),
    };
    let mut child = cmd
        .args(["--dev", "null", "--verb", "3", "--ca", "ca.crt"])
        .args(["--hand-window", "60"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        let _ = tx.send(rest);
    });
    OpenVpn { child, lines }
}

/// A minimal IPv4/UDP packet for a WireGuard tunnel (boringtun checks the inner IP header).
pub fn wireguard_inner_packet() -> Vec<u8> {
    let payload = b"through the tunnel";
    let total = (20 + 8 + payload.len()) as u16;
    let mut p = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// One real WireGuard session between two boringtun peers: the server answers on `ssock`
/// (its thread stops when the session ends), the client sends from `csock` to `dst` (the
/// server's address, or a relay's). Returns whether the handshake completed and whether a
/// tunnelled packet reached the server, sent up to `tries` times, `wait` for each.
pub fn wireguard_session(
    csock: &std::net::UdpSocket,
    ssock: std::net::UdpSocket,
    dst: SocketAddr,
    tries: usize,
    wait: Duration,
) -> (bool, bool) {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    use std::sync::atomic::{AtomicBool, Ordering};
    let (ck, sk) = (
        StaticSecret::from([0x11; 32]),
        StaticSecret::from([0x22; 32]),
    );
    let mut client = Tunn::new(ck.clone(), PublicKey::from(&sk), None, None, 1, None);
    let mut server = Tunn::new(sk, PublicKey::from(&ck), None, None, 2, None);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let responder = std::thread::spawn(move || {
        let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
        while !stop2.load(Ordering::Relaxed) {
            let Ok((n, from)) = ssock.recv_from(&mut buf) else {
                continue;
            };
            let mut datagram = &buf[..n];
            loop {
                match server.decapsulate(Some(from.ip()), datagram, &mut out) {
                    TunnResult::WriteToNetwork(p) => {
                        ssock.send_to(p, from).unwrap();
                    }
                    TunnResult::WriteToTunnelV4(p, _) => {
                        let _ = tx.send(p.to_vec());
                        break;
                    }
                    _ => break,
                }
                datagram = &[]; // flush queued packets
            }
        }
    });
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    match client.format_handshake_initiation(&mut out, false) {
        TunnResult::WriteToNetwork(p) => {
            assert_eq!(p.len(), 148, "a real initiation is 148 bytes");
            csock.send_to(p, dst).unwrap();
        }
        other => panic!("no handshake initiation: {other:?}"),
    }
    let mut handshake = false;
    if let Ok((n, _)) = csock.recv_from(&mut buf) {
        assert_eq!(n, 92, "a real response is 92 bytes");
        if let TunnResult::WriteToNetwork(p) = client.decapsulate(None, &buf[..n], &mut out) {
            csock.send_to(p, dst).unwrap(); // the keepalive confirming the session
        }
        handshake = true;
    }
    let mut data = false;
    if handshake {
        let inner = wireguard_inner_packet();
        for _ in 0..tries {
            if let TunnResult::WriteToNetwork(p) = client.encapsulate(&inner, &mut out) {
                csock.send_to(p, dst).unwrap();
            }
            if rx.recv_timeout(wait).is_ok_and(|p| p == inner) {
                data = true;
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();
    (handshake, data)
}

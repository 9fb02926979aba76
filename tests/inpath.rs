//! The in-path engine with real stacks: a client namespace routed through `blocklab serve`'s
//! TUN device in a router namespace (policy routing) to an origin namespace, real curl, real
//! HTTPS origins; and `blocklab replay` over captures the tests make (one recorded live with
//! tcpdump). Every namespace is created here with a unique name and removed by a Drop guard;
//! no traffic leaves them.

mod common;
#[path = "../src/inpath/testdata.rs"]
mod testdata;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT: &str = "10.77.1.2";
/// A second client address, mapped to a jurisdiction with `reassemble = false`.
const CLIENT_FIRST_ONLY: &str = "10.77.1.3";
const ORIGIN: &str = "10.77.2.2";
/// An origin address blocked with `ip-drop`.
const ORIGIN_IPDROP: &str = "10.77.2.3";

fn require(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "required tool `{tool}` is missing (install it: see .ci/run)"
    );
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The rules file of jurisdiction `code` (`tests/data/rules/inpath.toml` with its placeholders
/// filled in): reassembling split ClientHellos or not, with a residual block when it does.
fn rules(code: &str, reassemble: bool) -> String {
    include_str!("data/rules/inpath.toml")
        .replace("{code}", code)
        .replace("{reassemble}", if reassemble { "true" } else { "false" })
        .replace(
            "{residual}",
            if reassemble { "residual_secs = 4" } else { "" },
        )
        .replace("{ORIGIN_IPDROP}", ORIGIN_IPDROP)
}

fn config(date: &str, vpn: &str, extra: &str) -> String {
    format!(
        r#"
date = "{date}"
rules = "rules"

[[clients]]
name = "ru-clients"
networks = ["{CLIENT}/32"]
jurisdiction = "ru"

[[clients]]
name = "xf-clients"
networks = ["{CLIENT_FIRST_ONLY}/32"]
jurisdiction = "xf"

[log]
path = "decisions.jsonl"

[inpath]
device = "bl0"
clients = ["10.77.1.0/24"]
vpn = "{vpn}"

{extra}
"#
    )
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of one test (`PREFIX<pid>`), deleted when dropped.
struct TempNs(String);

impl TempNs {
    fn add(prefix: &str) -> TempNs {
        let ns = format!("{prefix}{}", std::process::id());
        run(&["ip", "netns", "add", &ns]);
        TempNs(ns)
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Binds in namespace `ns`: runs `f` on a thread that entered it.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// The origin servers (the harness's HTTP and HTTPS origins) running in the origin namespace.
struct Origins {
    http: u16,
    https: u16,
    ca: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A client namespace, a router namespace running `blocklab serve` with `[inpath]` on a TUN
/// device, and an origin namespace. Dropping it kills blocklab and removes the namespaces.
struct Lab {
    ns: Vec<String>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
    origins: Option<Origins>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut o) = self.origins.take() {
            if let Some(s) = o.stop.take() {
                let _ = s.send(());
            }
            if let Some(t) = o.thread.take() {
                let _ = t.join();
            }
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn ns(&self, which: usize) -> &str {
        &self.ns[which]
    }

    fn ip(&self, which: usize, args: &str) {
        let mut v = vec!["ip", "-n", self.ns(which)];
        v.extend(args.split_whitespace());
        run(&v);
    }

    fn exec(&self, which: usize, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", self.ns(which)];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Builds the topology and starts blocklab at 2022-03-10, `[[vpn]]` rules observed.
    fn start(extra: &str) -> Lab {
        Lab::start_at("2022-03-10", "observe", extra)
    }

    /// Builds the topology and starts blocklab at `date` with `[inpath] vpn = mode` and
    /// `extra` appended to the config.
    fn start_at(date: &str, vpn: &str, extra: &str) -> Lab {
        for t in ["ip", "curl", "tcpdump"] {
            require(t);
        }
        let id = format!(
            "blip{}x{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::SeqCst)
        );
        let mut lab = Lab {
            ns: Vec::new(),
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            dir: tempfile::tempdir().unwrap(),
            origins: None,
        };
        for role in ["c", "r", "o"] {
            let name = format!("{id}-{role}");
            run(&["ip", "netns", "add", &name]);
            lab.ns.push(name);
        }
        let (c, r, o) = (lab.ns[0].clone(), lab.ns[1].clone(), lab.ns[2].clone());
        run(&[
            "ip", "-n", &c, "link", "add", "eth0", "type", "veth", "peer", "name", "rc", "netns",
            &r,
        ]);
        run(&[
            "ip", "-n", &r, "link", "add", "ro", "type", "veth", "peer", "name", "eth0", "netns",
            &o,
        ]);
        for (ns, cmds) in [
            (
                0,
                vec![
                    format!("addr add {CLIENT}/24 dev eth0"),
                    format!("addr add {CLIENT_FIRST_ONLY}/24 dev eth0"),
                    "link set lo up".into(),
                    "link set eth0 up".into(),
                    "route add default via 10.77.1.1".into(),
                ],
            ),
            (
                1,
                vec![
                    "addr add 10.77.1.1/24 dev rc".into(),
                    "addr add 10.77.2.1/24 dev ro".into(),
                    "link set lo up".into(),
                    "link set rc up".into(),
                    "link set ro up".into(),
                ],
            ),
            (
                2,
                vec![
                    format!("addr add {ORIGIN}/24 dev eth0"),
                    format!("addr add {ORIGIN_IPDROP}/24 dev eth0"),
                    "link set lo up".into(),
                    "link set eth0 up".into(),
                    "route add default via 10.77.2.1".into(),
                ],
            ),
        ] {
            for cmd in cmds {
                lab.ip(ns, &cmd);
            }
        }
        for s in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            lab.exec(1, &["sysctl", "-qw", s]);
        }
        // Origins in the origin namespace (sockets bound there, served from a thread of ours).
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let path = format!("/var/run/netns/{o}");
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let origin = common::Origin::start_on("0.0.0.0".parse().unwrap()).await;
                let ca = std::fs::read(&origin.ca).unwrap();
                tx.send((origin.http.port(), origin.https.port(), ca))
                    .unwrap();
                let _ = stop_rx.await;
            });
        });
        let (http, https, ca_pem) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let ca = lab.dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        lab.origins = Some(Origins {
            http,
            https,
            ca,
            stop: Some(stop_tx),
            thread: Some(thread),
        });
        // blocklab in the router namespace.
        let rules_dir = lab.dir.path().join("rules");
        std::fs::create_dir(&rules_dir).unwrap();
        std::fs::write(rules_dir.join("ru.toml"), rules("ru", true)).unwrap();
        std::fs::write(rules_dir.join("xf.toml"), rules("xf", false)).unwrap();
        let cfg = lab.dir.path().join("blocklab.toml");
        std::fs::write(&cfg, config(date, vpn, extra)).unwrap();
        let (child, rx) = common::spawn_logged(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &r,
                    env!("CARGO_BIN_EXE_blocklab"),
                    "serve",
                    "--config",
                ])
                .arg(&cfg),
            "info",
            &lab.log,
        );
        lab.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening") && line.contains("inpath") => break,
                Ok(_) => {}
                Err(_) => panic!("blocklab did not start:\n{}", lab.log()),
            }
        }
        // Policy routing: both directions of the client traffic go through the TUN device.
        lab.ip(1, "rule add iif rc lookup 100");
        lab.ip(1, "rule add iif ro lookup 100");
        lab.ip(1, "route add default dev bl0 table 100");
        lab
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn origins(&self) -> &Origins {
        self.origins.as_ref().unwrap()
    }

    /// Runs curl in the client namespace: (exit code, stdout, stderr, elapsed).
    fn curl(&self, args: &[&str]) -> (i32, String, String, Duration) {
        let t = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", self.ns(0), "curl", "-sS", "--cacert"])
            .arg(&self.origins().ca)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            t.elapsed(),
        )
    }

    fn https_url(&self, name: &str, path: &str) -> (String, String) {
        let port = self.origins().https;
        (
            format!("https://{name}:{port}{path}"),
            format!("{name}:{port}:{ORIGIN}"),
        )
    }

    /// The decision log lines (the gateway flushes as it goes).
    fn decisions(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("decisions.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn wait_decision(&self, rule: &str) -> serde_json::Value {
        self.wait_decision_where("rule", rule)
    }

    /// The first logged decision whose `key` is `want`, waiting up to 5 s for it.
    fn wait_decision_where(&self, key: &str, want: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(d) = self.decisions().into_iter().find(|d| d[key] == want) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "no decision with {key} {want}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A tcpdump capture in a namespace, stopped (and flushed) on `stop`.
struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    fn start(ns: &str, dev: &str, path: &Path, filter: &str) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "--immediate-mode",
                "-Z",
                "root",
                "-U",
                "-n",
                "-i",
                dev,
                "-w",
            ])
            .arg(path)
            .args(filter.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for "listening on ..." so no packet is missed.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let _ = err.read_line(&mut line);
        assert!(line.contains("listening"), "tcpdump: {line}");
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = err.read_to_string(&mut sink);
        });
        Capture {
            child,
            path: path.to_path_buf(),
        }
    }

    fn stop(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.path.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Packets of a classic pcap (link type raw IP or Ethernet) as IP packets.
fn pcap_packets(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let reader = blocklab::experiment::pcap::Reader::new(&bytes).unwrap();
    reader
        .filter_map(|f| f.ok())
        .filter_map(|f| blocklab::inpath::replay::ip_of(f.link, f.data).map(<[u8]>::to_vec))
        .collect()
}

#[test]
fn live_https_passes_byte_for_byte_blocked_sni_is_reset_blockpage_ip_drop_residual() {
    let lab = Lab::start(ADMIN);
    assert!(lab.log().contains("offload=true"), "{}", lab.log());
    // Allowed HTTPS passes byte for byte, its TCP super-packets (GSO) forwarded whole.
    let (url, resolve) = lab.https_url("microsoft.com", "/bytes/300000");
    let out = lab.dir.path().join("body");
    let (code, _, err, _) = lab.curl(&["--resolve", &resolve, "-o", out.to_str().unwrap(), &url]);
    assert_eq!(code, 0, "{err}\n{}", lab.log());
    assert_eq!(std::fs::read(&out).unwrap(), common::pattern(300_000));
    std::thread::sleep(Duration::from_millis(400)); // the counters are published every 250 ms
    let whole = metric(&lab, "blocklab_inpath_gso_whole_total");
    assert!(whole > 0, "no super-packet was forwarded whole");

    // A blocked SNI: curl exit 35, the RST arriving before any ServerHello (recorded).
    let cap = Capture::start(lab.ns(0), "eth0", &lab.dir.path().join("reset.pcap"), "tcp");
    let (url, resolve) = lab.https_url("facebook.com", "/");
    let (code, _, err, elapsed) = lab.curl(&["--resolve", &resolve, "--max-time", "10", &url]);
    assert_eq!(code, 35, "curl: {err}");
    assert!(
        elapsed < Duration::from_secs(5),
        "a reset, not a timeout: {elapsed:?}"
    );
    let recorded = cap.stop();
    let pkts = pcap_packets(&recorded);
    let from_server: Vec<(u8, Vec<u8>)> = pkts
        .iter()
        .filter_map(|p| {
            let ip = blocklab::inpath::packet::IpPacket::parse(p).ok()?;
            let t = blocklab::inpath::packet::TcpSegment::parse(ip.payload()).ok()?;
            (ip.src.to_string() == ORIGIN).then(|| (t.flags, t.payload.to_vec()))
        })
        .collect();
    let rst = from_server
        .iter()
        .position(|(f, _)| f & blocklab::inpath::packet::RST != 0)
        .unwrap_or_else(|| {
            panic!(
                "a RST from the server's address in {} packets: {from_server:?}",
                pkts.len()
            )
        });
    assert!(
        from_server.iter().all(|(_, p)| p.is_empty()),
        "no ServerHello (or any data) from the server"
    );
    assert!(rst >= 1, "the RST follows the SYN-ACK");
    let d = lab.wait_decision("ru-facebook");
    assert_eq!(d["layer"], "inpath");
    assert_eq!(d["technique"], "tls-reset");
    assert_eq!(d["target"], "facebook.com");

    // The residual block (4 s): a new connection to the same server and port is dropped.
    let (url, resolve) = lab.https_url("microsoft.com", "/");
    let (code, _, _, _) = lab.curl(&["--resolve", &resolve, "--max-time", "2", &url]);
    assert_eq!(code, 28, "residual block: timeout");
    std::thread::sleep(Duration::from_secs(3));
    let (code, body, err, _) = lab.curl(&["--resolve", &resolve, "--max-time", "5", &url]);
    assert_eq!(code, 0, "after residual_secs: {err}");
    assert!(body.contains("host=microsoft.com"), "{body}");

    // Plain HTTP to a blocked name: a 302 to the jurisdiction's page.
    let port = lab.origins().http;
    let url = format!("http://facebook.com:{port}/news");
    let resolve = format!("facebook.com:{port}:{ORIGIN}");
    let (code, out, err, _) = lab.curl(&[
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--max-time",
        "5",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "302 http://warning.rt.ru/");

    // ip-drop: the SYN is dropped, curl times out.
    let url = format!("https://{ORIGIN_IPDROP}:{}/", lab.origins().https);
    let (code, _, _, elapsed) = lab.curl(&["-k", "--max-time", "3", &url]);
    assert_eq!(code, 28);
    assert!(elapsed >= Duration::from_millis(2900));

    // Replaying the recorded capture gives the live verdict.
    let out = lab.dir.path().join("replay");
    let r = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args(["replay", "--config"])
        .arg(lab.dir.path().join("blocklab.toml"))
        .arg("--out")
        .arg(&out)
        .arg(&recorded)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let verdicts = std::fs::read_to_string(out.join("verdicts.jsonl")).unwrap();
    let v: Vec<serde_json::Value> = verdicts
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reset: Vec<_> = v.iter().filter(|v| v["action"] == "reset").collect();
    assert_eq!(reset.len(), 1, "{verdicts}");
    assert_eq!(reset[0]["rule"], "ru-facebook");
    assert_eq!(reset[0]["technique"], "tls-reset");
    assert_eq!(
        reset[0]["client"].as_str().unwrap().split(':').next(),
        Some(CLIENT)
    );
}

/// Sends `hello` from `src` in the client namespace to the HTTPS origin and reads for up to
/// 2 s: `Ok(bytes)` when the server answered (or closed), `Err` on a timeout or reset.
fn send_hello(lab: &Lab, src: &str, hello: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let ns = lab.ns(0).to_string();
    let dst = SocketAddr::new(ORIGIN.parse().unwrap(), lab.origins().https);
    let src: IpAddr = src.parse().unwrap();
    in_ns(&ns, move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.bind(&SocketAddr::new(src, 0).into())?;
        sock.connect_timeout(&dst.into(), Duration::from_secs(3))?;
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(&hello)?;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
}

/// A request to the admin listener (in the router namespace): the whole response.
fn admin(lab: &Lab, method: &str, path: &str) -> String {
    let log = lab.log();
    let (_, addr) = log
        .lines()
        .filter_map(common::parse_listening)
        .find(|(name, _)| name == "admin")
        .unwrap_or_else(|| panic!("no admin listener in the log:\n{log}"));
    let ns = lab.ns(1).to_string();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    in_ns(&ns, move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
}

/// The value of the counter `name` in the gateway's `/metrics` (0 when absent).
fn metric(lab: &Lab, name: &str) -> u64 {
    let text = admin(lab, "GET", "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The admin listener, on loopback in the router namespace.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn live_ech_hello_is_dropped_in_path_and_a_group_date_moves_at_run_time() {
    // Without offloads this time (packet by packet); the other live tests run with them.
    let lab = Lab::start(&format!("offload = false\n{ADMIN}"));
    assert!(lab.log().contains("offload=false"), "{}", lab.log());
    // The ECH rule: the hello without ECH reaches the origin (which answers); with ECH it is
    // dropped silently (no answer, no reset).
    let plain = common::crafted_client_hello("cloudflare-ech.com", false);
    let back = send_hello(&lab, CLIENT, plain).expect("the origin answers");
    assert!(
        !back.is_empty(),
        "the origin answered the hello without ECH"
    );
    let with_ech = common::crafted_client_hello("cloudflare-ech.com", true);
    let e = send_hello(&lab, CLIENT, with_ech).expect_err("dropped");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "silence, not a reset: {e}"
    );
    let d = lab.wait_decision("ru-ech");
    assert_eq!(
        (d["layer"].as_str(), d["technique"].as_str()),
        (Some("inpath"), Some("tls-drop"))
    );

    // Per-group dates: at the lab's date (2022-03-10) facebook.com is reset for both groups;
    // moving the `xf-clients` group to 2022-01-01 (before the rule) lets its next flow pass,
    // while the `ru-clients` group stays at the gateway's date.
    let (url, resolve) = lab.https_url("facebook.com", "/");
    let curl_from = |src: &str| {
        lab.curl(&[
            "--interface",
            src,
            "--resolve",
            &resolve,
            "--max-time",
            "5",
            &url,
        ])
    };
    assert_eq!(
        curl_from(CLIENT_FIRST_ONLY).0,
        35,
        "xf at 2022-03-10: reset"
    );
    let reply = admin(&lab, "POST", "/date?at=2022-01-01&clients=xf-clients");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let (code, body, err, _) = curl_from(CLIENT_FIRST_ONLY);
    assert_eq!(code, 0, "xf at 2022-01-01: passes ({err})");
    assert!(body.contains("host=facebook.com"), "{body}");
    assert_eq!(curl_from(CLIENT).0, 35, "ru still at 2022-03-10: reset");
}

/// A real TLS client in the client namespace that sends its ClientHello in two TCP
/// segments, split inside the SNI; returns what the first read gave.
fn split_hello(lab: &Lab, src: &str, name: &str) -> std::io::Result<Vec<u8>> {
    let ns = lab.ns(0).to_string();
    let dst = SocketAddr::new(ORIGIN.parse().unwrap(), lab.origins().https);
    let src: IpAddr = src.parse().unwrap();
    let name = name.to_string();
    in_ns(&ns, move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.bind(&SocketAddr::new(src, 0).into())?;
        sock.connect_timeout(&dst.into(), Duration::from_secs(3))?;
        let mut s: TcpStream = sock.into();
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let hello = common::client_hello(&name);
        let cut = hello
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap()
            + 3;
        s.write_all(&hello[..cut])?;
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(&hello[cut..])?;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
}

#[test]
fn live_split_client_hello_is_reset_when_reassembling_and_passes_when_not() {
    let lab = Lab::start("");
    // reassemble = true (ru): the RST arrives; the client's read fails with a reset.
    let r = split_hello(&lab, CLIENT, "facebook.com");
    let e = r.expect_err("reset expected");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    // reassemble = false (xf): the first segment has no complete SNI; the server answers.
    let r = split_hello(&lab, CLIENT_FIRST_ONLY, "facebook.com").expect("passes");
    assert_eq!(
        r.first(),
        Some(&0x16),
        "a TLS handshake record (ServerHello)"
    );
    // Unsplit, the first-packet censor resets too (curl exit 35). (The `ru` client is now
    // under the rule's residual block, tested elsewhere.)
    let (url, resolve) = lab.https_url("facebook.com", "/");
    let (code, _, _, _) = lab.curl(&[
        "--interface",
        CLIENT_FIRST_ONLY,
        "--resolve",
        &resolve,
        "--max-time",
        "5",
        &url,
    ]);
    assert_eq!(code, 35);
}

/// A real TCP connection from `src` in the client namespace to the HTTPS origin, set up for
/// sending segments of one's own beside the kernel's, as zapret and ByeDPI do: the sequence
/// numbers (read from the SYN-ACK on a packet socket opened before connecting) and a raw
/// socket (IP_HDRINCL) in the same namespace.
struct Crafting {
    stream: TcpStream,
    raw: socket2::Socket,
    local: SocketAddr,
    remote: SocketAddr,
    /// The client's next sequence number and the server's (what the client acknowledges).
    seq: u32,
    ack: u32,
}

impl Crafting {
    fn connect(lab: &Lab, src: &str) -> Crafting {
        use socket2::{Domain, Protocol, Socket, Type};
        let ns = lab.ns(0).to_string();
        let remote = SocketAddr::new(ORIGIN.parse().unwrap(), lab.origins().https);
        let src: IpAddr = src.parse().unwrap();
        in_ns(&ns, move || {
            // ETH_P_IP in network byte order: every IPv4 packet of the namespace, no link header.
            let sniff = Socket::new(
                Domain::PACKET,
                Type::DGRAM,
                Some(Protocol::from(i32::from(0x0800u16.to_be()))),
            )
            .unwrap();
            sniff
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
            sock.connect_timeout(&remote.into(), Duration::from_secs(3))
                .unwrap();
            let local = sock.local_addr().unwrap().as_socket().unwrap();
            let mut buf = vec![0u8; 2048];
            let (seq, ack) = loop {
                let n = (&sniff)
                    .read(&mut buf)
                    .expect("the SYN-ACK on the packet socket");
                let Ok(ip) = blocklab::inpath::packet::IpPacket::parse(&buf[..n]) else {
                    continue;
                };
                let Ok(t) = blocklab::inpath::packet::TcpSegment::parse(ip.payload()) else {
                    continue;
                };
                let syn_ack = blocklab::inpath::packet::SYN | blocklab::inpath::packet::ACK;
                if SocketAddr::new(ip.src, t.sport) == remote
                    && SocketAddr::new(ip.dst, t.dport) == local
                    && t.flags & syn_ack == syn_ack
                {
                    break (t.ack, t.seq.wrapping_add(1));
                }
            };
            let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).unwrap();
            let stream: TcpStream = sock.into();
            stream.set_nodelay(true).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            Crafting {
                stream,
                raw,
                local,
                remote,
                seq,
                ack,
            }
        })
    }

    /// Sends `payload` at `offset` bytes into the client's stream with IP TTL `ttl`, from the
    /// raw socket (the kernel's socket knows nothing of it).
    fn send_raw(&self, offset: usize, payload: &[u8], ttl: u8) {
        let flags = blocklab::inpath::packet::ACK | blocklab::inpath::packet::PSH;
        let seq = self.seq.wrapping_add(offset as u32);
        let pkt = testdata::tcp_segment(
            (self.local, self.remote),
            seq,
            self.ack,
            flags,
            ttl,
            payload,
        );
        self.raw.send_to(&pkt, &self.remote.into()).unwrap();
    }

    /// The first read: `Ok(bytes)` (the server answered), `Err` on a reset or a timeout.
    fn read(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let n = self.stream.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// The TCP payloads a capture holds (IP packets from `from`).
fn payloads_from(path: &Path, from: &str) -> Vec<Vec<u8>> {
    pcap_packets(path)
        .iter()
        .filter_map(|p| {
            let ip = blocklab::inpath::packet::IpPacket::parse(p).ok()?;
            let t = blocklab::inpath::packet::TcpSegment::parse(ip.payload()).ok()?;
            (ip.src.to_string() == from && !t.payload.is_empty()).then(|| t.payload.to_vec())
        })
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn live_fake_low_ttl_packet_fools_a_first_packet_censor() {
    let lab = Lab::start("");
    // The fake (zapret's `--dpi-desync=fake`): a ClientHello naming a harmless host, at the
    // real hello's sequence number, TTL 2: the router's forwarding into the TUN device leaves
    // it 1, the engine sees it, and the router's next hop toward the origin drops it (time
    // exceeded). Then the kernel sends the real ClientHello, naming a blocked host.
    let cap = Capture::start(
        lab.ns(2),
        "eth0",
        &lab.dir.path().join("origin.pcap"),
        "tcp",
    );
    let mut c = Crafting::connect(&lab, CLIENT_FIRST_ONLY);
    c.send_raw(0, &common::client_hello("harmless.example"), 2);
    std::thread::sleep(Duration::from_millis(200));
    c.stream
        .write_all(&common::client_hello("facebook.com"))
        .unwrap();
    let back = c
        .read()
        .expect("the first-packet censor is fooled: the server answers");
    assert_eq!(
        back.first(),
        Some(&0x16),
        "a TLS handshake record (ServerHello)"
    );
    let at_origin = payloads_from(&cap.stop(), CLIENT_FIRST_ONLY);
    assert!(
        at_origin.iter().any(|p| contains(p, "facebook.com")),
        "the real hello reached the origin"
    );
    assert!(
        !at_origin.iter().any(|p| contains(p, "harmless.example")),
        "the fake died between the censor and the origin"
    );
    // The same hello without the fake is reset (curl exit 35), the control.
    let mut c = Crafting::connect(&lab, CLIENT_FIRST_ONLY);
    c.stream
        .write_all(&common::client_hello("facebook.com"))
        .unwrap();
    let e = c.read().expect_err("reset without the fake");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    let d = lab.wait_decision("xf-facebook");
    assert_eq!(d["technique"], "tls-reset");
    let resets: Vec<_> = lab
        .decisions()
        .into_iter()
        .filter(|d| d["rule"] == "xf-facebook")
        .collect();
    assert_eq!(
        resets.len(),
        1,
        "only the flow without the fake: {resets:?}"
    );
}

#[test]
fn live_out_of_order_segments_are_reassembled() {
    let lab = Lab::start("");
    // The ClientHello in two segments split inside the SNI, the second sent first (from the
    // raw socket, at its place in the stream), then the first by the kernel: a reassembling
    // censor holds the early tail, rebuilds the name when the head arrives and resets.
    let hello = common::client_hello("facebook.com");
    let cut = hello
        .windows("facebook.com".len())
        .position(|w| w == b"facebook.com")
        .unwrap()
        + 3;
    let mut c = Crafting::connect(&lab, CLIENT);
    c.send_raw(cut, &hello[cut..], 64);
    std::thread::sleep(Duration::from_millis(200));
    c.stream.write_all(&hello[..cut]).unwrap();
    let e = c.read().expect_err("reset once the hello is whole");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    let d = lab.wait_decision("ru-facebook");
    assert_eq!(
        (d["technique"].as_str(), d["target"].as_str()),
        (Some("tls-reset"), Some("facebook.com"))
    );
    // A first-packet censor sees only the tail (no name) and lets the flow go.
    let mut c = Crafting::connect(&lab, CLIENT_FIRST_ONLY);
    c.send_raw(cut, &hello[cut..], 64);
    std::thread::sleep(Duration::from_millis(200));
    c.stream.write_all(&hello[..cut]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !lab.decisions().iter().any(|d| d["rule"] == "xf-facebook"),
        "no decision on the first-packet censor's flow"
    );
    assert!(
        !matches!(c.read(), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "no reset"
    );
}

#[test]
fn live_quic_initials_to_a_blocked_name_are_dropped() {
    let lab = Lab::start("");
    let o = lab.ns(2).to_string();
    let server = in_ns(&o, || UdpSocket::bind("0.0.0.0:4433").unwrap());
    server
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let send = |name: &str| {
        let rec = common::client_hello(name);
        let initial =
            blocklab::sniff::quic::seal_initial(&[9u8; 8], 0, 0, &rec[5..], 1200).unwrap();
        let c = lab.ns(0).to_string();
        in_ns(&c, move || {
            let s = UdpSocket::bind(format!("{CLIENT}:0")).unwrap();
            s.send_to(&initial, format!("{ORIGIN}:4433")).unwrap();
        });
    };
    let mut buf = [0u8; 2048];
    send("microsoft.com");
    let n = server.recv(&mut buf).expect("an allowed Initial arrives");
    assert_eq!(n, 1200);
    send("facebook.com");
    assert!(
        server.recv(&mut buf).is_err(),
        "the blocked Initial is dropped"
    );
    let d = lab.wait_decision("ru-facebook");
    assert_eq!(d["technique"], "quic-drop");
}

#[test]
fn live_freeze_stops_a_download_without_a_reset() {
    let lab = Lab::start("");
    let cap = Capture::start(
        lab.ns(0),
        "eth0",
        &lab.dir.path().join("freeze.pcap"),
        "tcp",
    );
    let (url, resolve) = lab.https_url("example.org", "/bytes/200000");
    let (code, _, err, _) = lab.curl(&[
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "--max-time",
        "4",
        &url,
    ]);
    assert_eq!(code, 28, "frozen: a timeout, not a reset ({err})");
    let pkts = pcap_packets(&cap.stop());
    let mut server_bytes = 0;
    for p in &pkts {
        let ip = blocklab::inpath::packet::IpPacket::parse(p).unwrap();
        let t = blocklab::inpath::packet::TcpSegment::parse(ip.payload()).unwrap();
        if ip.src.to_string() == ORIGIN {
            assert_eq!(t.flags & blocklab::inpath::packet::RST, 0, "no RST");
            server_bytes += t.payload.len();
        }
    }
    // The server's bytes (TLS handshake and the first records) stop at the bound.
    assert!(
        (12_000..=16_384).contains(&server_bytes),
        "server bytes before the freeze: {server_bytes}"
    );
    assert_eq!(lab.wait_decision("ru-freeze")["technique"], "freeze");
}

#[test]
fn live_policer_throttles_a_download_to_the_rate_with_drops() {
    let lab = Lab::start("");
    let before = retransmissions(&lab);
    let (url, resolve) = lab.https_url("twitter.com", "/bytes/1000000");
    let (code, _, err, elapsed) = lab.curl(&[
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "--max-time",
        "120",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    // 1 MB at 140 kbit/s: 57 s.
    let secs = elapsed.as_secs_f64();
    assert!((45.7..=68.6).contains(&secs), "took {secs:.1} s");
    let retrans = retransmissions(&lab) - before;
    assert!(
        retrans > 10,
        "a policer drops: the origin retransmitted {retrans} segments"
    );
}

/// TCP segments the origin namespace retransmitted so far.
fn retransmissions(lab: &Lab) -> u64 {
    let out = lab.exec(2, &["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(h), Some(v)) = (tcp.next(), tcp.next()) else {
        panic!("no Tcp lines in /proc/net/snmp")
    };
    let i = h
        .split_whitespace()
        .position(|k| k == "RetransSegs")
        .unwrap();
    v.split_whitespace().nth(i).unwrap().parse().unwrap()
}

#[test]
fn without_cap_net_admin_the_error_says_so() {
    require("setpriv");
    require("ip");
    let made = TempNs::add("blipcap");
    let ns = made.0.clone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("blocklab.toml");
    std::fs::write(
        &cfg,
        "[[clients]]\nnetworks = [\"10.0.0.0/8\"]\njurisdiction = \"ru\"\n[inpath]\ndevice = \"bl0\"\n",
    )
    .unwrap();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "setpriv",
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
        ])
        .arg(env!("CARGO_BIN_EXE_blocklab"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("bl0"),
        "{err}"
    );
}

/// A classic pcap (raw IP) of `packets`, 1 ms apart.
fn write_pcap(path: &Path, packets: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&(i as u32 * 1000).to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    std::fs::write(path, out).unwrap();
}

fn tcp(src: &str, dst: &str, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
    testdata::tcp_segment((src, dst), seq, ack, flags, 64, payload)
}

use testdata::udp_datagram as udp;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn replay(
    args: &[&str],
    pcaps: &[&Path],
    out: &Path,
) -> (Option<i32>, String, Vec<serde_json::Value>, Vec<Vec<u8>>) {
    let r = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .arg("replay")
        .args(args)
        .arg("--out")
        .arg(out)
        .args(pcaps)
        .output()
        .unwrap();
    let verdicts = std::fs::read_to_string(out.join("verdicts.jsonl")).unwrap();
    let v = verdicts
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stderr =
        String::from_utf8_lossy(&r.stderr).into_owned() + &String::from_utf8_lossy(&r.stdout);
    (
        r.status.code(),
        stderr,
        v,
        pcap_packets(&out.join("passed.pcap")),
    )
}

#[test]
fn replay_gives_per_flow_verdicts_passed_packets_and_skips_a_bad_capture() {
    use blocklab::inpath::packet::{ACK, PSH, SYN};
    let dir = tempfile::tempdir().unwrap();
    let (c, s) = ("10.0.0.1:40000", "192.0.2.10:443");
    let hello = common::client_hello("www.facebook.com");
    let mut pkts = vec![
        tcp(c, s, 100, 0, SYN, &[]),
        tcp(s, c, 500, 101, SYN | ACK, &[]),
        tcp(c, s, 101, 501, ACK, &[]),
        tcp(c, s, 101, 501, ACK | PSH, &hello),
    ];
    // Our OpenVPN capture's first packets (UDP, tls-auth), as a flow to port 1194.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/openvpn-udp-tls.txt"
    ))
    .unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (dir, h) = line.split_once(' ').unwrap();
        let (a, b) = ("10.0.0.1:50000", "192.0.2.20:1194");
        pkts.push(if dir == "c" {
            udp(a, b, &hex(h))
        } else {
            udp(b, a, &hex(h))
        });
    }
    let good = dir.path().join("good.pcap");
    write_pcap(&good, &pkts);
    let bad = dir.path().join("bad.pcap");
    std::fs::write(&bad, b"this is not a capture").unwrap();

    let (code, log, v, passed) = replay(
        &["--jurisdiction", "ru", "--at", "2023-09-01"],
        &[&bad, &good],
        &dir.path().join("out"),
    );
    assert_eq!(
        code,
        Some(1),
        "a skipped capture makes the exit code 1: {log}"
    );
    assert!(log.contains("bad.pcap: skipped"), "{log}");
    assert!(log.contains("replayed 1 of 2 captures"), "{log}");
    let tls = v.iter().find(|v| v["server"] == s).unwrap();
    assert_eq!(tls["action"], "reset");
    assert_eq!(tls["rule"], "ru-facebook");
    assert_eq!(tls["technique"], "tls-reset");
    assert_eq!(tls["target"], "www.facebook.com");
    assert_eq!(tls["after_packet"], 4);
    assert_eq!(tls["proto"], "tcp");
    let vpn = v.iter().find(|v| v["server"] == "192.0.2.20:1194").unwrap();
    assert_eq!(vpn["detector"], "openvpn");
    assert_eq!(vpn["action"], "drop");
    // passed.pcap: the handshake, not the ClientHello, plus the two injected RSTs.
    assert!(passed
        .iter()
        .all(|p| p.windows(16).all(|w| w != b"www.facebook.com")));
    let resets = passed
        .iter()
        .filter(|p| {
            let ip = blocklab::inpath::packet::IpPacket::parse(p).unwrap();
            ip.proto == 6
                && blocklab::inpath::packet::TcpSegment::parse(ip.payload())
                    .unwrap()
                    .flags
                    & blocklab::inpath::packet::RST
                    != 0
        })
        .count();
    assert_eq!(resets, 2);
    assert!(
        passed.len() < pkts.len() + 2,
        "the VPN flow's later packets were dropped"
    );

    // Before the VPN rule's date: observed, nothing dropped.
    let (code, log, v, passed) = replay(
        &["--jurisdiction", "ru", "--at", "2023-01-01", "--quiet"],
        &[&good],
        &dir.path().join("out2"),
    );
    assert_eq!(code, Some(0), "{log}");
    let vpn = v.iter().find(|v| v["server"] == "192.0.2.20:1194").unwrap();
    assert_eq!(
        (vpn["action"].as_str(), vpn["detector"].as_str()),
        (Some("observe"), Some("openvpn"))
    );
    assert_eq!(
        passed.len(),
        pkts.len() - 1 + 2,
        "all but the ClientHello, plus two RSTs"
    );
}

/// The shipped rules with every 10/8 client in `ru`.
fn ru_policy() -> blocklab::policy::Policy {
    let rules = blocklab::rules::RuleSet::embedded().unwrap();
    blocklab::policy::Policy::compile(
        &rules,
        &[blocklab::policy::ClientNet {
            net: "10.0.0.0/8".parse().unwrap(),
            jurisdiction: "ru".into(),
        }],
    )
    .unwrap()
}

/// The engine's fast path (a decided flow, both directions, passing and policed) allocates
/// nothing per packet.
#[test]
fn engine_fast_path_allocates_nothing() {
    use blocklab::inpath::packet::{ACK, PSH, SYN};
    use blocklab::inpath::{Engine, EngineConfig, Fate, Output};
    let policy = ru_policy();
    let at = blocklab::policy::At::Day("2021-04-01".parse().unwrap());
    let groups = [at];
    let at = &blocklab::inpath::Moments {
        at,
        groups: &groups,
        unix_secs: Some(1_617_300_000),
    };
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Output::default();
    let mut flows = Vec::new();
    // An allowed flow and a throttled one (twitter.com, 140 kbit/s in April 2021).
    for (port, name) in [(40000u16, "example.org"), (40001, "twitter.com")] {
        let c = format!("10.0.0.1:{port}");
        let s = "192.0.2.10:443";
        let mut pkts = vec![
            tcp(&c, s, 100, 0, SYN, &[]),
            tcp(s, &c, 500, 101, SYN | ACK, &[]),
            tcp(&c, s, 101, 501, ACK, &[]),
            tcp(&c, s, 101, 501, ACK | PSH, &common::client_hello(name)),
        ];
        for i in 0..40u32 {
            pkts.push(tcp(s, &c, 501 + i * 1000, 2000, ACK, &[0x17; 1000]));
        }
        let mut now = 0;
        for p in &pkts {
            now += 1_000_000;
            engine.process(&policy, at, now, p, &mut out);
        }
        let data = tcp(s, &c, 100_000, 2000, ACK, &[0x17; 1400]);
        let ack = tcp(&c, s, 2000, 100_000, ACK, &[]);
        flows.push((data, ack));
    }
    let mut forwarded = 0;
    let mut now = 1_000_000_000;
    let info = allocation_counter::measure(|| {
        for _ in 0..2000 {
            for (data, ack) in &flows {
                now += 100_000;
                engine.process(&policy, at, now, data, &mut out);
                forwarded += usize::from(out.fate() == Fate::Forward);
                engine.process(&policy, at, now, ack, &mut out);
                forwarded += usize::from(out.fate() == Fate::Forward);
            }
        }
    });
    assert_eq!(info.count_total, 0, "the fast path allocated: {info:?}");
    assert!(
        forwarded > 4000 && forwarded < 8000,
        "passed and policed packets: {forwarded}"
    );
    assert!(engine.stats().policed > 0);
}

/// A million tracked flows fit in 512 MB: the engine's heap (counted by the allocator, the
/// flow table's reservation included) at its peak while 1M distinct TCP flows open with the
/// shipped RU rules. Each sends SYN, SYN-ACK, ACK and a real ClientHello: the name is read
/// (the reassembly buffer freed) and the detectors keep the hello while they wait for more,
/// within their budget (`total_detect`, 64 MiB by default; past it flows go undetected).
#[test]
fn a_million_tracked_flows_fit_in_512_mb() {
    use blocklab::inpath::packet::{ACK, PSH, SYN};
    use blocklab::inpath::{Engine, EngineConfig, Moments, Output};
    const FLOWS: u32 = 1_000_000;
    const BOUND: u64 = 512 << 20;
    let policy = ru_policy();
    let when = Moments::at(blocklab::policy::At::Day("2026-03-01".parse().unwrap()));
    let server: SocketAddr = "192.0.2.10:443".parse().unwrap();
    let hello = common::client_hello("example.org");
    let (mut flows, mut stats) = (0, None);
    let info = allocation_counter::measure(|| {
        let mut engine = Engine::new(EngineConfig::default());
        let mut out = Output::default();
        let mut now = 0u64;
        for i in 0..FLOWS {
            let client = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40000));
            for (src, dst, seq, ack, flags, payload) in [
                (client, server, 100, 0, SYN, &[][..]),
                (server, client, 500, 101, SYN | ACK, &[]),
                (client, server, 101, 501, ACK, &[]),
                (client, server, 101, 501, ACK | PSH, &hello),
            ] {
                let p = testdata::tcp_segment((src, dst), seq, ack, flags, 64, payload);
                now += 1000;
                engine.process(&policy, &when, now, &p, &mut out);
            }
        }
        flows = engine.flows();
        stats = Some((engine.stats(), engine.detect_bytes()));
    });
    let (stats, held) = stats.unwrap();
    assert_eq!(flows, FLOWS as usize, "every flow tracked, none evicted");
    assert_eq!(stats.evicted, 0);
    eprintln!(
        "1M flows: peak heap {} MB ({} bytes a flow), {} MB buffered for the detectors, {} flows past the budget",
        info.bytes_max >> 20,
        info.bytes_max / u64::from(FLOWS),
        held >> 20,
        stats.detect_overflow
    );
    assert_eq!(stats.reassembly_overflow, 0, "every name was read");
    assert!(
        info.bytes_max <= BOUND,
        "1M flows took {} MB at peak (bound 512 MB)",
        info.bytes_max >> 20
    );
}

/// One real OpenVPN (UDP) session through the engine: whether the client's tunnel came up
/// within `patience`, and the decision the engine logged for the flow.
fn openvpn_case(date: &str, mode: &str, patience: Duration) -> (bool, serde_json::Value) {
    let lab = Lab::start_at(date, mode, "");
    let dir = lab.dir.path().join("pki");
    std::fs::create_dir(&dir).unwrap();
    common::openvpn_pki(&dir);
    let _server = common::openvpn(
        Some(lab.ns(2)),
        &dir,
        &common::openvpn_server_args("udp", ORIGIN, 1194),
    );
    std::thread::sleep(Duration::from_millis(500));
    let client = common::openvpn(
        Some(lab.ns(0)),
        &dir,
        &common::openvpn_client_args("udp", ORIGIN, 1194),
    );
    let (up, _) = client.wait_for("Initialization Sequence Completed", patience);
    let d = lab.wait_decision_where("detector", "openvpn");
    (up, d)
}

#[test]
fn live_real_openvpn_passes_in_observe_and_is_cut_in_enforce_by_date() {
    require("openvpn");
    require("openssl");
    let (pass, cut) = (Duration::from_secs(60), Duration::from_secs(12));
    let (observe, enforce_on, enforce_before) = std::thread::scope(|s| {
        let a = s.spawn(|| openvpn_case("2023-09-01", "observe", pass));
        let b = s.spawn(|| openvpn_case("2023-09-01", "enforce", cut));
        let c = s.spawn(|| openvpn_case("2023-01-01", "enforce", pass));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert!(observe.0, "observe: the tunnel comes up");
    assert_eq!(observe.1["verdict"], "allow");
    assert!(!enforce_on.0, "enforce at 2023-09-01: the tunnel is cut");
    assert_eq!(enforce_on.1["verdict"], "block");
    assert_eq!(enforce_on.1["rule"], "ru-vpn");
    assert!(
        enforce_before.0,
        "enforce at 2023-01-01: no rule yet, the tunnel comes up"
    );
    assert_eq!(enforce_before.1["verdict"], "allow");
}

/// One real WireGuard session (boringtun peers, UDP sockets in the client and origin
/// namespaces) through the engine: whether the handshake completed, whether a tunnelled
/// packet arrived, and the decision the engine logged for the flow.
fn wireguard_case(date: &str, mode: &str) -> (bool, bool, serde_json::Value) {
    let lab = Lab::start_at(date, mode, "");
    let ssock = in_ns(lab.ns(2), || UdpSocket::bind("0.0.0.0:51820").unwrap());
    ssock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let csock = in_ns(lab.ns(0), || {
        UdpSocket::bind(format!("{CLIENT}:0")).unwrap()
    });
    csock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let dst: SocketAddr = format!("{ORIGIN}:51820").parse().unwrap();
    let (handshake, data) =
        common::wireguard_session(&csock, ssock, dst, 3, Duration::from_secs(1));
    let d = lab.wait_decision_where("detector", "wireguard");
    (handshake, data, d)
}

#[test]
fn live_real_wireguard_passes_in_observe_and_is_cut_in_enforce_by_date() {
    let (observe, enforce_on, enforce_before) = std::thread::scope(|s| {
        let a = s.spawn(|| wireguard_case("2023-09-01", "observe"));
        let b = s.spawn(|| wireguard_case("2023-09-01", "enforce"));
        let c = s.spawn(|| wireguard_case("2023-01-01", "enforce"));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert!(observe.0 && observe.1, "observe: handshake and data pass");
    assert_eq!(observe.2["verdict"], "allow");
    assert!(
        enforce_on.0,
        "enforce at 2023-09-01: the identifying handshake passes"
    );
    assert!(!enforce_on.1, "enforce at 2023-09-01: the tunnel is cut");
    assert_eq!(enforce_on.2["verdict"], "block");
    assert_eq!(enforce_on.2["rule"], "ru-vpn");
    assert!(
        enforce_before.0 && enforce_before.1,
        "enforce at 2023-01-01: no rule yet, the tunnel works"
    );
    assert_eq!(enforce_before.2["verdict"], "allow");
}

/// `open_in` creates the device inside the named namespace (what `blocklab lab` uses); the
/// device goes away with it.
#[test]
fn open_in_creates_the_device_in_the_namespace() {
    require("ip");
    let made = TempNs::add("blipns");
    let ns = made.0.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let path = PathBuf::from(format!("/var/run/netns/{ns}"));
        let dev = blocklab::inpath::tun::open_in(&path, "blt0", 1400).unwrap();
        let show = run(&["ip", "-n", &ns, "link", "show", "blt0"]);
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        assert!(text.contains("mtu 1400") && text.contains("UP"), "{text}");
        drop(dev);
        let gone = Command::new("ip")
            .args(["-n", &ns, "link", "show", "blt0"])
            .output()
            .unwrap();
        assert!(!gone.status.success(), "the device is removed with its fd");
        let missing =
            blocklab::inpath::tun::open_in(Path::new("/var/run/netns/blip-none"), "blt0", 1400);
        match missing {
            Err(e) => assert!(e.to_string().contains("cannot open namespace"), "{e}"),
            Ok(_) => panic!("opened a device in a namespace that does not exist"),
        }
    });
}

//! Live relays with real OpenVPN (Debian's `openvpn`, a throw-away test PKI made with the
//! `openssl` CLI, `--dev null`, loopback only) through `blocklab serve`: the handshake passes
//! in `observe` mode, and in `enforce` mode for an `ru` client the flow is cut after the
//! handshake at 2023-09-01 (rule `ru-vpn-2023`) but not at 2023-01-01.
//! These tests fail (not skip) when `openvpn` or `openssl` is missing: `.ci/run` installs them.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> String {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("required tool `{name}` is missing (Debian package `{name}`; .ci/run installs it)");
}

/// A CA and server/client certificates (P-256), made with the openssl CLI.
fn pki(dir: &Path) {
    let openssl = tool("openssl");
    let run = |args: &[&str]| {
        let o = Command::new(&openssl)
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
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=blocklab-test-ca",
    ]);
    for n in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{n}.key"),
            "-out",
            &format!("{n}.csr"),
            "-subj",
            &format!("/CN={n}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{n}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{n}.crt"),
            "-days",
            "2",
        ]);
    }
}

fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Starts `blocklab serve` and returns it, the relay's bound address, and its log lines.
fn gateway(dir: &Path, config: &str, listener: &str) -> (Proc, SocketAddr, mpsc::Receiver<String>) {
    let cfg = dir.join(format!("blocklab-{}.toml", free_port(true)));
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.replace('"', ""));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("gateway did not announce its relay");
        if line.contains("listening") && line.contains(&format!("listener={listener}")) {
            let addr = line
                .split("addr=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            return (proc, addr.parse().unwrap(), rx);
        }
    }
}

fn openvpn(dir: &Path, args: &[String]) -> (Proc, mpsc::Receiver<String>) {
    let mut child = Command::new(tool("openvpn"))
        .args([
            "--dev",
            "null",
            "--verb",
            "3",
            "--ca",
            "ca.crt",
            "--hand-window",
            "60",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    (Proc(child), rx)
}

/// Waits up to `within` for a line containing `needle`; returns all lines read.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, within: Duration) -> (bool, String) {
    let deadline = Instant::now() + within;
    let mut seen = String::new();
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        seen.push_str(&l);
        seen.push('\n');
        if l.contains(needle) {
            return (true, seen);
        }
    }
    (false, seen)
}

struct Case {
    /// The OpenVPN client completed its TLS handshake and data-channel setup.
    connected: bool,
    /// The gateway's `vpn verdict` log line.
    verdict: String,
    client_log: String,
}

/// One OpenVPN session through a relay: `udp` or `tcp`, `observe` or `enforce`, at `date`.
fn case(dir: &Path, udp: bool, mode: &str, date: &str) -> Case {
    let server_port = free_port(udp);
    let proto = if udp { "udp" } else { "tcp" };
    let config = format!(
        "date = \"{date}\"\n[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"ru\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"127.0.0.1:{server_port}\"\nprotocol = \"{proto}\"\nmode = \"{mode}\"\n"
    );
    let (_server, _srx) = openvpn(
        dir,
        &[
            "--proto".into(),
            if udp {
                "udp".into()
            } else {
                "tcp-server".into()
            },
            "--local".into(),
            "127.0.0.1".into(),
            "--lport".into(),
            server_port.to_string(),
            "--tls-server".into(),
            "--dh".into(),
            "none".into(),
            "--cert".into(),
            "server.crt".into(),
            "--key".into(),
            "server.key".into(),
        ],
    );
    let (_gw, relay, glog) = gateway(dir, &config, &format!("relay/{proto}"));
    std::thread::sleep(Duration::from_millis(500)); // let the OpenVPN server bind
    let (_client, crx) = openvpn(
        dir,
        &[
            "--proto".into(),
            if udp {
                "udp".into()
            } else {
                "tcp-client".into()
            },
            "--remote".into(),
            relay.ip().to_string(),
            relay.port().to_string(),
            "--nobind".into(),
            "--tls-client".into(),
            "--connect-retry".into(),
            "1".into(),
            "--cert".into(),
            "client.crt".into(),
            "--key".into(),
            "client.key".into(),
        ],
    );
    let (connected, client_log) = wait_for(
        &crx,
        "Initialization Sequence Completed",
        Duration::from_secs(12),
    );
    let (_, glines) = wait_for(&glog, "vpn verdict", Duration::from_secs(2));
    let verdict = glines
        .lines()
        .find(|l| l.contains("vpn verdict"))
        .unwrap_or_default()
        .to_string();
    Case {
        connected,
        verdict,
        client_log,
    }
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    dir
}

fn check(dir: PathBuf, udp: bool) {
    let (observe, enforce_2023_09, enforce_2023_01) = std::thread::scope(|s| {
        let a = s.spawn(|| case(&dir, udp, "observe", "2023-09-01"));
        let b = s.spawn(|| case(&dir, udp, "enforce", "2023-09-01"));
        let c = s.spawn(|| case(&dir, udp, "enforce", "2023-01-01"));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert!(
        observe.connected,
        "observe must pass the tunnel:\n{}",
        observe.client_log
    );
    assert!(
        observe.verdict.contains("verdict=openvpn")
            && observe.verdict.contains("action=forward")
            && observe.verdict.contains("mode=observe"),
        "{}",
        observe.verdict
    );
    assert!(
        observe.verdict.contains("jurisdiction=ru"),
        "{}",
        observe.verdict
    );

    assert!(
        !enforce_2023_09.connected,
        "enforce at 2023-09-01 must cut the tunnel:\n{}",
        enforce_2023_09.client_log
    );
    assert!(
        enforce_2023_09.verdict.contains("verdict=openvpn")
            && enforce_2023_09.verdict.contains("action=drop"),
        "{}",
        enforce_2023_09.verdict
    );
    assert!(
        enforce_2023_09.verdict.contains("vpn_rule=ru-vpn-2023"),
        "{}",
        enforce_2023_09.verdict
    );

    assert!(
        enforce_2023_01.connected,
        "no RU OpenVPN rule before 2023-08-07:\n{}",
        enforce_2023_01.client_log
    );
    assert!(
        enforce_2023_01.verdict.contains("verdict=openvpn")
            && enforce_2023_01.verdict.contains("action=forward"),
        "{}",
        enforce_2023_01.verdict
    );
}

#[test]
fn real_openvpn_over_udp_relay_observe_and_enforce_by_date() {
    let dir = setup();
    check(dir.path().to_path_buf(), true);
}

#[test]
fn real_openvpn_over_tcp_relay_observe_and_enforce_by_date() {
    let dir = setup();
    check(dir.path().to_path_buf(), false);
}

#[test]
fn unmapped_clients_get_nothing_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    target
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let config = format!(
        "[[clients]]\nnetworks = [\"127.0.0.2/32\"]\njurisdiction = \"ru\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"{}\"\nprotocol = \"udp\"\n",
        target.local_addr().unwrap()
    );
    let (_gw, relay, _log) = gateway(dir.path(), &config, "relay/udp");
    let mut buf = [0u8; 64];
    let outside = UdpSocket::bind("127.0.0.1:0").unwrap();
    outside.send_to(b"hello", relay).unwrap();
    assert!(
        target.recv_from(&mut buf).is_err(),
        "a client outside [[clients]] was relayed"
    );
    let inside = UdpSocket::bind("127.0.0.2:0").unwrap();
    inside.send_to(b"hello", relay).unwrap();
    let (n, _) = target
        .recv_from(&mut buf)
        .expect("a mapped client is relayed");
    assert_eq!(&buf[..n], b"hello");
}

//! Live relays with real OpenVPN (Debian's `openvpn`, a throw-away test PKI made with the
//! `openssl` CLI, `--dev null`, loopback only) through `blocklab serve`: the handshake passes
//! in `observe` mode, and in `enforce` mode for an `ru` client the flow is cut after the
//! handshake at 2023-09-01 (rule `ru-vpn-2023`) but not at 2023-01-01. The gateway runs
//! in-process (`tests/common`).
//! These tests fail (not skip) when `openvpn` or `openssl` is missing: `.ci/run` installs them.

mod common;

use std::io::Read as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_port, Gateway};

/// Starts the gateway in-process with `config`; returns it and the bound address of `listener`.
fn gateway(config: &str, rules: &[(&str, &str)], listener: &str) -> (Gateway, SocketAddr) {
    let gw = Gateway::start(config, rules);
    let addr = gw.addr(listener);
    (gw, addr)
}

/// A gateway config with one `[[relay]]` to `forward` over `protocol`, for the clients in
/// `networks` (RU); `extra` goes first (a date, a rules folder).
fn relay_config(
    extra: &str,
    networks: &str,
    forward: impl std::fmt::Display,
    protocol: &str,
    mode: &str,
) -> String {
    format!(
        "{extra}[[clients]]\nnetworks = [\"{networks}\"]\njurisdiction = \"ru\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"{forward}\"\nprotocol = \"{protocol}\"\nmode = \"{mode}\"\n"
    )
}

/// A UDP socket on 127.0.0.1 whose reads give up after `ms` milliseconds.
fn udp_socket(ms: u64) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
    s
}

/// The gateway's `vpn verdict` log line (quotes removed, as `key=value`), waiting up to 10 s
/// for it; empty when none came.
fn vpn_verdict(gw: &Gateway) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log().replace('"', "");
        if let Some(line) = log.lines().find(|l| l.contains("vpn verdict")) {
            return line.to_string();
        }
        if Instant::now() > deadline {
            return String::new();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Case {
    /// The OpenVPN client completed its TLS handshake and data-channel setup.
    connected: bool,
    /// The gateway's `vpn verdict` log line.
    verdict: String,
    client_log: String,
}

/// One OpenVPN session through a relay: `udp` or `tcp`, `observe` or `enforce`, at `date`.
/// `patience`: how long to wait for the tunnel (long when it should come up, short when the
/// relay should cut it; the cut is shown by the verdict line, not by the wait).
fn case(dir: &Path, udp: bool, mode: &str, date: &str, patience: Duration) -> Case {
    let server_port = free_port();
    let proto = if udp { "udp" } else { "tcp" };
    let config = relay_config(
        &format!("date = \"{date}\"\n"),
        "127.0.0.0/8",
        format!("127.0.0.1:{server_port}"),
        proto,
        mode,
    );
    let _server = common::openvpn(
        None,
        dir,
        &common::openvpn_server_args(
            if udp { "udp" } else { "tcp-server" },
            "127.0.0.1",
            server_port,
        ),
    );
    let (glog, relay) = gateway(&config, &[], &format!("relay/{proto}"));
    std::thread::sleep(Duration::from_millis(500)); // let the OpenVPN server bind
    let client = common::openvpn(
        None,
        dir,
        &common::openvpn_client_args(
            if udp { "udp" } else { "tcp-client" },
            &relay.ip().to_string(),
            relay.port(),
        ),
    );
    let (connected, client_log) = client.wait_for("Initialization Sequence Completed", patience);
    let verdict = vpn_verdict(&glog);
    Case {
        connected,
        verdict,
        client_log,
    }
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::openvpn_pki(dir.path());
    dir
}

fn check(dir: PathBuf, udp: bool) {
    let (pass, cut) = (Duration::from_secs(60), Duration::from_secs(12));
    let (observe, enforce_2023_09, enforce_2023_01) = std::thread::scope(|s| {
        let a = s.spawn(|| case(&dir, udp, "observe", "2023-09-01", pass));
        let b = s.spawn(|| case(&dir, udp, "enforce", "2023-09-01", cut));
        let c = s.spawn(|| case(&dir, udp, "enforce", "2023-01-01", pass));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    // (case, whether the tunnel comes up, why, what its verdict line says)
    let expect: [(&Case, bool, &str, &[&str]); 3] = [
        (
            &observe,
            true,
            "observe must pass the tunnel",
            &[
                "verdict=openvpn",
                "action=forward",
                "mode=observe",
                "jurisdiction=ru",
            ],
        ),
        (
            &enforce_2023_09,
            false,
            "enforce at 2023-09-01 must cut the tunnel",
            &["verdict=openvpn", "action=drop", "vpn_rule=ru-vpn-2023"],
        ),
        (
            &enforce_2023_01,
            true,
            "no RU OpenVPN rule before 2023-08-07",
            &["verdict=openvpn", "action=forward"],
        ),
    ];
    for (case, up, why, parts) in expect {
        assert_eq!(case.connected, up, "{why}:\n{}", case.client_log);
        for part in parts {
            assert!(case.verdict.contains(part), "{part}: {}", case.verdict);
        }
    }
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
    let target = udp_socket(700);
    // No mode: the relay's default.
    let config = format!(
        "[[clients]]\nnetworks = [\"127.0.0.2/32\"]\njurisdiction = \"ru\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"{}\"\nprotocol = \"udp\"\n",
        target.local_addr().unwrap()
    );
    let (_gw, relay) = gateway(&config, &[], "relay/udp");
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

/// A real WireGuard peer pair (boringtun) talking through a UDP relay.
mod wireguard {
    use super::*;

    struct Outcome {
        handshake: bool,
        data: bool,
        verdict: String,
    }

    fn session(mode: &str, date: &str) -> Outcome {
        let ssock = udp_socket(200);
        let config = relay_config(
            &format!("date = \"{date}\"\n"),
            "127.0.0.0/8",
            ssock.local_addr().unwrap(),
            "udp",
            mode,
        );
        let (glog, relay) = gateway(&config, &[], "relay/udp");
        let csock = udp_socket(3000);
        let (handshake, data) =
            common::wireguard_session(&csock, ssock, relay, 1, Duration::from_secs(2));
        let verdict = vpn_verdict(&glog);
        Outcome {
            handshake,
            data,
            verdict,
        }
    }

    #[test]
    fn real_wireguard_handshake_through_udp_relay_observe_and_enforce_by_date() {
        let (observe, cut_2022, cut_2023, pass_2021) = std::thread::scope(|s| {
            let a = s.spawn(|| session("observe", "2023-09-01"));
            let b = s.spawn(|| session("enforce", "2022-01-01"));
            let c = s.spawn(|| session("enforce", "2023-09-01"));
            let e = s.spawn(|| session("enforce", "2021-01-01"));
            (
                a.join().unwrap(),
                b.join().unwrap(),
                c.join().unwrap(),
                e.join().unwrap(),
            )
        });
        assert!(
            observe.handshake && observe.data,
            "observe passes everything: {}",
            observe.verdict
        );
        assert!(
            observe.verdict.contains("verdict=wireguard")
                && observe.verdict.contains("rule=handshake"),
            "{}",
            observe.verdict
        );
        for (o, rule) in [
            (&cut_2022, "ru-vpn-wireguard-2021"),
            (&cut_2023, "ru-vpn-2023"),
        ] {
            assert!(o.handshake, "the identifying handshake passes");
            assert!(!o.data, "the tunnel is cut after the handshake ({rule})");
            assert!(
                o.verdict.contains("action=drop")
                    && o.verdict.contains(&format!("vpn_rule={rule}")),
                "{}",
                o.verdict
            );
        }
        assert!(
            pass_2021.handshake && pass_2021.data,
            "no RU WireGuard rule before 2021-09-01: {}",
            pass_2021.verdict
        );
    }
}

/// `reset` and `cut-after` from a lab rules file, with a PPTP control connection and a
/// WireGuard-format UDP flow.
mod techniques {
    use super::*;
    use std::io::Write as _;

    const LAB: &str = include_str!("data/rules/relay-vpn.toml");

    fn lab_gateway(proto: &str, forward: SocketAddr) -> (Gateway, SocketAddr) {
        let config = format!(
            "date = \"2024-01-01\"\nrules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"lab\"\n[[relay]]\nlisten = \"127.0.0.1:0\"\nforward = \"{forward}\"\nprotocol = \"{proto}\"\nmode = \"enforce\"\n"
        );
        gateway(&config, &[("lab.toml", LAB)], &format!("relay/{proto}"))
    }

    #[test]
    fn reset_technique_sends_rst_after_the_pptp_request() {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = echo.accept() {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        let (log, relay) = lab_gateway("tcp", target);
        let mut c = std::net::TcpStream::connect(relay).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(&blocklab::detect::pptp::sccrq()).unwrap();
        // The request passes (it completes the identification); the echoed reply is where
        // the relay resets both sides.
        let mut buf = [0u8; 512];
        let err = c
            .read(&mut buf)
            .expect_err("the relay must reset the connection, not deliver the reply");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        let v = vpn_verdict(&log);
        assert!(
            v.contains("verdict=pptp")
                && v.contains("action=reset")
                && v.contains("vpn_rule=lab-pptp-reset"),
            "{v}"
        );
    }

    #[test]
    fn cut_after_lets_n_packets_of_the_flow_through() {
        use blocklab::detect::wireguard::build;
        let sink = udp_socket(1500);
        let (log, relay) = lab_gateway("udp", sink.local_addr().unwrap());
        let c = udp_socket(20_000);
        c.send_to(&build::initiation(5, 0x11), relay).unwrap();
        let mut buf = [0u8; 2048];
        sink.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (n, from) = sink.recv_from(&mut buf).unwrap();
        assert_eq!(n, 148);
        sink.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        sink.send_to(&build::response(6, 5, 0x22), from).unwrap();
        let (n, _) = c
            .recv_from(&mut buf)
            .expect("the identifying response passes");
        assert_eq!(n, 92);
        for i in 0..5u64 {
            c.send_to(&build::transport(6, i, 32, 0x33), relay).unwrap();
        }
        let mut got = 0;
        while sink.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        // cut_after = 4 packets of the flow: initiation, response and two transport messages.
        assert_eq!(got, 2, "transport messages that passed");
        let v = vpn_verdict(&log);
        assert!(
            v.contains("action=cut-after") && v.contains("vpn_rule=lab-wireguard-cut"),
            "{v}"
        );
    }
}

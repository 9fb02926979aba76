//! VPN detectors on CONNECT tunnels: a real OpenVPN-over-TCP handshake (from our own
//! captures, `tests/data/openvpn-tcp-tls.txt`) carried through the forward proxy is named in
//! the gateway's log (observe mode: the bytes still pass), and ordinary traffic is not. The
//! packet fixtures are what `tests/data/extract-openvpn.py` makes of `tests/data/captures/`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::Blocklab;

/// The captured handshake: (from the client?, bytes).
fn handshake() -> Vec<(bool, Vec<u8>)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/openvpn-tcp-tls.txt"
    ))
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (d, h) = l.split_once(' ').unwrap();
            let bytes = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect();
            (d == "c", bytes)
        })
        .collect()
}

/// An origin that answers each client packet of `script` with the server packets after it.
fn origin(script: Vec<(bool, Vec<u8>)>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for (from_client, bytes) in script {
            if from_client {
                let mut buf = vec![0u8; bytes.len()];
                if s.read_exact(&mut buf).is_err() {
                    return;
                }
            } else if s.write_all(&bytes).is_err() {
                return;
            }
        }
        let _ = s.read(&mut [0u8; 1]);
    });
    addr
}

fn config() -> String {
    "date = \"2022-03-10\"\n[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"ru\"\n[http]\nlisten = [\"127.0.0.1:0\"]\n".to_string()
}

/// Opens a CONNECT tunnel to `to` through `proxy` and plays the client side of `script`.
fn play(
    proxy: std::net::SocketAddr,
    to: std::net::SocketAddr,
    script: &[(bool, Vec<u8>)],
) -> usize {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.contains(" 200"), "CONNECT answered {status:?}");
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l == "\r\n" {
            break;
        }
    }
    let mut received = 0;
    for (from_client, bytes) in script {
        if *from_client {
            s.write_all(bytes).unwrap();
        } else {
            let mut buf = vec![0u8; bytes.len()];
            r.read_exact(&mut buf).unwrap();
            assert_eq!(
                &buf, bytes,
                "the tunnel passes the server's bytes unchanged"
            );
            received += buf.len();
        }
    }
    received
}

#[test]
fn openvpn_inside_a_connect_tunnel_is_named_and_still_passes() {
    let script: Vec<(bool, Vec<u8>)> = handshake().into_iter().take(6).collect();
    assert!(script.iter().any(|p| !p.0), "the script has server packets");
    let to = origin(script.clone());
    let gw = Blocklab::start(&config(), &[], &["http"]);
    let received = play(gw.addr("http"), to, &script);
    assert!(received > 0);
    let line = gw.wait_log(&["vpn verdict", "verdict=\"openvpn\"", "mode=\"observe\""]);
    assert!(line.contains("action=\"forward\""), "{line}");
}

#[test]
fn ordinary_tunnels_are_not_flagged() {
    let script = vec![
        (
            true,
            b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n".to_vec(),
        ),
        (
            false,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
    ];
    let to = origin(script.clone());
    let gw = Blocklab::start(&config(), &[], &["http"]);
    play(gw.addr("http"), to, &script);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!gw.log().contains("vpn verdict"), "{}", gw.log());
}

#[test]
fn the_openvpn_fixtures_are_extracted_from_our_own_captures() {
    common::require("python3");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/extract-openvpn.py");
    let out = std::process::Command::new("python3")
        .args([script, "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tests/data/openvpn-*.txt differ from what the extractor makes of tests/data/captures: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

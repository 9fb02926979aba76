//! `blocklab experiment` end to end, through the real binary, on our own captures
//! (`tests/data/captures/`, recorded by `tests/data/make-captures.sh`: flows on port 1194 are
//! OpenVPN, with static key, TLS and TLS with tls-auth, over UDP and TCP; all of `non-vpn.pcap`
//! (DNS, HTTP, HTTPS) is not).

use std::path::{Path, PathBuf};
use std::process::Command;

use blocklab::experiment::pcap::{self, write};
use serde_json::Value;

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures")
}

/// The OpenVPN captures: one OpenVPN flow each.
const OPENVPN: [&str; 6] = [
    "udp-static.pcap",
    "tcp-static.pcap",
    "udp-tls.pcap",
    "tcp-tls.pcap",
    "udp-tls-auth.pcap",
    "tcp-tls-auth.pcap",
];

/// Frames in a capture, counted with the pcap reader alone.
fn frames_in(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    pcap::Reader::new(&bytes).unwrap().count()
}

fn labels(dir: &Path) -> PathBuf {
    let p = dir.join("labels.csv");
    let mut text = String::from("file,server,label\n");
    for f in OPENVPN {
        text.push_str(&format!("{f},*:1194,openvpn\n"));
    }
    text.push_str("non-vpn.pcap,none\n");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .arg("experiment")
        .args(args)
        .output()
        .unwrap()
}

fn score<'a>(report: &'a Value, detector: &str) -> &'a Value {
    if detector == "any-vpn" {
        return &report["overall"];
    }
    report["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["detector"] == detector)
        .unwrap()
}

#[test]
fn openvpn_captures_full_recall_and_no_false_positive() {
    let dir = captures();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let labels = labels(tmp.path());
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--labels".as_ref(),
        labels.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    let paths: Vec<PathBuf> = OPENVPN
        .iter()
        .chain(&["non-vpn.pcap"])
        .map(|c| dir.join(c))
        .collect();
    args.extend(paths.iter().map(|p| p.as_os_str()));
    let o = run(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("packets/s"), "summary table: {stdout}");
    let udp_frames = frames_in(&dir.join("udp-tls.pcap"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("udp-tls.pcap: {udp_frames} packets")),
        "progress lines"
    );

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let ovpn = score(&report, "openvpn");
    assert!(ovpn["recall"].as_f64().unwrap() >= 0.95, "{ovpn}");
    assert_eq!(ovpn["tp"], 6, "one OpenVPN flow per capture");
    for d in ["openvpn", "wireguard", "ike", "pptp", "any-vpn"] {
        assert_eq!(
            score(&report, d)["fp"],
            0,
            "{d} false positives: {}",
            score(&report, d)
        );
    }
    assert!(score(&report, "any-vpn")["recall"].as_f64().unwrap() >= 0.95);

    // flows.jsonl: one object per flow, in the documented shape.
    let flows: Vec<Value> = std::fs::read_to_string(out.join("flows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(flows.len() as u64, report["flows"].as_u64().unwrap());
    let udp = flows
        .iter()
        .find(|f| f["file"] == "udp-tls.pcap" && f["server"] == "10.3.0.222:1194")
        .unwrap();
    assert_eq!(udp["proto"], "udp");
    assert_eq!(udp["client"], "10.3.0.40:44020");
    assert_eq!(
        (&udp["verdict"], &udp["detector"], &udp["decided_after"]),
        (&"openvpn".into(), &"openvpn".into(), &2.into())
    );
    assert_eq!(udp["label"], "openvpn");
    assert_eq!(
        udp["packets"], udp_frames,
        "the capture holds only the tunnel's flow"
    );
    let dns = flows
        .iter()
        .find(|f| f["file"] == "non-vpn.pcap" && f["server"] == "10.3.0.222:53")
        .unwrap();
    assert_eq!(
        (&dns["verdict"], &dns["label"]),
        (&Value::Null, &"none".into())
    );

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("](chart.svg)") && md.contains("| openvpn |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("openvpn"));
}

#[test]
fn pcapng_and_linux_sll_copies_without_extension_give_the_same_verdicts() {
    let bytes = std::fs::read(captures().join("udp-tls.pcap")).unwrap();
    let frames: Vec<(u64, Vec<u8>)> = pcap::Reader::new(&bytes)
        .unwrap()
        .map(|f| {
            let f = f.unwrap();
            (f.ts_ns / 1000, f.data.to_vec())
        })
        .collect();
    // Ethernet -> Linux cooked capture: drop the MAC header, keep the ethertype.
    let sll: Vec<(u64, Vec<u8>)> = frames
        .iter()
        .map(|(t, f)| (*t, write::sll(u16::from_be_bytes([f[12], f[13]]), &f[14..])))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let ng = tmp.path().join("capture-ng");
    std::fs::write(&ng, write::pcapng(113, &sll)).unwrap();
    let out = tmp.path().join("out");
    let o = run(&[
        "--quiet".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        ng.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let flows = std::fs::read_to_string(out.join("flows.jsonl")).unwrap();
    let hit: Vec<&str> = flows
        .lines()
        .filter(|l| l.contains("\"verdict\":\"openvpn\""))
        .collect();
    assert_eq!(hit.len(), 1, "{flows}");
    assert!(
        hit[0].contains("\"server\":\"10.3.0.222:1194\"") && hit[0].contains("\"decided_after\":2"),
        "{}",
        hit[0]
    );
}

#[test]
fn bad_inputs_fail_with_a_located_message() {
    let tmp = tempfile::tempdir().unwrap();
    let notpcap = tmp.path().join("x.pcap");
    std::fs::write(&notpcap, b"GIF89a not a capture").unwrap();
    let o = run(&[
        "--out".as_ref(),
        tmp.path().join("o").as_os_str(),
        notpcap.as_os_str(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "reported, skipped, non-zero at the end"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a pcap or pcapng file"));

    let bad = tmp.path().join("labels.csv");
    std::fs::write(&bad, "udp.pcap,openvpn\nudp.pcap,1194,openvpn\n").unwrap();
    let cap = captures().join("udp-static.pcap");
    let o = run(&["--labels".as_ref(), bad.as_os_str(), cap.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("labels.csv:2:1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = run(&[
        "--detectors".as_ref(),
        "openvpn,v2ray".as_ref(),
        cap.as_os_str(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown detector `v2ray`"));
}

#[test]
fn a_bad_or_truncated_capture_is_skipped_and_the_rest_processed_in_any_thread_count() {
    let dir = captures();
    let tmp = tempfile::tempdir().unwrap();
    let notpcap = tmp.path().join("junk.pcap");
    std::fs::write(&notpcap, b"GIF89a not a capture").unwrap();
    let whole = std::fs::read(dir.join("tcp-tls.pcap")).unwrap();
    let cut = tmp.path().join("cut.pcap");
    std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).unwrap();
    let mut outputs = Vec::new();
    for threads in ["1", "2", "9"] {
        let out = tmp.path().join(format!("out{threads}"));
        let udp = dir.join("udp-tls.pcap");
        let missing = tmp.path().join("missing.pcap");
        let o = run(&[
            "--quiet".as_ref(),
            "--threads".as_ref(),
            threads.as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
            notpcap.as_os_str(),
            udp.as_os_str(),
            missing.as_os_str(),
            cut.as_os_str(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("junk.pcap: not a pcap or pcapng file"),
            "{err}"
        );
        assert!(err.contains("missing.pcap: cannot open"), "{err}");
        assert!(err.contains("cut.pcap: truncated record at byte"), "{err}");
        let flows = std::fs::read_to_string(out.join("flows.jsonl")).unwrap();
        assert!(
            flows.contains("\"file\":\"udp-tls.pcap\"") && flows.contains("\"file\":\"cut.pcap\""),
            "the good and the truncated file are both processed"
        );
        outputs.push(flows);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "same flows.jsonl with 1 and 2 threads"
    );
    assert_eq!(
        outputs[0], outputs[2],
        "same flows.jsonl with 1 thread and 9 (flow shards)"
    );
}

#[test]
fn a_webrtc_flow_is_fingerprinted_from_its_dtls_hello_after_the_stun_checks() {
    // Two pion/webrtc peers over loopback (tests/data/webrtc/make-capture.sh): STUN binding
    // requests and responses first, then pion's default DTLS ClientHello on the same ports.
    let pcap =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/webrtc/pion-datachannel.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run(&[
        "--quiet".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        pcap.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let flows = std::fs::read_to_string(out.join("flows.jsonl")).unwrap();
    let flows: Vec<Value> = flows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(f["proto"], "udp", "{f}");
    // The value the shipped rule ru-snowflake-dtls-2026 blocks is the one read off this capture.
    let rules = include_str!("../rules/ru.toml");
    let ja4 = f["ja4"].as_str().unwrap_or_else(|| panic!("no ja4: {f}"));
    assert!(ja4.starts_with("dd2i"), "DTLS 1.2, no SNI: {ja4}");
    assert!(
        rules.contains(&format!("ja4 = [\"{ja4}\"]")),
        "rules/ru.toml does not block {ja4}"
    );
    // WebRTC is never a VPN.
    assert!(f["verdict"].is_null(), "{f}");
}

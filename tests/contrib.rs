//! The operations files in `contrib/`: the Grafana dashboard queries only metrics a running
//! gateway serves on `/metrics`, and the systemd unit is valid (`systemd-analyze verify`),
//! unprivileged, hardened, and its ExecStart/ExecReload do what they say on the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Blocklab;

fn contrib(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Every `expr` (and variable query) string in a dashboard, recursively.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

/// The `blocklab_*` names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("blocklab_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_served() {
    let dash: serde_json::Value = serde_json::from_str(&contrib("grafana-dashboard.json"))
        .expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    queries(&dash, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");

    // A gateway with DNS and admin that has made a DNS block decision (so the labelled
    // decision counter has a sample to check the dashboard's labels against).
    let gw = Blocklab::start(
        "date = \"2022-03-10\"\n[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"ru\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"127.0.0.1:9\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        &[],
        &["dns/udp", "admin"],
    );
    let dns = gw.addr("dns/udp");
    let dig = Command::new("dig")
        .args([format!("@{}", dns.ip()), format!("-p{}", dns.port())])
        .args(["www.linkedin.com", "+short", "+time=2", "+tries=1"])
        .output()
        .expect("dig is required (bind9-dnsutils)");
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "95.167.13.50");
    let metrics = http_get(gw.addr("admin"), "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");

    // Families and their types, from `# TYPE name type`.
    let families: BTreeMap<&str, &str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let mut checked = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| families.get(f) == Some(&"histogram"))
                })
                .unwrap_or(&name);
            assert!(
                families.contains_key(family),
                "the dashboard queries {name}, which /metrics does not serve (query: {e})"
            );
            checked.insert(family.to_string());
        }
    }
    assert!(checked.len() >= 15, "{checked:?}");
    // The labels it groups decisions by are the counter's labels.
    let sample = metrics
        .lines()
        .find(|l| l.starts_with("blocklab_decisions_total{"))
        .expect("a decision was counted");
    for label in ["jurisdiction", "rule", "technique", "layer", "verdict"] {
        assert!(sample.contains(&format!("{label}=\"")), "{sample}");
    }
    assert!(sample.contains("verdict=\"block\""), "{sample}");
}

/// `key=value` lines of one section of a unit file (comments and blanks skipped).
fn section(unit: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').expect("key=value");
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

#[test]
fn the_systemd_unit_is_valid_unprivileged_hardened_and_reloads_with_hup() {
    let unit = contrib("blocklab.service");
    let service = section(&unit, "Service");
    let get = |k: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("DynamicUser"), ["yes"], "an unprivileged user");
    assert!(get("User").is_empty() || get("User") != ["root"]);
    assert_eq!(get("CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"]);
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictNamespaces", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(get(k), [v], "{k}");
    }
    assert_eq!(get("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    let exec: Vec<&str> = get("ExecStart")[0].split_whitespace().collect();
    assert!(exec[0].ends_with("/blocklab"), "{exec:?}");
    assert_eq!(&exec[1..3], ["serve", "--config"], "{exec:?}");

    // systemd itself accepts every directive (unknown keys would be reported on stderr).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("blocklab.service");
    std::fs::write(
        &local,
        unit.replace(exec[0], env!("CARGO_BIN_EXE_blocklab")),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze is required (package systemd)");
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && err.trim().is_empty(), "{err}");

    // ExecStart's command line serves; ExecReload's signal reloads the rules.
    // (A small rules directory, so a reload is quick even in a debug build on a busy machine.)
    let rules = "[jurisdiction]\ncode = \"lab\"\nname = \"Lab\"\nutc_offset = \"+00:00\"\n\n[[rule]]\nid = \"lab-nx\"\ndomains = [\"nx.test\"]\ntechniques = [\"dns-nxdomain\"]\n";
    let gw = Blocklab::start(
        "rules = \"rules\"\n[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"lab\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"127.0.0.1:9\"]\n",
        &[("lab.toml", rules)],
        &["dns/udp"],
    );
    gw.signal("HUP");
    gw.wait_log(&["policy reloaded"]);
}

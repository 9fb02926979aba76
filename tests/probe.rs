//! `blocklab probe` end to end on loopback: real dnsmasq resolvers (control, and a censoring
//! one), origin servers with a test CA, the real gateway binary as the network under test, and
//! the real probe binary measuring. Only 127.0.0.0/8 is ever contacted (`--allow-net`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use common::{hosts_table, Dnsmasq, Gateway, Origin, LAB_RULES};
use serde_json::Value;

/// A dnsmasq serving `zone`: dnsmasq `--address` values, e.g. `/facebook.com/127.0.0.1` or
/// `/rt.com/` (NXDOMAIN).
fn lab_dns(zone: &[&str]) -> Dnsmasq {
    zone.iter()
        .fold(Dnsmasq::config(), |c, z| c.address(z))
        .start()
}

/// The lab zone: every test name on 127.0.0.1, `ipdrop.example` on 127.0.0.3.
const ZONE: &[&str] = &[
    "/facebook.com/127.0.0.1",
    "/twitter.com/127.0.0.1",
    "/rt.com/127.0.0.1",
    "/example.org/127.0.0.1",
    "/drop.example/127.0.0.1",
    "/ipdrop.example/127.0.0.3",
];

/// What one probe run gave.
struct ProbeRun {
    measurements: Vec<Value>,
    stdout: String,
    stderr: String,
    code: i32,
    jsonl: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ProbeRun {
    fn get(&self, input: &str) -> &Value {
        self.measurements
            .iter()
            .find(|m| m["input"] == input)
            .unwrap_or_else(|| panic!("no measurement of {input}; stderr:\n{}", self.stderr))
    }
}

/// [`probe`] against `resolver` (the network under test) and `control`, through `proxy` and
/// trusting `ca` when given, with `args` after them.
async fn probe_via(
    resolver: &str,
    control: &str,
    proxy: Option<&str>,
    ca: Option<&str>,
    args: &[&str],
) -> ProbeRun {
    let mut all = vec!["--resolver", resolver, "--control-resolver", control];
    if let Some(proxy) = proxy {
        all.extend(["--proxy", proxy]);
    }
    if let Some(ca) = ca {
        all.extend(["--ca", ca]);
    }
    all.extend(args);
    probe(&all).await
}

/// [`probe_via`] with blocklab as the network under test (its resolver and proxy) and the lab's
/// dnsmasq `dns` as the control resolver.
async fn probe_gateway(gw: &Gateway, dns: &Dnsmasq, ca: Option<&str>, args: &[&str]) -> ProbeRun {
    let resolver = gw.addr("dns/udp").to_string();
    let proxy = format!("http://{}", gw.addr("http"));
    probe_via(&resolver, &dns.addr.to_string(), Some(&proxy), ca, args).await
}

/// [`probe_via`] with the lab's dnsmasq `dns` as both resolvers and blocklab's proxy as the
/// network under test.
async fn probe_proxy(dns: &Dnsmasq, gw: &Gateway, ca: Option<&Path>, args: &[&str]) -> ProbeRun {
    let resolver = dns.addr.to_string();
    let proxy = format!("http://{}", gw.addr("http"));
    let ca = ca.map(|p| p.to_str().unwrap());
    probe_via(&resolver, &resolver, Some(&proxy), ca, args).await
}

/// Runs the real `blocklab probe` with `args` (plus `--out`, `--allow-net 127.0.0.0/8`).
async fn probe(args: &[&str]) -> ProbeRun {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("out.jsonl");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .arg("probe")
        .arg("--out")
        .arg(&jsonl)
        .args(["--allow-net", "127.0.0.0/8"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("cannot run blocklab probe");
    let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
    let measurements = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    ProbeRun {
        measurements,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
        jsonl,
        _dir: dir,
    }
}

fn gateway_config(jurisdiction: &str, date: &str, rules: bool, extra_hosts: &str) -> String {
    format!(
        "date = \"{date}\"\n{}[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"{jurisdiction}\"\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\n{}{extra_hosts}",
        if rules { "rules = \"rules\"\n" } else { "" },
        hosts_table()
    )
}

/// An origin, the lab zone's dnsmasq and the gateway with its DNS frontend forwarding to it
/// (clients in `jurisdiction` at `date`, the shipped rules).
async fn with_dns(jurisdiction: &str, date: &str) -> (Origin, Dnsmasq, Gateway) {
    let origin = Origin::start().await;
    let dns = lab_dns(ZONE);
    let config = gateway_config_with_dns(jurisdiction, date, dns.addr);
    (origin, dns, Gateway::start(&config, &[]))
}

/// The same gateway with its DNS frontend too, forwarding to `upstream`.
fn gateway_config_with_dns(jurisdiction: &str, date: &str, upstream: SocketAddr) -> String {
    format!(
        "date = \"{date}\"\n[[clients]]\nnetworks = [\"127.0.0.1/32\"]\njurisdiction = \"{jurisdiction}\"\n\
         [dns]\nlisten = [\"127.0.0.1:0\"]\nupstream = [\"{upstream}\"]\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\nhold_secs = 5\n{}",
        hosts_table()
    )
}

fn tk<'a>(m: &'a Value, key: &str) -> &'a Value {
    &m["test_keys"][key]
}

/// Asserts that measurement `m` found DNS blocking: NXDOMAIN from the resolver under test,
/// inconsistent with the control, the site not accessible.
fn assert_dns_blocking(m: &Value) {
    assert_eq!(tk(m, "blocking"), "dns", "{m:#}");
    assert_eq!(tk(m, "accessible"), false);
    assert_eq!(tk(m, "dns_experiment_failure"), "dns_nxdomain_error");
    assert_eq!(tk(m, "dns_consistency"), "inconsistent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ru_2022_03_10_facebook_reset_and_blockpage_allowed_sites_accessible() {
    let (origin, dns, gw) = with_dns("ru", "2022-03-10").await;
    let fb_https = format!("https://facebook.com:{}/", origin.https.port());
    let fb_http = format!("http://facebook.com:{}/", origin.http.port());
    let ok_https = format!("https://example.org:{}/page", origin.https.port());
    let ok_http = format!("http://example.org:{}/page", origin.http.port());
    let run = probe_gateway(
        &gw,
        &dns,
        Some(origin.ca.to_str().unwrap()),
        &[
            "--timeout",
            "10",
            "--probe-cc",
            "ru",
            "--probe-asn",
            "AS12389",
            &fb_https,
            &fb_http,
            &ok_https,
            &ok_http,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.measurements.len(), 4);
    // OONI's base format (df-000-base): the same run fields on every measurement, and the
    // Web Connectivity version of the spec's keys, not blocklab's own version.
    let first = &run.measurements[0];
    let report_id = first["report_id"].as_str().unwrap().to_string();
    let parts: Vec<&str> = report_id.split('_').collect();
    assert_eq!(parts.len(), 6, "{report_id}");
    assert_eq!(
        &parts[1..5],
        ["webconnectivity", "RU", "12389", "n1"],
        "{report_id}"
    );
    assert!(parts[0].len() == 16 && parts[0].ends_with('Z') && parts[0].as_bytes()[8] == b'T');
    assert!(parts[5].len() == 16 && parts[5].bytes().all(|b| b.is_ascii_alphanumeric()));
    for m in &run.measurements {
        assert_eq!(m["data_format_version"], "0.2.0");
        assert_eq!(m["probe_cc"], "RU");
        assert_eq!(m["probe_asn"], "AS12389");
        assert_eq!(m["report_id"], report_id.as_str());
        assert_eq!(m["test_version"], "0.4.0");
        assert_ne!(m["test_version"], m["software_version"]);
        assert_eq!(m["test_start_time"], first["test_start_time"]);
        assert_eq!(m["test_start_time"].as_str().unwrap().len(), 19);
        assert!(m["test_start_time"].as_str() <= m["measurement_start_time"].as_str());
    }

    // HTTPS: RST after the ClientHello.
    let m = run.get(&fb_https);
    assert_eq!(m["test_name"], "web_connectivity");
    assert!(m["measurement_start_time"].as_str().unwrap().len() == 19);
    assert_eq!(tk(m, "blocking"), "http-failure", "{m:#}");
    assert_eq!(tk(m, "accessible"), false);
    assert_eq!(
        tk(m, "http_experiment_failure"),
        "connection_reset",
        "{m:#}"
    );
    assert_eq!(tk(m, "tls_handshakes")[0]["failure"], "connection_reset");
    assert_eq!(tk(m, "dns_consistency"), "consistent");
    assert_eq!(tk(m, "tcp_connect")[0]["status"]["success"], true);
    assert_eq!(tk(m, "control")["http_request"]["status_code"], 200);

    // HTTP: the Rostelecom redirect, recognised as OONI's ooni.ru_6.
    let m = run.get(&fb_http);
    assert_eq!(tk(m, "blocking"), "http-diff", "{m:#}");
    assert_eq!(tk(m, "accessible"), false);
    assert_eq!(tk(m, "status_code_match"), false);
    assert_eq!(tk(m, "requests")[0]["response"]["code"], 302);
    let names: Vec<&str> = tk(m, "x_blocklab")["blockpage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ooni.ru_6"), "{names:?}");

    // Allowed: accessible, nothing matched.
    for u in [&ok_https, &ok_http] {
        let m = run.get(u);
        assert_eq!(tk(m, "blocking"), false, "{m:#}");
        assert_eq!(tk(m, "accessible"), true, "{m:#}");
        assert_eq!(tk(m, "x_blocklab")["blockpage"], serde_json::json!([]));
    }
    let m = run.get(&ok_http);
    assert_eq!(tk(m, "body_length_match"), true);
    assert_eq!(tk(m, "status_code_match"), true);
    assert_eq!(tk(m, "headers_match"), true);

    // The summary table counts each type.
    let line = |label: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` in:\n{}", run.stdout))
            .split_whitespace()
            .rev()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(line("accessible (blocking: false)"), "2");
    assert_eq!(line("blocking: http-failure"), "1");
    assert_eq!(line("blocking: http-diff"), "1");
    assert_eq!(line("blocking: dns"), "0");

    // The report: Markdown with the per-type table, and an SVG chart.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .arg("probe")
        .arg("--report")
        .arg(&run.jsonl)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(run.jsonl.with_extension("md")).unwrap();
    assert!(
        md.contains("| blocking: http-failure | 1 | 25.0% |"),
        "{md}"
    );
    assert!(md.contains("| blocking: http-diff | 1 | 25.0% |"), "{md}");
    assert!(md.contains("ooni.ru_6"), "{md}");
    assert!(md.contains("![results](out.svg)"));
    let svg = std::fs::read_to_string(run.jsonl.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{svg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_drop_is_tcp_ip_and_tls_drop_is_a_timeout() {
    let origin = Origin::start().await;
    let dropped = Origin::start_on("127.0.0.3".parse().unwrap()).await;
    let dns = lab_dns(ZONE);
    let gw = Gateway::start(
        &gateway_config(
            "lab",
            "2022-03-10",
            true,
            "\"ipdrop.example\" = [\"127.0.0.3\"]\n",
        )
        .replace("\"ipdrop.example\" = [\"127.0.0.1\"]\n", ""),
        &[("lab.toml", LAB_RULES)],
    );
    let ipdrop = format!("https://ipdrop.example:{}/", dropped.https.port());
    let tlsdrop = format!("https://drop.example:{}/", origin.https.port());
    let run = probe_proxy(&dns, &gw, Some(&dropped.ca), &["--timeout", "2", &ipdrop]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = run.get(&ipdrop);
    assert_eq!(tk(m, "blocking"), "tcp_ip", "{m:#}");
    assert_eq!(tk(m, "accessible"), false);
    let c = &tk(m, "tcp_connect")[0];
    assert_eq!(c["ip"], "127.0.0.3");
    assert_eq!(c["status"]["failure"], "generic_timeout_error", "{m:#}");
    assert_eq!(c["status"]["blocked"], true);

    let run = probe_proxy(&dns, &gw, Some(&origin.ca), &["--timeout", "2", &tlsdrop]).await;
    let m = run.get(&tlsdrop);
    assert_eq!(tk(m, "blocking"), "http-failure", "{m:#}");
    assert_eq!(tk(m, "http_experiment_failure"), "generic_timeout_error");
    assert_eq!(
        tk(m, "tls_handshakes")[0]["failure"],
        "generic_timeout_error"
    );
    assert_eq!(tk(m, "tcp_connect")[0]["status"]["success"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ru_2021_04_01_twitter_is_accessible_but_throttled() {
    let origin = Origin::start().await;
    let dns = lab_dns(ZONE);
    let gw = Gateway::start(&gateway_config("ru", "2021-04-01", false, ""), &[]);
    let big = format!("https://twitter.com:{}/bytes/400000", origin.https.port());
    let run = probe_proxy(&dns, &gw, Some(&origin.ca), &["--download-time", "3", &big]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = run.get(&big);
    assert_eq!(tk(m, "blocking"), false, "{m:#}");
    assert_eq!(tk(m, "accessible"), true);
    let x = tk(m, "x_blocklab");
    assert_eq!(x["throttled"], true, "{m:#}");
    let probe_kbps = x["rate_kbps"]["probe"].as_f64().unwrap();
    let control_kbps = x["rate_kbps"]["control"].as_f64().unwrap();
    // 140 kbit/s configured; allow for the initial burst.
    assert!((80.0..400.0).contains(&probe_kbps), "{probe_kbps}");
    assert!(
        control_kbps > 10.0 * probe_kbps,
        "{control_kbps} vs {probe_kbps}"
    );
    assert_eq!(tk(m, "requests")[0]["response"]["body_is_truncated"], true);
    assert!(
        run.stdout.contains("throttled (x_blocklab): 1"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_from_the_resolver_under_test_is_dns_blocking() {
    // An EU ISP's resolver (Regulation 2022/350: rt.com answered NXDOMAIN), as a real dnsmasq.
    let origin = Origin::start().await;
    let control = lab_dns(ZONE);
    let censor = lab_dns(&["/rt.com/", "/example.org/127.0.0.1"]);
    let rt = format!("http://rt.com:{}/", origin.http.port());
    let ok = format!("http://example.org:{}/", origin.http.port());
    let run = probe_via(
        &censor.addr.to_string(),
        &control.addr.to_string(),
        None,
        None,
        &["--timeout", "10", &rt, &ok],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = run.get(&rt);
    assert_dns_blocking(m);
    assert_eq!(tk(m, "queries")[0]["failure"], "dns_nxdomain_error");
    assert_eq!(tk(m, "control")["dns"]["addrs"][0], "127.0.0.1");
    let m = run.get(&ok);
    assert_eq!(tk(m, "blocking"), false, "{m:#}");
    assert_eq!(tk(m, "accessible"), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizen_lab_list_with_unreachable_origins_is_not_blocking() {
    // The first URLs of the Citizen Lab RU list; the lab zone answers every name with
    // 127.0.0.1, where nothing listens on 80/443: the origins are unreachable on both sides.
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/citizenlab-ru-head.csv");
    let text = std::fs::read_to_string(&list).unwrap();
    let head: Vec<&str> = text.lines().take(7).collect();
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("ru-head.csv");
    std::fs::write(&short, head.join("\n") + "\n").unwrap();
    let mut hosts = String::new();
    for l in &head[1..] {
        let host = url::Url::parse(l.split(',').next().unwrap())
            .unwrap()
            .host_str()
            .unwrap()
            .to_string();
        hosts.push_str(&format!("\"{host}\" = [\"127.0.0.1\"]\n"));
    }
    let dns = lab_dns(&["/#/127.0.0.1"]);
    let gw = Gateway::start(&gateway_config("ru", "2022-03-10", false, &hosts), &[]);
    let run = probe_proxy(
        &dns,
        &gw,
        None,
        &["--timeout", "10", "--input", short.to_str().unwrap()],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.measurements.len(), 6, "{}", run.stderr);
    for m in &run.measurements {
        assert_eq!(tk(m, "blocking"), false, "{m:#}");
        assert_eq!(tk(m, "accessible"), false, "{m:#}");
        assert_eq!(tk(m, "x_blocklab")["outcome"], "down");
        assert!(m["annotations"]["category_code"].is_string());
    }
    // Progress lines, then the summary.
    assert!(run.stderr.contains("[   6/6]"), "{}", run.stderr);
    let down = run
        .stdout
        .lines()
        .find(|l| l.starts_with("unreachable on both sides"))
        .unwrap_or_else(|| panic!("no summary in {}", run.stdout));
    assert_eq!(down.split_whitespace().rev().nth(1), Some("6"), "{down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_proxy_is_an_error_not_tcp_blocking() {
    let dns = lab_dns(ZONE);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let resolver = dns.addr.to_string();
    let run = probe_via(
        &resolver,
        &resolver,
        Some(&proxy),
        None,
        &["http://example.org/"],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    assert!(run.measurements.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eu_2022_03_10_rt_com_is_nxdomain_at_blocklabs_resolver() {
    let (origin, dns, gw) = with_dns("eu", "2022-03-10").await;
    let rt = format!("https://rt.com:{}/", origin.https.port());
    let ok = format!("https://example.org:{}/", origin.https.port());
    // The test CA's certificate does not name rt.com: --insecure lets the control fetch it.
    let run = probe_gateway(
        &gw,
        &dns,
        None,
        &["--insecure", "--timeout", "10", &rt, &ok],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = run.get(&rt);
    assert_dns_blocking(m);
    assert_eq!(
        tk(m, "control")["http_request"]["status_code"],
        200,
        "{m:#}"
    );
    assert_eq!(tk(m, "control")["dns"]["failure"], Value::Null);
    let m = run.get(&ok);
    assert_eq!(tk(m, "blocking"), false, "{m:#}");
    assert_eq!(tk(m, "accessible"), true);
    assert_eq!(tk(m, "dns_consistency"), "consistent");
}

//! A newcomer's first run: `blocklab serve` with no config, and `--date` / `--jurisdiction`.
//!
//! The fixed default ports (5353, 8080, 9153) would collide with anything else on the machine,
//! so each gateway runs in a network namespace the test creates (only its loopback, up) and
//! always removes (a Drop guard, so also on panic). The clients are the real `dig` and `curl`,
//! run inside the same namespace: no packet leaves it. Needs root and `ip` (iproute2).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A network namespace with only loopback, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "blfr{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let _ = run(&["ip", "netns", "del", &name]);
        let out = run(&["ip", "netns", "add", &name]);
        assert!(
            out.status.success(),
            "cannot create a network namespace (root and iproute2 are required): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        let up = ns.exec(&["ip", "link", "set", "lo", "up"]);
        assert!(up.status.success(), "lo up failed");
        ns
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} (is iproute2 installed?): {e}"))
    }

    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(args).stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// `blocklab serve ARGS` inside `ns`, killed on drop; its log is kept.
struct Gateway {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts the gateway and waits for its one startup line (`blocklab serving`).
    fn start(ns: &Netns, args: &[&str]) -> (Gateway, String) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, rx) = common::spawn_logged(
            ns.command(&[env!("CARGO_BIN_EXE_blocklab"), "serve"])
                .args(args),
            "info",
            &log,
        );
        let gw = Gateway { child, log, rx };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match gw.rx.recv_timeout(left) {
                Ok(l) if l.contains("blocklab serving") => return (gw, l),
                Ok(_) => {}
                Err(_) => panic!(
                    "no startup line; log:\n{}",
                    gw.log.lock().unwrap().join("\n")
                ),
            }
        }
    }
}

/// The first A record `dig +short` prints, or the status line when there is none.
fn dig(ns: &Netns, name: &str) -> String {
    ns.stdout(&[
        "dig",
        "@127.0.0.1",
        "-p",
        "5353",
        name,
        "+time=2",
        "+tries=1",
    ])
}

fn status(dig_out: &str) -> String {
    dig_out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("(no answer)")
        .to_string()
}

fn answers(dig_out: &str) -> Vec<String> {
    let mut in_answer = false;
    let mut out = Vec::new();
    for line in dig_out.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
        } else if in_answer && (line.is_empty() || line.starts_with(";;")) {
            in_answer = false;
        } else if in_answer {
            if let Some(last) = line.split_whitespace().last() {
                out.push(last.to_string());
            }
        }
    }
    out
}

#[test]
fn serve_without_a_config_answers_dns_http_and_admin_on_loopback() {
    let ns = Netns::create();
    let (_gw, line) = Gateway::start(&ns, &[]);
    // The one startup line: date, clients -> jurisdiction, every listener.
    for part in [
        "(today, following the clock)",
        "127.0.0.0/8 ::1/128 -> ru",
        "dns/udp=127.0.0.1:5353",
        "dns/tcp=127.0.0.1:5353",
        "http=127.0.0.1:8080",
        "admin=127.0.0.1:9153",
    ] {
        assert!(line.contains(part), "startup line lacks {part:?}: {line}");
    }
    // Only loopback: nothing listens on a wildcard address.
    let ss = ns.stdout(&["ss", "-lntuH"]);
    let locals: Vec<&str> = ss
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .collect();
    assert!(locals.len() >= 4, "{ss}");
    for l in &locals {
        assert!(
            l.starts_with("127.0.0.1:") || l.starts_with("[::1]:"),
            "{l} listens beyond loopback:\n{ss}"
        );
    }

    // DNS: LinkedIn is under dns-blockpage rules in `ru` since 2016 (its own, and the
    // registry snapshot's for www.linkedin.com).
    let d = dig(&ns, "www.linkedin.com");
    assert_eq!(answers(&d), ["95.167.13.50"], "{d}");

    // HTTP proxy: the same rule's http-blockpage, a redirect to the RU ISP's page.
    let out = ns.exec(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--max-time",
        "10",
        "-x",
        "http://127.0.0.1:8080",
        "http://linkedin.com/",
    ]);
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(got, "302 http://warning.rt.ru/", "curl: {out:?}");

    // Admin: the metrics count both decisions.
    let m = ns.stdout(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://127.0.0.1:9153/metrics",
    ]);
    assert!(m.contains("blocklab_dns_queries_total 1\n"), "{m}");
    for (layer, technique) in [("dns", "dns-blockpage"), ("http", "http-blockpage")] {
        assert!(
            m.lines().any(|l| l.starts_with("blocklab_decisions_total")
                && l.contains(&format!("layer=\"{layer}\""))
                && l.contains(&format!("technique=\"{technique}\""))
                && l.ends_with(" 1")),
            "no {layer} block counted:\n{m}"
        );
    }
}

#[test]
fn date_and_jurisdiction_flags_override_the_config() {
    // EU sanctions on RT: Council Regulation (EU) 2022/350, in force 2022-03-02.
    let ns = Netns::create();
    let (gw, line) = Gateway::start(&ns, &["--jurisdiction", "eu", "--date", "2022-03-10"]);
    assert!(line.contains("2022-03-10 (simulated)"), "{line}");
    assert!(line.contains("-> eu"), "{line}");
    let after = dig(&ns, "rt.com");
    assert_eq!(status(&after), "NXDOMAIN", "{after}");
    drop(gw);

    let (_gw, line) = Gateway::start(&ns, &["--jurisdiction", "eu", "--date", "2022-03-01"]);
    assert!(line.contains("2022-03-01 (simulated)"), "{line}");
    let before = dig(&ns, "rt.com");
    // Allowed: it goes upstream, and this namespace has none, so SERVFAIL, not a block.
    assert_eq!(status(&before), "SERVFAIL", "{before}");
    let decide = ns.stdout(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://127.0.0.1:9153/decide?target=rt.com&client=127.0.0.1",
    ]);
    assert!(decide.contains("allow"), "{decide}");
}

#[test]
fn bad_flags_are_rejected_before_serving() {
    let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args(["serve", "--date", "2022-02-30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--date 2022-02-30"), "{err}");
    let ns = Netns::create();
    let out = ns.exec(&[
        env!("CARGO_BIN_EXE_blocklab"),
        "serve",
        "--jurisdiction",
        "atlantis",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("atlantis"), "{err}");
}

#[test]
fn the_example_configs_load_and_mean_what_their_comments_say() {
    use blocklab::config::Config;
    use blocklab::policy::{At, Target};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let p = c
                .compile_policy()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                c,
                p,
            ));
        }
    }
    let names: Vec<&str> = loaded.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(
        names.contains(&"quickstart.toml") && names.contains(&"lab-gateway.toml"),
        "{names:?}"
    );
    let at_date = |c: &Config| At::Day(c.date().unwrap());

    // The quick start is the no-config default's listeners.
    let (_, quick, qp) = loaded
        .iter()
        .find(|(n, _, _)| n == "quickstart.toml")
        .unwrap();
    let default = Config::embedded_default();
    assert_eq!(
        quick.dns.as_ref().unwrap().listen,
        default.dns.as_ref().unwrap().listen
    );
    assert_eq!(
        quick.http.as_ref().unwrap().listen,
        default.http.as_ref().unwrap().listen
    );
    assert_eq!(
        quick.admin.as_ref().unwrap().listen,
        default.admin.as_ref().unwrap().listen
    );
    let d = qp
        .decide(
            "127.0.0.1".parse().unwrap(),
            Target::Domain("www.linkedin.com"),
            at_date(quick),
        )
        .unwrap();
    assert!(d.is_block(), "{d:?}");

    // The lab gateway: 10.7.0.0/24 is ru, 10.8.0.0/24 is eu; RT is banned only for the EU.
    let (_, lab, lp) = loaded
        .iter()
        .find(|(n, _, _)| n == "lab-gateway.toml")
        .unwrap();
    let rt = |client: &str| {
        lp.decide(
            client.parse().unwrap(),
            Target::Domain("rt.com"),
            at_date(lab),
        )
        .unwrap()
        .is_block()
    };
    assert!(!rt("10.7.0.20"), "RU group");
    assert!(rt("10.8.0.20"), "EU group");
    assert!(lp
        .decide(
            "192.168.1.1".parse().unwrap(),
            Target::Domain("rt.com"),
            at_date(lab)
        )
        .is_err());
    assert_eq!(
        lab.dns.as_ref().unwrap().ede,
        Some(blocklab::config::Ede::Censored)
    );
}

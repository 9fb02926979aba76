//! blocklab: a network gateway that behaves like a national censor, for research labs.
//!
//! Module map (dependencies point downwards only):
//!
//! - [`rules`]: the jurisdiction rules files (`rules/*.toml`) and their importers; parsing with
//!   `path:line:column` errors. Pure data, no I/O beyond reading the files it is given.
//! - [`policy`]: the compiled, immutable policy answering "client X, target Y, date T ->
//!   allow / block how". Pure, synchronous, allocation-free and lock-free on the lookup path.
//! - [`config`]: the gateway config (`blocklab.toml`).
//! - [`detect`]: VPN / protocol detectors, pure functions over a flow's first packets.
//! - [`sniff`]: pure parsers of what a censor reads without decrypting (ClientHello with SNI,
//!   ALPN, ECH and JA4; HTTP head; QUIC Initial).
//! - [`enforce`]: what a connection or flow gets (verdicts, the resolve-and-check pipeline,
//!   reset/swallow/splice, throttle, live VPN inspection, blockpage responses), shared by the
//!   TCP frontends and the relays.
//! - [`experiment`]: offline detector experiments over pcap/pcapng files.
//! - [`serve`]: starts the frontends named in the config and owns the shared, swappable policy.
//! - [`resolve`]: the upstream resolver shared by the frontends.
//! - [`dns`], [`http`], [`tls`], [`relay`]: the frontends, translating between the wire and
//!   `policy::Request`/`policy::Decision`.
//! - [`inpath`]: the in-path packet censor (TUN device live, `blocklab replay` offline).
//! - [`metrics`], [`decision_log`], [`admin`]: operating the gateway: Prometheus metrics, the
//!   JSON-lines decision log, the admin listener (`/metrics`, `/healthz`, `/reload`, `/date`, `/decide`).
//! - [`watch`]: opt-in polling of the rules directory, reloading on change.
//! - [`limits`]: the per-client DNS rate limit and per-listener connection caps.
//! - [`listen`]: the one TCP accept loop (bind, announce, cap, backoff, span, refusals).
//! - [`lab`]: `blocklab lab`, a censored network in namespaces (topology, origins, lab CA,
//!   teardown).
//! - [`cli`]: the `blocklab` command line (the binary in `src/main.rs` only calls it).

pub mod admin;
pub mod cli;
pub mod config;
pub mod decision_log;
pub mod detect;
pub mod dns;
pub mod enforce;
pub mod experiment;
pub mod gateway;
pub mod http;
pub mod inpath;
pub mod lab;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod policy;
pub mod probe;
pub mod relay;
pub mod resolve;
pub mod rules;
pub mod serve;
pub mod sniff;
pub mod tls;
pub mod watch;

//! blocklab: a network gateway that behaves like a national censor, for research labs.
//!
//! Module map, top to bottom. Dependencies point one way, down this list (see
//! `docs/ARCHITECTURE.md`, "Layering"); nothing imports a module above it.
//!
//! - [`cli`]: the `blocklab` command line (the binary in `src/main.rs` only calls it); the only
//!   importer of [`serve`].
//! - [`serve`]: orchestration only: builds the [`gateway::Gateway`], starts the frontends,
//!   signals and shutdown; `serve::start` runs in-process and returns the bound addresses.
//! - Frontends: [`dns`] (UDP/TCP), [`http`] (forward proxy + CONNECT), [`tls`] (transparent
//!   SNI/Host listener, QUIC relay, interception), [`relay`] (UDP/TCP relays fed to the
//!   detectors), [`inpath`] (the packet-level censor on a TUN device, and `blocklab replay`),
//!   [`admin`] (`/metrics`, `/healthz`, `/reload`, `/decide`, `/date`, on hyper), [`watch`]
//!   (rules-directory polling), [`lab`] (`blocklab lab`: namespaces, origins, teardown).
//! - [`enforce`]: what a connection or flow gets (verdicts, the resolve-and-check pipeline,
//!   reset/swallow/splice/freeze, the one throttle, live VPN inspection, blockpage responses),
//!   shared by every frontend.
//! - [`listen`]: the one TCP accept loop (bind, announce, cap, backoff, span, refusals).
//! - [`gateway`]: the shared context (config, policy handle, simulated dates, resolver,
//!   metrics, decision log, reload) that every frontend imports.
//! - Leaf services: [`resolve`] (upstream resolver), [`metrics`], [`decision_log`], [`limits`]
//!   (token bucket, DNS rate limit, connection caps).
//! - [`config`]: the gateway config (`blocklab.toml`): load, parse, validate.
//! - [`policy`]: the compiled, immutable policy answering "client X, target Y, connection C,
//!   date T -> allow / block how", and its `explain`. Pure, synchronous, allocation-free and
//!   lock-free on the lookup path.
//! - [`rules`]: the jurisdiction rules files (`rules/*.toml`), their importers and the CSV
//!   reader; parsing with `path:line:column` errors. Reads files only through a `Reader`.
//! - [`sniff`]: pure parsers of what a censor reads without decrypting (ClientHello with SNI,
//!   ALPN, ECH and JA4; HTTP head; QUIC Initial).
//! - [`detect`]: VPN and bypass detectors, pure functions over a flow's first packets, run by
//!   the one `detect::Classifier`.
//! - [`experiment`]: offline detector experiments over pcap/pcapng files (streaming, parallel).
//! - [`probe`]: client-side measurement, classified like OONI's Web Connectivity; independent
//!   of the gateway.

// The shared test inputs (`sniff::testdata`, `inpath::testdata`) name the library `blocklab`,
// as the benches and integration tests that include them do.
#[cfg(test)]
extern crate self as blocklab;

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

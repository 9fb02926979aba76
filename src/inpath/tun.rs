//! Live mode: the engine on a TUN device (IFF_NO_PI, GSO/GRO offloads), thin I/O only.
//!
//! Policy routing in the router's namespace sends the client networks' traffic (both
//! directions) into the device; every packet read is handed to the [`Engine`], and what
//! passes, plus what the engine injects, is written back to the device, where the kernel
//! routes it on. With offloads (`[inpath] offload`, the default; IFF_VNET_HDR and
//! TUNSETOFFLOAD as wireguard-go does) the kernel hands over TCP super-packets of up to
//! 64 KiB instead of MTU-sized segments: a passing flow's super-packet is written back whole
//! (one read, one lookup, one write per 64 KiB), any other is cut into segments first, so
//! the engine decides, polices and freezes segment by segment as without offloads.
//! The device is opened through `tun-rs` (the TUNSETIFF ioctl needs `unsafe`,
//! which this crate forbids); opening it needs CAP_NET_ADMIN, and without it the error says
//! so. Counters are published to the gateway's metrics a few times a second and every
//! action goes to the decision log (layer `inpath`).

use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tun_rs::{gso_split, VirtioNetHdr, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use super::engine::{
    Engine, EngineConfig, Extras, Fate, FlowEvent, Moments, Output, Stats, VpnMode,
};
use crate::config::{InpathSection, RelayMode};
use crate::decision_log::{now_rfc3339, Event};
use crate::gateway::{Gateway, StartError};
use crate::policy::At;

/// The engine config an `[inpath]` section describes.
pub fn engine_config(s: &InpathSection) -> EngineConfig {
    EngineConfig {
        max_flows: s.max_flows,
        vpn: match s.vpn {
            RelayMode::Observe => VpnMode::Observe,
            RelayMode::Enforce => VpnMode::Enforce,
        },
        clients: s.client_nets(),
        extras: s
            .rules
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    Extras {
                        freeze_after_bytes: r.freeze_after_bytes,
                        residual_secs: r.residual_secs,
                    },
                )
            })
            .collect(),
        ..EngineConfig::default()
    }
}

impl InpathSection {
    /// The engine config this section describes.
    pub fn engine_config(&self) -> EngineConfig {
        engine_config(self)
    }
}

fn builder(name: &str, mtu: u16, offload: bool) -> tun_rs::DeviceBuilder {
    tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .with(|b| {
            b.packet_information(false);
            b.offload(offload);
        })
        .enable(true)
}

fn open_error(name: &str, e: &std::io::Error) -> StartError {
    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(1) {
        ": the in-path engine needs CAP_NET_ADMIN (run as root, or grant the capability)"
    } else {
        ""
    };
    StartError::Other(format!("[inpath] cannot open TUN device {name}: {e}{hint}"))
}

/// Builds the device with `build`, with offloads when `offload` and, if the kernel refuses
/// them (not for a missing permission), again without.
fn build_with<T>(
    name: &str,
    mtu: u16,
    offload: bool,
    build: impl Fn(tun_rs::DeviceBuilder) -> std::io::Result<T>,
) -> Result<T, StartError> {
    match build(builder(name, mtu, offload)) {
        Ok(d) => Ok(d),
        Err(e) if offload && e.kind() != std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(device = name, error = %e, "inpath: no GSO/GRO offloads on the TUN device; reading packet by packet");
            build(builder(name, mtu, false)).map_err(|e| open_error(name, &e))
        }
        Err(e) => Err(open_error(name, &e)),
    }
}

/// Opens (creating if needed) the TUN device `name`, up, without packet information, with
/// GSO/GRO offloads when `offload` (and the kernel has them). Call inside a tokio runtime.
pub fn open(name: &str, mtu: u16, offload: bool) -> Result<tun_rs::AsyncDevice, StartError> {
    build_with(name, mtu, offload, |b| b.build_async())
}

/// Opens the TUN device `name` inside the network namespace `netns` (a path such as
/// `/var/run/netns/NAME`), with GSO/GRO offloads when the kernel has them: a helper thread
/// enters the namespace and creates the device there, so the engine ([`run`]) then serves
/// that namespace from any thread of this process. This is what `blocklab lab` uses for
/// `mode = "inpath"`. Call inside a tokio runtime.
pub fn open_in(
    netns: &std::path::Path,
    name: &str,
    mtu: u16,
) -> Result<tun_rs::AsyncDevice, StartError> {
    let (ns, dev_name) = (netns.to_path_buf(), name.to_string());
    let sync = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).map_err(|e| {
            StartError::Other(format!(
                "[inpath] cannot open namespace {}: {e}",
                ns.display()
            ))
        })?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            let e = std::io::Error::from(e);
            StartError::Other(format!(
                "[inpath] cannot enter namespace {}: {e}{}",
                ns.display(),
                if e.raw_os_error() == Some(1) {
                    ": needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
                } else {
                    ""
                }
            ))
        })?;
        build_with(&dev_name, mtu, true, |b| b.build_sync())
    })
    .join()
    .map_err(|_| StartError::Other("[inpath] the namespace helper thread panicked".into()))??;
    tun_rs::AsyncDevice::new(sync).map_err(|e| open_error(name, &e))
}

/// Starts the engine on the `[inpath]` device, if the config has that section.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(section) = gw.config.inpath.clone() else {
        return Ok(Vec::new());
    };
    let dev = open(&section.device, section.mtu, section.offload)?;
    tracing::info!(listener = "inpath", device = %section.device, offload = dev.tcp_gso(), "listening");
    let cfg = engine_config(&section);
    let gw = Arc::clone(gw);
    Ok(vec![tokio::spawn(run(dev, gw, cfg))])
}

/// Largest segment a super-packet is cut into (IP header included): the kernel cuts to the
/// device's MTU; a bigger one is handed to the engine whole.
const SEGMENT: usize = 9216;

/// `gso_type` of a packet that is not a super-packet (`VIRTIO_NET_HDR_GSO_NONE`), and the
/// ECN bit that may be set on one that is (linux/virtio_net.h).
const GSO_NONE: u8 = 0;
const GSO_ECN: u8 = 0x80;

/// A virtio-net header for a packet that needs nothing from the kernel (no GSO, checksums
/// complete): what precedes every packet the engine writes itself in offload mode.
const PLAIN_HDR: [u8; VIRTIO_NET_HDR_LEN] = [0; VIRTIO_NET_HDR_LEN];

/// Runs the engine on an open device until the task is aborted or the device fails (the API
/// `blocklab lab` uses for `mode = "inpath"` after opening the device in its namespace).
///
/// With offloads (the device was opened with them), each read is a virtio-net header and a
/// packet of up to 64 KiB: a super-packet of a passing flow is written back whole with its
/// header (the kernel segments it and fills in checksums), any other is cut into segments
/// (checksums computed) that go through the engine one by one, as without offloads.
pub async fn run(dev: tun_rs::AsyncDevice, gw: Arc<Gateway>, cfg: EngineConfig) {
    let hdr = if dev.tcp_gso() { VIRTIO_NET_HDR_LEN } else { 0 };
    let mut engine = Engine::new(cfg);
    let mut out = Output::default();
    let mut buf = vec![0u8; hdr + 65_535];
    let mut segs: Vec<Vec<u8>> = if hdr > 0 {
        vec![vec![0u8; hdr + SEGMENT]; IDEAL_BATCH_SIZE]
    } else {
        Vec::new()
    };
    let mut sizes = vec![0usize; segs.len()];
    // Each client group's moment, re-read per packet from the gateway's dates (atomics), so
    // `POST /date` applies to the next new flow.
    let mut dates: Vec<At> = Vec::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            r = dev.recv(&mut buf) => {
                let n = match r {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "inpath: cannot read the TUN device; stopping");
                        return;
                    }
                };
                if n <= hdr {
                    continue;
                }
                let now = start.elapsed().as_nanos() as u64;
                let policy = gw.policy();
                let at = gw.dates.moments(&mut dates);
                let when = Moments {
                    at,
                    groups: &dates,
                    unix_secs: Some(crate::config::unix_now()),
                };
                let vnet = if hdr > 0 { VirtioNetHdr::decode(&buf[..hdr]).ok() } else { None };
                match vnet {
                    Some(h) if h.gso_type & !GSO_ECN != GSO_NONE => {
                        if engine.forwards_whole(&buf[hdr..n], h.gso_size, now) {
                            send(&dev, &buf[..n]);
                            continue;
                        }
                        engine.count_split();
                        let v6 = buf[hdr] >> 4 == 6;
                        match gso_split(&mut buf[hdr..n], h, &mut segs, &mut sizes, hdr, v6) {
                            Ok(k) => {
                                for (seg, size) in segs.iter_mut().zip(&sizes).take(k) {
                                    seg[..hdr].fill(0);
                                    let pkt = &seg[..hdr + size];
                                    engine.process(&policy, &when, now, &pkt[hdr..], &mut out);
                                    if out.fate() == Fate::Forward {
                                        send(&dev, pkt);
                                    }
                                    emit(&dev, hdr, &gw, &mut out);
                                }
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "inpath: cannot cut a super-packet; deciding it whole");
                                engine.process(&policy, &when, now, &buf[hdr..n], &mut out);
                                if out.fate() == Fate::Forward {
                                    send(&dev, &buf[..n]);
                                }
                                emit(&dev, hdr, &gw, &mut out);
                            }
                        }
                    }
                    _ => {
                        engine.process(&policy, &when, now, &buf[hdr..n], &mut out);
                        if out.fate() == Fate::Forward {
                            // With its own header: the kernel completes a partial checksum.
                            send(&dev, &buf[..n]);
                        }
                        emit(&dev, hdr, &gw, &mut out);
                    }
                }
            }
            _ = tick.tick() => {
                engine.expire(start.elapsed().as_nanos() as u64);
                publish(&gw, &engine.stats(), engine.flows());
            }
        }
    }
}

/// Writes one packet (with its virtio-net header in offload mode). A TUN write does not
/// block; a refused one is a dropped packet, as in a router's queue.
fn send(dev: &tun_rs::AsyncDevice, pkt: &[u8]) {
    if let Err(e) = dev.try_send(pkt) {
        tracing::trace!(error = %e, "inpath: TUN write failed; packet dropped");
    }
}

/// Writes the packets the engine injected and released (behind a plain virtio-net header in
/// offload mode, `hdr` bytes) and records its flow events.
fn emit(dev: &tun_rs::AsyncDevice, hdr: usize, gw: &Gateway, out: &mut Output) {
    for (_, p) in &out.inject {
        let parts = [IoSlice::new(&PLAIN_HDR[..hdr]), IoSlice::new(p)];
        if let Err(e) = dev.try_send_vectored(&parts) {
            tracing::trace!(error = %e, "inpath: TUN write failed; packet dropped");
        }
    }
    for e in out.events.drain(..) {
        record(gw, &e);
    }
}

/// Logs one flow outcome (decision log layer `inpath`, and tracing).
fn record(gw: &Gateway, e: &FlowEvent) {
    let policy = gw.policy();
    let j = e
        .jurisdiction
        .and_then(|j| policy.jurisdiction_checked(j))
        .map(|j| j.code.clone());
    let verdict = if matches!(e.action, "pass" | "observe") {
        "allow"
    } else {
        "block"
    };
    tracing::info!(
        client.addr = %e.key.client,
        server.addr = %e.key.server,
        proto = e.key.proto.as_str(),
        target = %e.target,
        action = e.action,
        technique = e.technique.unwrap_or(""),
        rule = e.rule.as_deref().unwrap_or(""),
        detector = e.detector.unwrap_or(""),
        after_packet = e.after_packet,
        "inpath"
    );
    if let Some(d) = e.detector {
        gw.metrics.verdict(d, e.action);
    }
    if let Some(log) = &gw.log {
        log.record(Event {
            time: now_rfc3339(),
            client: e.key.client.to_string(),
            jurisdiction: j,
            layer: "inpath",
            target: e.target.clone(),
            verdict,
            rule: e.rule.clone(),
            technique: e.technique,
            detector: e.detector.map(str::to_string),
            date: gw.date_for(e.key.client.ip()),
            ..Event::default()
        });
    }
}

/// Publishes the engine's counters to `/metrics`: each is named after its [`Stats`] field.
fn publish(gw: &Gateway, s: &Stats, flows: usize) {
    macro_rules! counters {
        ($($field:ident: $help:literal,)*) => {
            vec![$((stringify!($field), $help, s.$field),)*]
        };
    }
    let mut all = counters! {
        packets: "Packets the in-path engine read.",
        bytes: "Bytes the in-path engine read.",
        flows: "Flows the in-path engine tracked.",
        dropped: "Packets the in-path engine dropped.",
        injected: "Packets the in-path engine injected (RSTs, blockpages).",
        evicted: "Flows evicted from the full flow table.",
        reassembly_overflow: "Segments or fragments not buffered at a reassembly bound.",
        detect_overflow: "Flows left undetected because the detector budget was spent.",
        policed: "Packets a throttle policer dropped.",
        unmapped: "Flows of clients outside every configured network.",
        resets: "Flows reset (tls-reset, ip-reset).",
        drops: "Flows dropped (tls-drop, ip-drop).",
        blockpages: "HTTP blockpages injected.",
        throttles: "Flows throttled.",
        freezes: "Flows frozen.",
        quic_drops: "QUIC Initials dropped.",
        residual_drops: "Flows dropped by a residual block.",
        vpn_actions: "Flows acted on by a [[vpn]] rule.",
        gso_whole: "Offload super-packets of passing flows forwarded whole.",
        gso_split: "Offload super-packets cut into segments for the engine.",
    };
    let tracked = "Flows tracked at the last update (a gauge).";
    all.push(("tracked_flows", tracked, flows as u64));
    gw.metrics.set_inpath(all);
}

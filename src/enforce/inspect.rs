//! Per-flow inspection and enforcement shared by the UDP and TCP relays (and usable by any
//! frontend that relays a flow, such as a CONNECT tunnel).
//!
//! An [`Inspector`] is fed every packet of one flow. Until the detectors decide (or
//! [`MAX_PACKETS`](crate::detect::MAX_PACKETS) payload packets were seen) it keeps the payloads and asks the undecided
//! detectors after each one, through the one `detect::Classifier` the offline experiments
//! use too. The first verdict is logged (`tracing`, target `blocklab::vpn`,
//! fields `client`, `jurisdiction`, `detector`, `verdict`, `rule`, `decided_after`, `action`,
//! `vpn_rule`, `mode`) and, in `enforce` mode, turned into the action of the client
//! jurisdiction's `[[vpn]]` rule at the gateway's date: `drop` (nothing more is forwarded),
//! `reset` (TCP: both sides get a RST), `throttle` (`throttle_kbps` in both directions) or
//! `cut-after` (`cut_after` packets of the flow pass, then drop). A throttled flow is shaped by
//! the shared token bucket (`super::throttle::Bucket`): a short burst passes at once, then
//! each packet waits until the rate has paid for it. As reported from Russia,
//! the packet that completes the identification still passes: enforcement starts with the
//! next one. `observe` mode only logs and never changes traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::throttle::Bucket;
use crate::config::RelayMode;
use crate::detect::{self, Classifier, Detector, Dir, Transport, Verdict};
use crate::policy::{At, JurisdictionId, Policy};
use crate::rules::VpnTechnique;

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    /// Forward it now.
    Forward,
    /// Forward it after this delay (throttling).
    Delay(Duration),
    /// Drop it (UDP: discard; TCP: swallow the bytes, the connection hangs).
    Discard,
    /// Reset the flow (TCP RST to both sides; UDP: as `Discard`).
    Reset,
}

/// The enforcement state of a flow after a verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Nothing to do (no verdict, observe mode, or no active rule).
    Forward,
    /// Forward nothing more.
    Drop,
    /// Reset the flow.
    Reset,
    /// Shape to a rate.
    Throttle {
        /// Rate in kbit/s.
        kbps: u32,
    },
    /// Let this many more packets pass, then drop.
    CutAfter {
        /// Packets still allowed.
        remaining: u64,
    },
}

impl Action {
    /// The name logged in `action=`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Action::Forward => "forward",
            Action::Drop => "drop",
            Action::Reset => "reset",
            Action::Throttle { .. } => "throttle",
            Action::CutAfter { .. } => "cut-after",
        }
    }
}

/// Inspects one relayed flow and decides each packet's fate.
#[derive(Debug)]
pub struct Inspector {
    classifier: Classifier<Arc<[Box<dyn Detector>]>>,
    transport: Transport,
    client: SocketAddr,
    server: SocketAddr,
    jurisdiction: JurisdictionId,
    mode: RelayMode,
    payloads: Vec<(Dir, Vec<u8>)>,
    verdict: Option<Verdict>,
    inspecting: bool,
    action: Action,
    bucket: Option<Bucket>,
    packets: u64,
}

impl Inspector {
    /// An inspector for a new flow from `client` (mapped to `jurisdiction`) to `server`.
    pub fn new(
        detectors: Arc<[Box<dyn Detector>]>,
        transport: Transport,
        client: SocketAddr,
        server: SocketAddr,
        jurisdiction: JurisdictionId,
        mode: RelayMode,
    ) -> Inspector {
        Inspector {
            classifier: Classifier::new(detectors),
            transport,
            client,
            server,
            jurisdiction,
            mode,
            payloads: Vec::new(),
            verdict: None,
            inspecting: true,
            action: Action::Forward,
            bucket: None,
            packets: 0,
        }
    }

    /// The verdict, once a detector found its protocol.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// The current enforcement action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Feeds one packet (`payload` may be empty, e.g. a bare ACK is never passed) and returns
    /// its fate; `policy` and `at` are read only when a verdict is reached.
    pub fn on_packet(
        &mut self,
        dir: Dir,
        payload: &[u8],
        policy: &Policy,
        at: At,
        now: Instant,
    ) -> Fate {
        self.packets += 1;
        let fate = self.fate(payload.len(), now);
        if self.inspecting && !payload.is_empty() {
            self.payloads.push((dir, payload.to_vec()));
            self.classify(policy, at, now);
        }
        fate
    }

    fn fate(&mut self, len: usize, now: Instant) -> Fate {
        match &mut self.action {
            Action::Forward => Fate::Forward,
            Action::Drop => Fate::Discard,
            Action::Reset => Fate::Reset,
            Action::Throttle { .. } => match self.bucket.as_mut() {
                Some(b) => match b.delay(len, now) {
                    d if d.is_zero() => Fate::Forward,
                    d => Fate::Delay(d),
                },
                None => Fate::Forward,
            },
            Action::CutAfter { remaining } => {
                if *remaining == 0 {
                    Fate::Discard
                } else {
                    *remaining -= 1;
                    Fate::Forward
                }
            }
        }
    }

    fn classify(&mut self, policy: &Policy, at: At, now: Instant) {
        let classifier = &mut self.classifier;
        let pending = detect::with_flow(
            self.transport,
            self.client,
            self.server,
            &self.payloads,
            |flow| classifier.update(flow),
        );
        let found = self.classifier.found();
        let n = self.payloads.len();
        let code = &policy.jurisdiction(self.jurisdiction).code;
        if let Some((detector, v)) = found {
            self.inspecting = false;
            self.payloads = Vec::new();
            self.verdict = Some(v);
            let rule = match self.mode {
                RelayMode::Observe => None,
                RelayMode::Enforce => policy.vpn_rule(self.jurisdiction, v.protocol, at),
            };
            self.action = match rule {
                None => Action::Forward,
                Some(r) => match r.technique {
                    VpnTechnique::Drop => Action::Drop,
                    VpnTechnique::Reset => Action::Reset,
                    VpnTechnique::Throttle => {
                        let kbps = r.throttle_kbps.unwrap_or(128);
                        self.bucket = Some(Bucket::for_kbps(kbps, now));
                        Action::Throttle { kbps }
                    }
                    VpnTechnique::CutAfter => Action::CutAfter {
                        remaining: u64::from(r.cut_after.unwrap_or(0)).saturating_sub(self.packets),
                    },
                },
            };
            tracing::info!(
                target: "blocklab::vpn",
                client = %self.client,
                server = %self.server,
                jurisdiction = %code,
                detector,
                verdict = v.protocol,
                rule = v.rule,
                decided_after = v.after,
                action = self.action.as_str(),
                vpn_rule = rule.map_or("-", |r| r.id.as_str()),
                mode = match self.mode { RelayMode::Observe => "observe", RelayMode::Enforce => "enforce" },
                "vpn verdict"
            );
        } else if !pending {
            self.inspecting = false;
            self.payloads = Vec::new();
            tracing::debug!(
                target: "blocklab::vpn",
                client = %self.client,
                server = %self.server,
                jurisdiction = %code,
                verdict = "none",
                decided_after = n,
                action = "forward",
                "vpn verdict"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::detect::wireguard::build;

    fn policy() -> Policy {
        let cfg = Config::from_str(
            "t.toml",
            "[[clients]]\nnetworks = [\"127.0.0.0/8\"]\njurisdiction = \"ru\"\n",
        )
        .unwrap();
        cfg.compile_policy().unwrap()
    }

    fn inspector(p: &Policy, mode: RelayMode) -> Inspector {
        let ds: Arc<[Box<dyn Detector>]> = crate::detect::standard(Default::default()).into();
        let j = p.jurisdiction_for("127.0.0.1".parse().unwrap()).unwrap();
        Inspector::new(
            ds,
            Transport::Udp,
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:51820".parse().unwrap(),
            j,
            mode,
        )
    }

    fn day(s: &str) -> At {
        At::Day(s.parse().unwrap())
    }

    /// Fates of a WireGuard handshake followed by four transport messages.
    fn run(mode: RelayMode, at: At) -> (Vec<Fate>, Option<Verdict>) {
        let p = policy();
        let mut i = inspector(&p, mode);
        let (init, resp) = (build::initiation(7, 0xa1), build::response(9, 7, 0xb2));
        let t = build::transport(9, 0, 48, 0xc3);
        let now = Instant::now();
        let mut fates = vec![
            i.on_packet(Dir::ToServer, &init, &p, at, now),
            i.on_packet(Dir::ToClient, &resp, &p, at, now),
        ];
        for _ in 0..4 {
            fates.push(i.on_packet(Dir::ToServer, &t, &p, at, now));
        }
        (fates, i.verdict())
    }

    #[test]
    fn enforce_drops_wireguard_after_the_handshake_while_the_ru_rule_is_active() {
        let (fates, v) = run(RelayMode::Enforce, day("2023-09-01"));
        assert_eq!(v.map(|v| v.protocol), Some("wireguard"));
        assert_eq!(
            &fates[..2],
            &[Fate::Forward, Fate::Forward],
            "the handshake passes"
        );
        assert!(fates[2..].iter().all(|f| *f == Fate::Discard), "{fates:?}");
    }

    #[test]
    fn observe_never_changes_traffic_and_enforce_follows_the_dates() {
        let (fates, v) = run(RelayMode::Observe, day("2023-09-01"));
        assert!(v.is_some());
        assert!(fates.iter().all(|f| *f == Fate::Forward));
        // Before the first RU WireGuard rule (2021-09-01) nothing is blocked.
        let (fates, _) = run(RelayMode::Enforce, day("2021-01-01"));
        assert!(fates.iter().all(|f| *f == Fate::Forward));
    }

    #[test]
    fn throttle_delays_and_cut_after_counts_packets() {
        let now = Instant::now();
        // 8 kbit/s = 1000 B/s, with the bucket's smallest burst (1500 bytes).
        let mut b = Bucket::for_kbps(8, now);
        assert_eq!(b.delay(500, now), Duration::ZERO);
        assert_eq!(b.delay(1000, now), Duration::ZERO);
        assert_eq!(b.delay(500, now), Duration::from_millis(500));
        let p = policy();
        let mut i = inspector(&p, RelayMode::Enforce);
        i.action = Action::CutAfter { remaining: 2 };
        i.inspecting = false;
        let at = day("2023-09-01");
        let f: Vec<Fate> = (0..4)
            .map(|_| i.on_packet(Dir::ToServer, b"x", &p, at, now))
            .collect();
        assert_eq!(
            f,
            [Fate::Forward, Fate::Forward, Fate::Discard, Fate::Discard]
        );
    }
}

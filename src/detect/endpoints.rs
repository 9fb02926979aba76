//! Known-endpoint detector: the flow's server address is in a list of VPN server networks,
//! as blocklists of VPN providers' addresses are used by censors (e.g. the Roskomnadzor
//! registry entries for VPN services). The list is a rules import in the `cidrs` format
//! (one CIDR or address per line, `#` comments), so every bad line is reported with its line
//! number. Decides on the first packet (rule `cidr`). The caller reads the file; this module
//! only parses text.

use std::net::IpAddr;

use crate::rules::{Entry, Import, ImportFormat};
use crate::rules::{IpNet, RulesError};

use super::{Detector, Flow, Incomplete, Outcome, Verdict};

/// A list of VPN server networks (empty by default: nothing matches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    nets: Vec<IpNet>,
}

impl Endpoints {
    /// Parses a `cidrs` list; `shown` names it in errors.
    pub fn parse(shown: &str, text: &str) -> Result<Endpoints, RulesError> {
        let imp = Import::new(
            shown.to_string(),
            ImportFormat::Cidrs,
            text.as_bytes().to_vec(),
        )?;
        let mut nets = Vec::new();
        imp.for_each(|e| {
            if let Entry::Ip { net, .. } = e {
                nets.push(net);
            }
        });
        nets.sort_unstable();
        nets.dedup();
        Ok(Endpoints { nets })
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Number of networks.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

impl Detector for Endpoints {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.packets.is_empty() {
            return Err(Incomplete);
        }
        Ok(self.contains(flow.server.ip()).then_some(Verdict {
            protocol: "endpoints",
            rule: "cidr",
            after: 1,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::every_prefix;
    use crate::detect::{Dir, Packet, Transport};

    #[test]
    fn server_in_list_is_found_on_the_first_packet() {
        let e =
            Endpoints::parse("vpn.lst", "# VPN servers\n127.0.0.0/30\n2001:db8::/32\n").unwrap();
        assert_eq!(e.len(), 2);
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: b"x",
        }];
        every_prefix(&e, Transport::Udp, 1194, &pk, 1, Some("endpoints"));
        let other = Endpoints::parse("vpn.lst", "10.0.0.0/8\n").unwrap();
        every_prefix(&other, Transport::Udp, 1194, &pk, 1, None);
    }

    #[test]
    fn bad_lines_are_all_reported_with_line_numbers() {
        let err = Endpoints::parse("vpn.lst", "1.2.3.0/24\nnot-a-cidr\n10.0.0.0/99\n").unwrap_err();
        assert_eq!(err.len(), 2, "{err}");
        assert_eq!(err.diagnostics[0].line, 2);
    }
}

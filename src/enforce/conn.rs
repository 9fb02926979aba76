//! What a frontend learns of a connection, turned into the policy's [`Conn`] in one place.
//!
//! Every frontend that decides on a connection (the forward proxy's CONNECT tunnels, the
//! transparent listener, the QUIC relay, the in-path engine) notes what it saw in a
//! [`Known`]: the server's protocol and port, the ClientHello's ECH extension and JA4
//! fingerprint ([`Hello`]), the destination address. [`Known::conn`] adds the client group's
//! ISP profile and the local minute, so rules with `ports`, `ech`, `ja4`, `hours` and `isp`
//! conditions see the same connection whichever frontend asks. Pure: no I/O, no allocation.

use std::net::IpAddr;

use crate::policy::{Conn, IspId};
use crate::rules::Port;
use crate::sniff::client_hello::{ClientHello, Ja4, Sni};

/// What a censor reads from a TLS ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The server name, if it names a valid host.
    pub sni: Option<Sni>,
    /// Whether it carries an Encrypted Client Hello extension.
    pub ech: bool,
    /// Its JA4 fingerprint.
    pub ja4: Ja4,
}

impl Hello {
    /// What `h` shows.
    pub fn of(h: &ClientHello<'_>) -> Hello {
        Hello {
            sni: h.server_name(),
            ech: h.ech(),
            ja4: h.ja4(),
        }
    }
}

/// What a frontend learnt of a connection, for rules with conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// The server port (CONNECT's, the original destination's, the Host's, the packet's).
    pub port: Option<Port>,
    /// The ClientHello carries ECH.
    pub ech: bool,
    /// The ClientHello's JA4.
    pub ja4: Option<Ja4>,
    /// The destination address, when known before resolving (`SO_ORIGINAL_DST`, the packet).
    pub dst: Option<IpAddr>,
}

impl Known {
    /// Notes what a ClientHello showed (ECH, JA4).
    pub fn saw(&mut self, hello: &Hello) {
        self.ech = hello.ech;
        self.ja4 = Some(hello.ja4);
    }

    /// The connection as the policy takes it, for a client of ISP profile `isp` at local
    /// minute `local_minute` (`None`: taken from the decision's instant).
    pub fn conn(&self, isp: Option<IspId>, local_minute: Option<u16>) -> Conn<'_> {
        Conn {
            port: self.port,
            ech: self.ech,
            ja4: self.ja4.as_ref().map(Ja4::as_str),
            local_minute,
            isp,
            dst: self.dst,
        }
    }
}

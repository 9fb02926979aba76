//! The enforcement layer: what a connection or flow gets, shared by the forward proxy
//! (`http`), the transparent listener and interception (`tls`), the relays (`relay`), and the
//! in-path engine. It sits above `gateway`, `policy`, `sniff` and `detect`, and imports
//! no frontend.
//!
//! - [`verdict`]: decision -> [`verdict::Verdict`] (pure); [`pipeline`]: name -> name's
//!   addresses -> resolve -> address verdict, written once.
//! - [`conn`]: what a frontend saw of a connection ([`conn::Known`], [`conn::Hello`]) as
//!   the policy's `Conn`, built in one place for every frontend.
//! - [`flow`]: the per-flow context ([`flow::FlowCtx`]), sniffing first bytes, reset, swallow,
//!   splice, the `active_flows` gauge.
//! - [`freeze`]: the `freeze` technique on the server side of a stream.
//! - [`throttle`]: the one token bucket behind every `throttle` (and the DNS rate limit).
//! - [`limited`]: the one stream wrapper both of them are ([`limited::Limited`]).
//! - [`inspect`]: live VPN detection and `[[vpn]]` enforcement on the one
//!   `detect::Classifier`; [`observe`]: the same in observe mode on spliced streams.
//! - [`respond`]: hyper responses (body, blockpage, 502, hop-by-hop stripping);
//!   [`blockpage`]: the 302/451 page.

pub mod blockpage;
pub mod conn;
pub mod flow;
pub mod freeze;
pub mod inspect;
pub mod limited;
pub mod observe;
pub mod pipeline;
pub mod respond;
pub mod throttle;
pub mod verdict;

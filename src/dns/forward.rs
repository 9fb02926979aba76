//! The lean forwarder: cache misses go to the `[dns] upstream` servers as plain DNS messages.
//!
//! No resolver library sits between the frontend and its upstream: the question is copied from
//! the client's packet (lower-cased), sent with a fresh random ID over one of a few long-lived
//! UDP sockets connected to each server, and the answer is matched by ID and question and read
//! once (`hickory-proto`) into an [`Answer`] for the cache. A truncated answer is asked again
//! over TCP. Identical questions in flight at once are **coalesced**: the first asker (the
//! leader) goes upstream, the others wait for its outcome. The in-flight table is bounded by the
//! frontend's pending-query limit ([`super::answer::MAX_PENDING`]).
//!
//! Timeouts and retries: each server is tried in turn (round robin from a rotating start);
//! on one server a query is sent up to [`SENDS_PER_SERVER`] times, the first wait being the
//! server's retransmission timeout (RFC 6298 estimate from measured round trips, between
//! [`MIN_RTO`] and [`ATTEMPT_TIMEOUT`]) and doubling after each send; a server gets at most
//! `2 x ATTEMPT_TIMEOUT` and the whole question [`QUERY_DEADLINE`]. An answer other than
//! NOERROR/NXDOMAIN (SERVFAIL, REFUSED, ...), or a send the OS refuses (no route, a port
//! known unreachable), moves on to the next server at once. Past the deadline
//! the caller answers SERVFAIL. With no upstream configured the servers of `/etc/resolv.conf`
//! are used (port 53).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::cache::{Cache, Entry};
use super::template::Template;
use crate::resolve::{Answer, QUERY_DEADLINE};

/// Longest wait for one send's answer before it is sent again (and the most a server's
/// retransmission timeout grows to).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest retransmission timeout, however fast the server has been.
pub const MIN_RTO: Duration = Duration::from_millis(100);
/// Retransmission timeout of a server not measured yet.
pub const INITIAL_RTO: Duration = Duration::from_millis(400);
/// Sends of one query to one server before the next server is tried.
pub const SENDS_PER_SERVER: u32 = 3;
/// TTL given to a negative answer that carries no SOA.
pub const DEFAULT_NEGATIVE_TTL: u32 = 30;
/// UDP payload size the forwarder advertises upstream (the DNS Flag Day 2020 value).
const UPSTREAM_PAYLOAD: u16 = 1232;

/// Why the upstream gave no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No server answered within [`QUERY_DEADLINE`].
    #[error("no upstream answer within {0:?}")]
    Timeout(Duration),
    /// The servers answered, but with this error rcode.
    #[error("upstream answered {0}")]
    Rcode(ResponseCode),
    /// The answer could not be read, or nothing could be sent.
    #[error("upstream failed: {0}")]
    Failed(String),
    /// The query this one was coalesced with went away without an outcome.
    #[error("the coalesced upstream query was abandoned")]
    Abandoned,
}

type Outcome = Result<Arc<Entry>, UpstreamError>;

/// One upstream server, its sockets and its round-trip estimate.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    socks: Vec<Arc<UdpSocket>>,
    next_sock: AtomicUsize,
    /// Smoothed RTT and its variation, microseconds (0 = not measured yet).
    srtt_us: AtomicU32,
    rttvar_us: AtomicU32,
}

impl Server {
    fn rto(&self) -> Duration {
        let srtt = self.srtt_us.load(Ordering::Relaxed);
        if srtt == 0 {
            return INITIAL_RTO;
        }
        let var = self.rttvar_us.load(Ordering::Relaxed);
        let rto = Duration::from_micros(u64::from(srtt) + 4 * u64::from(var));
        rto.clamp(MIN_RTO, ATTEMPT_TIMEOUT)
    }

    /// RFC 6298 update (racy by design: a lost update only blurs the estimate).
    fn observe(&self, rtt: Duration) {
        let r = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        let srtt = self.srtt_us.load(Ordering::Relaxed);
        if srtt == 0 {
            self.srtt_us.store(r.max(1), Ordering::Relaxed);
            self.rttvar_us.store(r / 2, Ordering::Relaxed);
            return;
        }
        let var = self.rttvar_us.load(Ordering::Relaxed);
        let diff = srtt.abs_diff(r);
        self.rttvar_us
            .store(var - var / 4 + diff / 4, Ordering::Relaxed);
        self.srtt_us
            .store((srtt - srtt / 8 + r / 8).max(1), Ordering::Relaxed);
    }

    fn sock(&self) -> &UdpSocket {
        let i = self.next_sock.fetch_add(1, Ordering::Relaxed) % self.socks.len();
        &self.socks[i]
    }
}

/// A query waiting for its answer: who to hand the bytes to, and what it asked.
#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Vec<u8>>,
    question: Arc<[u8]>,
}

/// The coalescing key: lower-case name and type.
type QKey = (Box<str>, RecordType);

/// The forwarder: servers, the IDs in flight, and the questions in flight.
#[derive(Debug)]
pub struct Forwarder {
    servers: Vec<Server>,
    next_server: AtomicUsize,
    /// Sent queries by ID (all sockets share the ID space).
    waiting: Arc<Mutex<HashMap<u16, Waiter>>>,
    /// Questions being asked, with the queries coalesced onto them.
    asking: Mutex<HashMap<QKey, Vec<oneshot::Sender<Outcome>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Forwarder {
    /// A forwarder to `servers` (empty: the nameservers of `/etc/resolv.conf`), with
    /// `per_server` UDP sockets each. Must run inside a tokio runtime (it spawns one receive
    /// task per socket). A socket that cannot be opened is logged and left out.
    pub fn new(servers: &[SocketAddr], per_server: usize) -> Forwarder {
        let addrs = if servers.is_empty() {
            system_servers()
        } else {
            servers.to_vec()
        };
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        let mut tasks = Vec::new();
        let mut list = Vec::new();
        for addr in addrs {
            let mut socks = Vec::new();
            for _ in 0..per_server.max(1) {
                match open(addr) {
                    Ok(s) => {
                        let s = Arc::new(s);
                        tasks.push(tokio::spawn(receive(Arc::clone(&s), Arc::clone(&waiting))));
                        socks.push(s);
                    }
                    Err(e) => {
                        tracing::warn!(upstream = %addr, error = %e, "cannot open an upstream socket")
                    }
                }
            }
            if !socks.is_empty() {
                list.push(Server {
                    addr,
                    socks,
                    next_sock: AtomicUsize::new(0),
                    srtt_us: AtomicU32::new(0),
                    rttvar_us: AtomicU32::new(0),
                });
            }
        }
        if list.is_empty() {
            tracing::warn!("no usable DNS upstream: names not in the cache get SERVFAIL");
        }
        Forwarder {
            servers: list,
            next_server: AtomicUsize::new(0),
            waiting,
            asking: Mutex::new(HashMap::new()),
            tasks,
        }
    }

    /// The servers queried, in order.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    /// The answer for `key` (the lower-case name) / `qtype`, from the upstream, stored in
    /// `cache`; `question` is the question section as sent (lower-case name, type, class) and
    /// `name` the question name. Identical questions in flight share one upstream query:
    /// `coalesced` is true for the queries that waited on another's.
    pub async fn fetch(
        &self,
        cache: &Cache,
        key: &str,
        name: &Name,
        qtype: RecordType,
        question: &[u8],
    ) -> (Outcome, bool) {
        let qkey: QKey = (key.into(), qtype);
        let rx = {
            let mut asking = self.asking.lock().unwrap_or_else(|p| p.into_inner());
            match asking.get_mut(&qkey) {
                Some(followers) => {
                    let (tx, rx) = oneshot::channel();
                    followers.push(tx);
                    Some(rx)
                }
                None => {
                    asking.insert(qkey.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = rx {
            let out = match tokio::time::timeout(QUERY_DEADLINE + MIN_RTO, rx).await {
                Ok(Ok(o)) => o,
                Ok(Err(_)) => Err(UpstreamError::Abandoned),
                Err(_) => Err(UpstreamError::Timeout(QUERY_DEADLINE)),
            };
            return (out, true);
        }
        // The leader: whatever happens (even if this future is dropped), the followers hear.
        let mut lead = Lead {
            fwd: self,
            key: Some(qkey),
        };
        let outcome = match self.ask(question).await {
            Ok(answer) => {
                let template = Template::build(name, qtype, &answer);
                let entry = Arc::new(Entry::new(answer, template, Instant::now()));
                cache.insert(key, qtype, Arc::clone(&entry));
                Ok(entry)
            }
            Err(e) => Err(e),
        };
        lead.finish(&outcome);
        (outcome, false)
    }

    /// Asks the servers in turn until one answers NOERROR or NXDOMAIN, or time is up.
    async fn ask(&self, question: &[u8]) -> Result<Answer, UpstreamError> {
        if self.servers.is_empty() {
            return Err(UpstreamError::Failed("no upstream server".into()));
        }
        let started = Instant::now();
        let deadline = started + QUERY_DEADLINE;
        let question: Arc<[u8]> = question.into();
        let first = self.next_server.fetch_add(1, Ordering::Relaxed);
        let mut last = UpstreamError::Timeout(QUERY_DEADLINE);
        for i in 0..self.servers.len() {
            let server = &self.servers[(first + i) % self.servers.len()];
            let budget_end = deadline.min(Instant::now() + 2 * ATTEMPT_TIMEOUT);
            match self.ask_one(server, &question, budget_end).await {
                Ok(a) => return Ok(a),
                Err(e) => {
                    tracing::debug!(upstream = %server.addr, error = %e, "upstream attempt failed");
                    last = e;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(last)
    }

    async fn ask_one(
        &self,
        server: &Server,
        question: &Arc<[u8]>,
        until: Instant,
    ) -> Result<Answer, UpstreamError> {
        let (id, mut rx) = self.register(question);
        let _gone = Unregister {
            waiting: &self.waiting,
            id,
        };
        let query = encode_query(id, question);
        let mut wait = server.rto();
        let sent_first = Instant::now();
        let mut bytes = None;
        for send in 0..SENDS_PER_SERVER {
            let now = Instant::now();
            if now >= until {
                break;
            }
            if let Err(e) = server.sock().send(&query).await {
                // No route, or the server refused an earlier datagram: no point waiting.
                return Err(UpstreamError::Failed(format!("cannot send: {e}")));
            }
            let this_wait = if send + 1 == SENDS_PER_SERVER {
                until - now
            } else {
                wait.min(until - now)
            };
            match tokio::time::timeout(this_wait, &mut rx).await {
                Ok(Ok(b)) => {
                    if send == 0 {
                        // Karn: only an answer to a single send measures the round trip.
                        server.observe(sent_first.elapsed());
                    }
                    bytes = Some(b);
                    break;
                }
                Ok(Err(_)) => return Err(UpstreamError::Failed("receiver closed".into())),
                Err(_) => wait = (wait * 2).min(ATTEMPT_TIMEOUT),
            }
        }
        let Some(mut bytes) = bytes else {
            return Err(UpstreamError::Timeout(QUERY_DEADLINE));
        };
        if bytes[2] & 0x02 != 0 {
            bytes = tcp_query(server.addr, &query, until).await?;
            if !answers(&bytes, id, question) {
                return Err(UpstreamError::Failed(
                    "TCP answer does not match the query".into(),
                ));
            }
        }
        read_answer(&bytes)
    }

    /// A fresh random ID for `question` and the channel its answer arrives on.
    fn register(&self, question: &Arc<[u8]>) -> (u16, oneshot::Receiver<Vec<u8>>) {
        let (tx, rx) = oneshot::channel();
        let mut map = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let mut id = random_id();
        while map.contains_key(&id) {
            id = id.wrapping_add(0x9e37);
        }
        map.insert(
            id,
            Waiter {
                tx,
                question: Arc::clone(question),
            },
        );
        (id, rx)
    }

    /// Questions in flight right now (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.asking.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// The leader's duty: remove its question from the table and tell every follower the outcome
/// (or, if dropped before finishing, that it was abandoned).
struct Lead<'a> {
    fwd: &'a Forwarder,
    key: Option<QKey>,
}

impl Lead<'_> {
    fn finish(&mut self, outcome: &Outcome) {
        let Some(key) = self.key.take() else { return };
        let followers = self
            .fwd
            .asking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .unwrap_or_default();
        for f in followers {
            let _ = f.send(outcome.clone());
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.finish(&Err(UpstreamError::Abandoned));
    }
}

/// Removes a query's ID from the table when its attempts on one server end.
struct Unregister<'a> {
    waiting: &'a Mutex<HashMap<u16, Waiter>>,
    id: u16,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Reads answers from one upstream socket and hands each to the query with its ID.
async fn receive(sock: Arc<UdpSocket>, waiting: Arc<Mutex<HashMap<u16, Waiter>>>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // e.g. ECONNREFUSED from an ICMP port unreachable: the query times out.
                tracing::debug!(error = %e, "upstream receive error");
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
        };
        let msg = &buf[..n];
        if n < 12 {
            continue;
        }
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        let mut map = waiting.lock().unwrap_or_else(|p| p.into_inner());
        let matches = map.get(&id).is_some_and(|w| answers(msg, id, &w.question));
        if matches {
            if let Some(w) = map.remove(&id) {
                drop(map);
                let _ = w.tx.send(msg.to_vec());
            }
        } else {
            tracing::debug!(id, len = n, "unexpected upstream message ignored");
        }
    }
}

/// Whether `msg` is a response with `id` to exactly `question` (name compared without case).
fn answers(msg: &[u8], id: u16, question: &[u8]) -> bool {
    msg.len() >= 12 + question.len()
        && u16::from_be_bytes([msg[0], msg[1]]) == id
        && msg[2] & 0x80 != 0
        && msg[4..6] == [0, 1]
        && msg[12..12 + question.len()].eq_ignore_ascii_case(question)
}

/// Reads an upstream response into an [`Answer`] (NOERROR or NXDOMAIN), or the error rcode.
fn read_answer(bytes: &[u8]) -> Result<Answer, UpstreamError> {
    let msg = Message::from_vec(bytes)
        .map_err(|e| UpstreamError::Failed(format!("undecodable answer: {e}")))?;
    let rcode = msg.response_code();
    if !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
        return Err(UpstreamError::Rcode(rcode));
    }
    let mut msg = msg;
    let records: Vec<Record> = msg
        .take_answers()
        .into_iter()
        .filter(|r| r.record_type() != RecordType::OPT)
        .collect();
    let authority: Vec<Record> = if records.is_empty() {
        msg.take_name_servers()
            .into_iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .collect()
    } else {
        Vec::new()
    };
    let ttl = if let Some(min) = records.iter().map(Record::ttl).min() {
        min
    } else if let Some(soa) = authority.first() {
        match soa.data() {
            RData::SOA(s) => soa.ttl().min(s.minimum()),
            _ => DEFAULT_NEGATIVE_TTL,
        }
    } else {
        DEFAULT_NEGATIVE_TTL
    };
    Ok(Answer {
        rcode,
        records,
        authority,
        ttl,
    })
}

/// The question section of a query packet (`query[12..]` up to and with type and class), its
/// name lower-cased; `None` if the packet does not carry one plain question.
pub fn question_of(query: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 12;
    loop {
        let len = usize::from(*query.get(pos)?);
        match len {
            0 => break,
            l if l < 64 => pos += 1 + l,
            _ => return None, // a pointer or a reserved label type: not a plain question
        }
    }
    let end = pos + 1 + 4;
    let q = query.get(12..end)?;
    let mut out = q.to_vec();
    // Length bytes are below 64, so lower-casing the whole name only touches letters.
    out[..q.len() - 4].make_ascii_lowercase();
    Some(out)
}

/// A query with `id`, RD set, `question`, and an OPT record advertising our payload size.
fn encode_query(id: u16, question: &[u8]) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + question.len() + 11);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    q.extend_from_slice(question);
    q.push(0); // root
    q.extend_from_slice(&41u16.to_be_bytes()); // OPT
    q.extend_from_slice(&UPSTREAM_PAYLOAD.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    q
}

/// One query over TCP (after a truncated UDP answer), within `until`.
async fn tcp_query(
    addr: SocketAddr,
    query: &[u8],
    until: Instant,
) -> Result<Vec<u8>, UpstreamError> {
    let left = until.saturating_duration_since(Instant::now());
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut frame = Vec::with_capacity(query.len() + 2);
        frame.extend_from_slice(&(query.len() as u16).to_be_bytes());
        frame.extend_from_slice(query);
        s.write_all(&frame).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(left, io).await {
        Ok(Ok(b)) if b.len() >= 12 => Ok(b),
        Ok(Ok(_)) => Err(UpstreamError::Failed("short TCP answer".into())),
        Ok(Err(e)) => Err(UpstreamError::Failed(format!("over TCP: {e}"))),
        Err(_) => Err(UpstreamError::Timeout(QUERY_DEADLINE)),
    }
}

/// A UDP socket on an ephemeral port, connected to `server` (so only it can answer).
fn open(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match server.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(local)?;
    s.connect(server)?;
    s.set_nonblocking(true)?;
    let s2 = socket2::SockRef::from(&s);
    let _ = s2.set_recv_buffer_size(1 << 20);
    UdpSocket::from_std(s)
}

/// The nameservers of `/etc/resolv.conf` (port 53), or none.
fn system_servers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let found = parse_resolv_conf(&text);
    if found.is_empty() {
        tracing::warn!("no nameserver in /etc/resolv.conf; upstream lookups will fail");
    }
    found
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            // A link-local IPv6 address may carry a zone (`fe80::1%eth0`): not supported here.
            let ip: IpAddr = w.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// A random query ID (from the std hasher's per-process random keys and a counter).
fn random_id() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STATE: RandomState = RandomState::new();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    STATE.with(|s| s.hash_one(n) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::rdata::{A, SOA};

    fn client_query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(5).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    #[test]
    fn question_is_copied_lower_case_and_queries_carry_opt() {
        let q = question_of(&client_query("WwW.Example.ORG.", RecordType::AAAA)).unwrap();
        assert_eq!(&q[..], b"\x03www\x07example\x03org\x00\x00\x1c\x00\x01");
        let wire = encode_query(0x1234, &q);
        let m = Message::from_vec(&wire).unwrap();
        assert_eq!(m.id(), 0x1234);
        assert!(m.recursion_desired());
        assert_eq!(m.queries()[0].name().to_ascii(), "www.example.org.");
        assert_eq!(m.extensions().as_ref().map(|e| e.max_payload()), Some(1232));
        assert_eq!(question_of(&[0; 12]), None, "no question at all");
        assert_eq!(question_of(&[0; 5]), None);
    }

    fn response(id: u16, rcode: ResponseCode, with_a: bool, soa: bool) -> Vec<u8> {
        let name = Name::from_ascii("a.test.").unwrap();
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Response)
            .set_response_code(rcode);
        m.add_query(Query::query(name.clone(), RecordType::A));
        if with_a {
            m.add_answer(Record::from_rdata(
                name.clone(),
                120,
                RData::A(A::new(192, 0, 2, 1)),
            ));
            m.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(A::new(192, 0, 2, 2)),
            ));
        }
        if soa {
            let soa = SOA::new(name.clone(), name.clone(), 1, 2, 3, 4, 45);
            m.add_name_server(Record::from_rdata(name, 900, RData::SOA(soa)));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_are_matched_by_id_and_question() {
        let q = question_of(&client_query("A.test.", RecordType::A)).unwrap();
        let r = response(9, ResponseCode::NoError, true, false);
        assert!(answers(&r, 9, &q));
        assert!(!answers(&r, 10, &q), "another ID");
        let other = question_of(&client_query("b.test.", RecordType::A)).unwrap();
        assert!(!answers(&r, 9, &other), "another question");
        let mut not_resp = r.clone();
        not_resp[2] &= 0x7f;
        assert!(!answers(&not_resp, 9, &q), "a query, not an answer");
    }

    #[test]
    fn answers_give_ttls_and_negative_ttls() {
        let a = read_answer(&response(1, ResponseCode::NoError, true, false)).unwrap();
        assert_eq!((a.records.len(), a.ttl), (2, 60));
        let nx = read_answer(&response(1, ResponseCode::NXDomain, false, true)).unwrap();
        assert_eq!(
            (nx.rcode, nx.authority.len(), nx.ttl),
            (ResponseCode::NXDomain, 1, 45)
        );
        let bare = read_answer(&response(1, ResponseCode::NXDomain, false, false)).unwrap();
        assert_eq!(bare.ttl, DEFAULT_NEGATIVE_TTL);
        assert!(matches!(
            read_answer(&response(1, ResponseCode::ServFail, false, false)),
            Err(UpstreamError::Rcode(ResponseCode::ServFail))
        ));
        assert!(read_answer(&[0xff; 20]).is_err());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch lab\nnameserver 10.0.0.1\nnameserver ::1\nnameserver fe80::1%eth0\noptions ndots:1\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn rto_follows_measured_round_trips_within_bounds() {
        let s = Server {
            addr: "127.0.0.1:53".parse().unwrap(),
            socks: Vec::new(),
            next_sock: AtomicUsize::new(0),
            srtt_us: AtomicU32::new(0),
            rttvar_us: AtomicU32::new(0),
        };
        assert_eq!(s.rto(), INITIAL_RTO);
        for _ in 0..50 {
            s.observe(Duration::from_micros(200));
        }
        assert_eq!(s.rto(), MIN_RTO, "a fast server: the floor");
        for _ in 0..50 {
            s.observe(Duration::from_secs(3));
        }
        assert_eq!(s.rto(), ATTEMPT_TIMEOUT, "a slow one: the ceiling");
    }
}

//! Streaming output: each flow table's finished flows become `flows.jsonl` lines as they
//! finish, and the report's counters ([`Tally`]) are added up at the same moment, so no flow
//! is kept once it has ended.
//!
//! Every flow table (one per file, or one per flow shard of a file) writes to its own spill
//! file in the output directory. Its flows leave the table in epochs of
//! [`EPOCH_FRAMES`] frames of the file (the reader's frame count, the same whatever the number
//! of shards): at each epoch's end the flows that ended during it are sorted by first packet
//! time, transport, client and server, and appended. [`assemble`] then writes `flows.jsonl`:
//! files in the order given, each file's spills merged by (epoch, first packet, transport,
//! client, server). That order depends only on the capture, never on `--threads`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::flows::FlowRecord;
use super::report::{Labels, OrderKey, Tally, NONE, ORDER_LEN};

/// Frames of a file per epoch: flows that ended are written (and expired ones found) once
/// per epoch, not per packet.
pub const EPOCH_FRAMES: u64 = 65_536;

/// A spill stays in memory up to this many bytes, then goes to its file (most captures'
/// flows never touch the disk).
pub const SPILL_AT: usize = 4 << 20;

/// A finished spill: its entries in a file (if it grew past [`SPILL_AT`]), else in memory.
#[derive(Debug)]
pub struct Spilled {
    /// The file holding the entries.
    pub file: Option<PathBuf>,
    /// The entries held in memory.
    pub mem: Vec<u8>,
}

/// One flow table's output: its spill file and its counters.
#[derive(Debug)]
pub struct Spill<'a> {
    path: PathBuf,
    w: Option<BufWriter<File>>,
    buf: Vec<u8>,
    spill_at: usize,
    file_index: u32,
    /// The capture's name, already a JSON string with quotes.
    file_json: String,
    file: &'a str,
    labels: Option<&'a Labels>,
    /// Detector indices in name order (the `detectors` object is sorted by name).
    by_name: Vec<usize>,
    epoch: u32,
    line: Vec<u8>,
    order: Vec<(OrderKey, usize)>,
    /// The counters of the flows written.
    pub tally: Tally,
    /// The first write error; nothing more is written after one.
    pub error: Option<std::io::Error>,
}

impl<'a> Spill<'a> {
    /// A spill for the flows of `file` (the `file_index`-th capture), moved to a file at
    /// `path` once it holds more than `spill_at` bytes ([`SPILL_AT`]).
    pub fn create(
        path: PathBuf,
        file_index: u32,
        file: &'a str,
        labels: Option<&'a Labels>,
        detectors: &[&'static str],
        spill_at: usize,
    ) -> std::io::Result<Spill<'a>> {
        let mut file_json = String::new();
        json_str(&mut file_json, file);
        let mut by_name: Vec<usize> = (0..detectors.len()).collect();
        by_name.sort_by_key(|&i| detectors[i]);
        Ok(Spill {
            path,
            w: None,
            buf: Vec::new(),
            spill_at,
            file_index,
            file_json,
            file,
            labels,
            by_name,
            epoch: 0,
            line: Vec::with_capacity(512),
            order: Vec::new(),
            tally: Tally::new(detectors),
            error: None,
        })
    }

    /// Ends an epoch: writes and counts the flows in `done` (emptied) in their order.
    pub fn epoch(&mut self, done: &mut Vec<FlowRecord>) {
        self.order.clear();
        self.order.extend(
            done.iter()
                .enumerate()
                .map(|(i, r)| (order_key(self.file_index, self.epoch, r), i)),
        );
        self.order.sort_unstable();
        let order = std::mem::take(&mut self.order);
        for &(key, i) in &order {
            let rec = &done[i];
            let label = self.labels.map_or(NONE, |l| l.label(self.file, rec.server));
            self.tally.add(&key, self.file, rec, label);
            if self.error.is_some() {
                continue;
            }
            self.line.clear();
            write_line(
                &mut self.line,
                &self.file_json,
                rec,
                self.labels.map(|_| label),
                &self.by_name,
            );
            self.buf.extend_from_slice(&key);
            self.buf
                .extend_from_slice(&(self.line.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&self.line);
            if self.buf.len() >= self.spill_at {
                if let Err(e) = self.write_out() {
                    self.error = Some(e);
                }
            }
        }
        self.order = order;
        done.clear();
        self.epoch += 1;
    }

    /// Moves the buffered entries to the spill file (created on first use).
    fn write_out(&mut self) -> std::io::Result<()> {
        let w = match &mut self.w {
            Some(w) => w,
            None => self
                .w
                .insert(BufWriter::with_capacity(1 << 16, File::create(&self.path)?)),
        };
        w.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Ends the spill: its entries and counters, or the first write error (the spill file,
    /// if any, removed).
    pub fn finish(mut self) -> Result<(Spilled, Tally), (PathBuf, std::io::Error)> {
        let res = match self.error.take() {
            Some(e) => Err(e),
            None if self.w.is_some() => self
                .write_out()
                .and_then(|()| self.w.as_mut().map_or(Ok(()), BufWriter::flush)),
            None => Ok(()),
        };
        match res {
            Ok(()) if self.w.is_some() => Ok((
                Spilled {
                    file: Some(self.path),
                    mem: Vec::new(),
                },
                self.tally,
            )),
            Ok(()) => Ok((
                Spilled {
                    file: None,
                    mem: self.buf,
                },
                self.tally,
            )),
            Err(e) => {
                if self.w.is_some() {
                    let _ = std::fs::remove_file(&self.path);
                }
                Err((self.path, e))
            }
        }
    }
}

/// The place of `rec` in the output: file index, epoch, first packet time, transport,
/// client, server, big-endian so that bytes compare like the values.
pub fn order_key(file_index: u32, epoch: u32, rec: &FlowRecord) -> OrderKey {
    let mut k = [0u8; ORDER_LEN];
    k[..4].copy_from_slice(&file_index.to_be_bytes());
    k[4..8].copy_from_slice(&epoch.to_be_bytes());
    k[8..16].copy_from_slice(&rec.first_ns.to_be_bytes());
    k[16] = match rec.transport {
        crate::detect::Transport::Udp => 0,
        crate::detect::Transport::Tcp => 1,
    };
    addr_bytes(&mut k[17..36], rec.client);
    addr_bytes(&mut k[36..55], rec.server);
    k
}

/// 19 bytes: family (4 or 6), address (IPv4 zero-padded to 16), port.
fn addr_bytes(out: &mut [u8], a: SocketAddr) {
    match a {
        SocketAddr::V4(v) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&v.ip().octets());
        }
        SocketAddr::V6(v) => {
            out[0] = 6;
            out[1..17].copy_from_slice(&v.ip().octets());
        }
    }
    out[17..19].copy_from_slice(&a.port().to_be_bytes());
}

/// Appends `s` as a JSON string (quoted, escaped).
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_bytes(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let mut q = String::new();
        json_str(&mut q, s);
        out.extend_from_slice(q.as_bytes());
    }
}

fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_bytes(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn num(out: &mut Vec<u8>, mut n: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
}

fn opt_num(out: &mut Vec<u8>, n: Option<usize>) {
    match n {
        Some(n) => num(out, n as u64),
        None => out.extend_from_slice(b"null"),
    }
}

fn addr(out: &mut Vec<u8>, a: SocketAddr) {
    out.push(b'"');
    match a {
        SocketAddr::V4(v) => {
            for (i, o) in v.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                num(out, u64::from(*o));
            }
        }
        SocketAddr::V6(v) => {
            let _ = write!(out, "[{}", v.ip());
            if v.scope_id() != 0 {
                let _ = write!(out, "%{}", v.scope_id());
            }
            out.push(b']');
        }
    }
    out.push(b':');
    num(out, u64::from(a.port()));
    out.push(b'"');
}

/// One `flows.jsonl` line (with its newline) for `rec`: `file_json` is the file name as a
/// JSON string, `label` is given only with `--labels`, `by_name` orders the `detectors`
/// object. The same fields and order as before the streaming writer (see README).
pub fn write_line(
    out: &mut Vec<u8>,
    file_json: &str,
    rec: &FlowRecord,
    label: Option<&str>,
    by_name: &[usize],
) {
    let v = rec.verdict();
    out.extend_from_slice(b"{\"file\":");
    out.extend_from_slice(file_json.as_bytes());
    out.extend_from_slice(b",\"proto\":\"");
    out.extend_from_slice(rec.transport.as_str().as_bytes());
    out.extend_from_slice(b"\",\"client\":");
    addr(out, rec.client);
    out.extend_from_slice(b",\"server\":");
    addr(out, rec.server);
    out.extend_from_slice(b",\"packets\":");
    num(out, rec.packets);
    out.extend_from_slice(b",\"verdict\":");
    opt_str(out, v.map(|(_, v)| v.protocol));
    out.extend_from_slice(b",\"detector\":");
    opt_str(out, v.map(|(n, _)| n));
    out.extend_from_slice(b",\"rule\":");
    opt_str(out, v.map(|(_, v)| v.rule));
    out.extend_from_slice(b",\"decided_after\":");
    opt_num(out, v.map(|(_, v)| v.after));
    out.extend_from_slice(b",\"ja4\":");
    opt_str(out, rec.ja4.as_deref());
    if let Some(l) = label {
        out.extend_from_slice(b",\"label\":");
        json_bytes(out, l);
    }
    out.extend_from_slice(b",\"detectors\":{");
    for (k, &i) in by_name.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        if let Some((n, o)) = rec.outcomes.get(i) {
            json_bytes(out, n);
            out.push(b':');
            opt_num(out, o.map(|v| v.after));
        }
    }
    out.extend_from_slice(b"}}\n");
}

/// One spill being merged: its next entry.
struct Head {
    r: Box<dyn Read>,
    key: OrderKey,
    line: Vec<u8>,
    live: bool,
}

impl Head {
    fn open(s: Spilled) -> std::io::Result<Head> {
        let r: Box<dyn Read> = match s.file {
            Some(p) => Box::new(BufReader::with_capacity(1 << 16, File::open(p)?)),
            None => Box::new(std::io::Cursor::new(s.mem)),
        };
        let mut h = Head {
            r,
            key: [0; ORDER_LEN],
            line: Vec::new(),
            live: true,
        };
        h.advance()?;
        Ok(h)
    }

    fn advance(&mut self) -> std::io::Result<()> {
        match self.r.read_exact(&mut self.key) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.live = false;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len)?;
        self.line.resize(u32::from_le_bytes(len) as usize, 0);
        self.r.read_exact(&mut self.line)
    }
}

/// Writes the lines of `spills` (one file's, or several files' in order) to `out`, merged
/// by their order keys, and removes the spill files.
pub fn assemble(spills: Vec<Spilled>, out: &mut impl Write) -> std::io::Result<()> {
    let files: Vec<PathBuf> = spills.iter().filter_map(|s| s.file.clone()).collect();
    let res = merge(spills, out);
    for p in files {
        let _ = std::fs::remove_file(p);
    }
    res
}

fn merge(spills: Vec<Spilled>, out: &mut impl Write) -> std::io::Result<()> {
    if let [Spilled { file: None, mem }] = &spills[..] {
        // One table's entries in memory (the usual case): already in order.
        let mut at = 0;
        while at + ORDER_LEN + 4 <= mem.len() {
            let len = u32::from_le_bytes(
                mem[at + ORDER_LEN..at + ORDER_LEN + 4]
                    .try_into()
                    .unwrap_or_default(),
            ) as usize;
            let start = at + ORDER_LEN + 4;
            let line = mem.get(start..start + len).unwrap_or_default();
            out.write_all(line)?;
            at = start + len;
        }
        return Ok(());
    }
    let mut heads = spills
        .into_iter()
        .map(Head::open)
        .collect::<std::io::Result<Vec<_>>>()?;
    while let Some(h) = heads
        .iter_mut()
        .filter(|h| h.live)
        .min_by(|a, b| a.key.cmp(&b.key))
    {
        out.write_all(&h.line)?;
        h.advance()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Transport, Verdict};

    #[test]
    fn lines_are_valid_json_with_the_documented_fields() {
        let rec = FlowRecord {
            transport: Transport::Tcp,
            client: "[2001:db8::1]:40000".parse().unwrap(),
            server: "10.3.0.222:1194".parse().unwrap(),
            packets: 549,
            first_ns: 7,
            outcomes: vec![
                ("wireguard", None),
                (
                    "openvpn",
                    Some(Verdict {
                        protocol: "openvpn",
                        rule: "handshake",
                        after: 2,
                    }),
                ),
            ],
            ja4: Some("t13d".into()),
        };
        let mut file = String::new();
        json_str(&mut file, "we\"ird\n.pcap");
        let mut line = Vec::new();
        write_line(&mut line, &file, &rec, Some("open\\vpn"), &[1, 0]);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["file"], "we\"ird\n.pcap");
        assert_eq!(v["client"], "[2001:db8::1]:40000");
        assert_eq!(v["server"], "10.3.0.222:1194");
        assert_eq!(v["packets"], 549);
        assert_eq!(
            (
                &v["verdict"],
                &v["detector"],
                &v["rule"],
                &v["decided_after"]
            ),
            (
                &"openvpn".into(),
                &"openvpn".into(),
                &"handshake".into(),
                &2.into()
            )
        );
        assert_eq!(v["label"], "open\\vpn");
        assert_eq!(v["ja4"], "t13d");
        assert_eq!(v["detectors"]["wireguard"], serde_json::Value::Null);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.contains(r#""detectors":{"openvpn":2,"wireguard":null}}"#),
            "{text}"
        );
    }

    #[test]
    fn order_keys_compare_like_the_values() {
        let mk = |first_ns, client: &str| FlowRecord {
            transport: Transport::Udp,
            client: client.parse().unwrap(),
            server: "10.0.0.1:53".parse().unwrap(),
            packets: 1,
            first_ns,
            outcomes: vec![],
            ja4: None,
        };
        let a = order_key(0, 0, &mk(300, "10.0.0.9:9"));
        let b = order_key(0, 0, &mk(1 << 40, "10.0.0.2:2"));
        let c = order_key(0, 1, &mk(5, "10.0.0.2:2"));
        let d = order_key(1, 0, &mk(5, "10.0.0.2:2"));
        let e = order_key(0, 0, &mk(300, "10.0.0.9:10"));
        assert!(a < e && e < b && b < c && c < d);
    }
}

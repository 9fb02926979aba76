//! Running the flow table over many captures on every core, streaming each file.
//!
//! Files are taken by worker threads in turn; when there are fewer files than threads, a
//! file's packets are dealt to flow shards (by a symmetric hash of the 5-tuple, so both
//! directions of a flow land in the same shard), each its own thread and [`FlowTable`].
//! Results come back in the order the files were given and, within a file, flows in order of
//! their first packet (ties broken by transport and addresses), so the output does not depend
//! on the number of threads. A file that cannot be opened or is not a capture is reported
//! and skipped; a truncated one keeps its flows up to the damage.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::flows::{FlowRecord, FlowTable};
use super::pcap::{self, Stream};
use crate::detect::Detector;

/// What one file produced.
#[derive(Debug)]
pub struct FileResult {
    /// File name (without directories).
    pub name: String,
    /// Its flows, or `None` if the file was skipped.
    pub recs: Option<Vec<FlowRecord>>,
    /// Frames read.
    pub packets: u64,
    /// Detector time (ns), in detector order.
    pub cost_ns: Vec<u64>,
    /// Timed detector calls, in detector order.
    pub calls: Vec<u64>,
    /// Why the file was skipped or cut short.
    pub warning: Option<String>,
}

/// Frames handed to a shard at a time.
const BATCH: usize = 512;

/// Raw frames for a shard: bytes back to back, with (timestamp, link, length).
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: Vec<(u64, u16, u32)>,
}

/// Processes `paths` with `threads` threads; `progress` gets a line per file.
pub fn run_files(
    paths: &[PathBuf],
    detectors: &[Box<dyn Detector>],
    udp_timeout: u64,
    threads: usize,
    progress: &mut dyn FnMut(&str),
) -> Vec<FileResult> {
    let workers = threads.min(paths.len()).max(1);
    let shards = if paths.len() >= threads {
        1
    } else {
        (threads / paths.len().max(1)).max(1)
    };
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, FileResult, String)>();
    let mut slots: Vec<Option<FileResult>> = (0..paths.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let started = std::time::Instant::now();
                let r = run_file(path, detectors, udp_timeout, shards);
                let line = match &r.recs {
                    Some(recs) => format!(
                        "{}: {} packets, {} flows, {:.0} packets/s",
                        r.name,
                        r.packets,
                        recs.len(),
                        r.packets as f64 / started.elapsed().as_secs_f64().max(1e-9)
                    ),
                    None => format!("{}: skipped", r.name),
                };
                if tx.send((i, r, line)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, r, line) in rx {
            progress(&line);
            slots[i] = Some(r);
        }
    });
    slots.into_iter().flatten().collect()
}

/// The shard of a decoded packet: a hash of its flow key, the same for both directions.
fn shard_of(d: &pcap::Decoded<'_>, shards: usize) -> usize {
    let (a, b) = if d.src <= d.dst {
        (d.src, d.dst)
    } else {
        (d.dst, d.src)
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (d.transport, a, b).hash(&mut h);
    (h.finish() % shards as u64) as usize
}

fn sort(recs: &mut [FlowRecord]) {
    recs.sort_by(|x, y| {
        (x.first_ns, x.transport, x.client, x.server).cmp(&(
            y.first_ns,
            y.transport,
            y.client,
            y.server,
        ))
    });
}

/// Feeds the frames of `stream` to `each` (counted in `packets`) until the end, an error
/// (returned as the file's warning) or `each` says stop (`false`).
fn each_frame<R: std::io::Read>(
    stream: &mut Stream<R>,
    shown: &str,
    packets: &mut u64,
    mut each: impl FnMut(&pcap::Frame<'_>) -> bool,
) -> Option<String> {
    while let Some(frame) = stream.next_frame() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Some(format!("{shown}: {e} (flows up to there are kept)")),
        };
        *packets += 1;
        if !each(&frame) {
            break;
        }
    }
    None
}

/// One file, streamed, with `shards` flow tables.
pub fn run_file(
    path: &std::path::Path,
    detectors: &[Box<dyn Detector>],
    udp_timeout: u64,
    shards: usize,
) -> FileResult {
    let shown = path.display().to_string();
    let name = path
        .file_name()
        .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
    let mut out = FileResult {
        name,
        recs: None,
        packets: 0,
        cost_ns: vec![0; detectors.len()],
        calls: vec![0; detectors.len()],
        warning: None,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            out.warning = Some(format!("{shown}: cannot open: {e} (skipped)"));
            return out;
        }
    };
    let mut stream = match Stream::new(file) {
        Ok(s) => s,
        Err(e) => {
            out.warning = Some(format!("{shown}: {e} (skipped)"));
            return out;
        }
    };
    let timeout_ns = udp_timeout.saturating_mul(1_000_000_000);
    let new_table = || {
        let mut t = FlowTable::new(detectors);
        t.udp_timeout_ns = timeout_ns;
        t
    };
    let mut recs = Vec::new();
    if shards <= 1 {
        let mut table = new_table();
        out.warning = each_frame(&mut stream, &shown, &mut out.packets, |frame| {
            if let Some(d) = pcap::decode(frame.link, frame.data) {
                table.push(frame.ts_ns, &d);
            }
            true
        });
        recs = table.finish_all();
        out.cost_ns.clone_from(&table.cost_ns);
        out.calls.clone_from(&table.calls);
    } else {
        std::thread::scope(|scope| {
            let mut txs = Vec::new();
            let mut handles = Vec::new();
            for _ in 0..shards {
                let (tx, rx) = mpsc::sync_channel::<Batch>(4);
                txs.push(tx);
                handles.push(scope.spawn(move || {
                    let mut table = new_table();
                    for b in rx {
                        let mut at = 0usize;
                        for (ts, link, len) in b.frames {
                            let data = &b.bytes[at..at + len as usize];
                            at += len as usize;
                            if let Some(d) = pcap::decode(link, data) {
                                table.push(ts, &d);
                            }
                        }
                    }
                    let recs = table.finish_all();
                    (recs, table.cost_ns, table.calls)
                }));
            }
            let mut batches: Vec<Batch> = (0..shards).map(|_| Batch::default()).collect();
            out.warning = each_frame(&mut stream, &shown, &mut out.packets, |frame| {
                let Some(d) = pcap::decode(frame.link, frame.data) else {
                    return true;
                };
                let s = shard_of(&d, shards);
                let b = &mut batches[s];
                b.bytes.extend_from_slice(frame.data);
                b.frames
                    .push((frame.ts_ns, frame.link, frame.data.len() as u32));
                b.frames.len() < BATCH || txs[s].send(std::mem::take(b)).is_ok()
            });
            for (tx, b) in txs.iter().zip(batches) {
                let _ = tx.send(b);
            }
            drop(txs);
            for h in handles {
                if let Ok((r, c, k)) = h.join() {
                    recs.extend(r);
                    for (i, (c, k)) in c.iter().zip(&k).enumerate() {
                        out.cost_ns[i] += c;
                        out.calls[i] += k;
                    }
                }
            }
        });
    }
    sort(&mut recs);
    out.recs = Some(recs);
    out
}

//! Running the flow table over many captures on every core, streaming each file.
//!
//! Files are taken by worker threads in turn; when there are fewer files than threads, a
//! file's packets are dealt to flow shards (by a symmetric hash of the 5-tuple, so both
//! directions of a flow land in the same shard), each its own thread and [`FlowTable`].
//! Every table writes its flows as they end to its own [`Spill`], in epochs of
//! [`super::output::EPOCH_FRAMES`] frames counted by the file's reader (so the epochs are the same in every
//! shard); [`super::output::assemble`] merges them into `flows.jsonl` in an order that does
//! not depend on the number of threads. Memory holds the live flows and one epoch's finished
//! ones, never all of a file's flows. A file that cannot be opened or is not a capture is
//! reported and skipped; a truncated one keeps its flows up to the damage.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::flows::FlowTable;
use super::output::{Spill, Spilled};
use super::pcap::{self, Stream};
use super::report::{Labels, Tally};
use crate::detect::Detector;

/// What one file produced.
#[derive(Debug)]
pub struct FileResult {
    /// File name (without directories).
    pub name: String,
    /// Whether the file was read (else skipped).
    pub read: bool,
    /// Its spills (one per flow shard), to be merged.
    pub spills: Vec<Spilled>,
    /// Its flows' counters.
    pub tally: Option<Tally>,
    /// Flows written.
    pub flows: u64,
    /// Frames read.
    pub packets: u64,
    /// Detector time (ns), in detector order.
    pub cost_ns: Vec<u64>,
    /// Timed detector calls, in detector order.
    pub calls: Vec<u64>,
    /// Why the file was skipped or cut short.
    pub warning: Option<String>,
    /// A spill that could not be written.
    pub write_error: Option<(PathBuf, std::io::Error)>,
}

/// What every file's run shares.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// The detectors, in order.
    pub detectors: &'a [Box<dyn Detector>],
    /// Their names, in order.
    pub names: &'a [&'static str],
    /// Ground truth, if given.
    pub labels: Option<&'a Labels>,
    /// UDP idle timeout (s).
    pub udp_timeout: u64,
    /// Where the spill files go.
    pub spill_dir: &'a Path,
    /// Frames per epoch ([`super::output::EPOCH_FRAMES`] but in tests).
    pub epoch_frames: u64,
    /// Bytes a spill holds in memory ([`super::output::SPILL_AT`] but in tests).
    pub spill_at: usize,
}

/// Frames handed to a shard at a time.
const BATCH: usize = 512;

/// A frame entry's link type that marks the end of an epoch (with the time of its last frame).
const EPOCH_MARK: u16 = u16::MAX;

/// Raw frames for a shard: bytes back to back, with (timestamp, link, length).
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: Vec<(u64, u16, u32)>,
}

/// Processes `paths` with `threads` threads; `progress` gets a line per file as it ends,
/// `commit` each file's result in the order of `paths`, as soon as the files before it are
/// done (so only files finished out of turn wait in memory).
pub fn run_files(
    paths: &[PathBuf],
    set: &Settings<'_>,
    threads: usize,
    progress: &mut dyn FnMut(&str),
    commit: &mut dyn FnMut(FileResult),
) {
    let workers = threads.min(paths.len()).max(1);
    let shards = if paths.len() >= threads {
        1
    } else {
        (threads / paths.len().max(1)).max(1)
    };
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, FileResult, String)>();
    let mut slots: Vec<Option<FileResult>> = (0..paths.len()).map(|_| None).collect();
    let mut done = 0;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let started = std::time::Instant::now();
                let r = run_file(path, i as u32, set, shards);
                let line = if r.read {
                    format!(
                        "{}: {} packets, {} flows, {:.0} packets/s",
                        r.name,
                        r.packets,
                        r.flows,
                        r.packets as f64 / started.elapsed().as_secs_f64().max(1e-9)
                    )
                } else {
                    format!("{}: skipped", r.name)
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
            while let Some(r) = slots.get_mut(done).and_then(Option::take) {
                commit(r);
                done += 1;
            }
        }
    });
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

/// Feeds the frames of `stream` to `each` (counted in `packets`) until the end, an error
/// (returned as the file's warning) or `each` says stop (`false`).
fn each_frame<R: std::io::Read>(
    stream: &mut Stream<R>,
    shown: &str,
    packets: &mut u64,
    mut each: impl FnMut(u64, &pcap::Frame<'_>) -> bool,
) -> Option<String> {
    while let Some(frame) = stream.next_frame() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Some(format!("{shown}: {e} (flows up to there are kept)")),
        };
        *packets += 1;
        if !each(*packets, &frame) {
            break;
        }
    }
    None
}

/// What a shard hands back: its spill's outcome, flows, detector cost and calls.
type ShardOut = (
    Result<(Spilled, Tally), (PathBuf, std::io::Error)>,
    u64,
    Vec<u64>,
    Vec<u64>,
);

/// Ends the table's last epoch and its spill.
fn close(mut table: FlowTable<'_>, mut spill: Spill<'_>) -> ShardOut {
    let mut rest = table.finish_all();
    spill.epoch(&mut rest);
    let flows = spill.tally.flows();
    (spill.finish(), flows, table.cost_ns, table.calls)
}

/// One file (the `index`-th), streamed, with `shards` flow tables.
pub fn run_file(path: &Path, index: u32, set: &Settings<'_>, shards: usize) -> FileResult {
    let shown = path.display().to_string();
    let name = path
        .file_name()
        .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
    let n = set.detectors.len();
    let mut out = FileResult {
        name,
        read: false,
        spills: Vec::new(),
        tally: None,
        flows: 0,
        packets: 0,
        cost_ns: vec![0; n],
        calls: vec![0; n],
        warning: None,
        write_error: None,
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
    out.read = true;
    let timeout_ns = set.udp_timeout.saturating_mul(1_000_000_000);
    let new_table = || {
        let mut t = FlowTable::new(set.detectors);
        t.udp_timeout_ns = timeout_ns;
        t
    };
    let name = out.name.clone();
    let spill = |shard: usize| {
        let p = set.spill_dir.join(format!(
            ".flows.{}.{index}.{shard}.spill",
            std::process::id()
        ));
        Spill::create(p.clone(), index, &name, set.labels, set.names, set.spill_at)
            .map_err(|e| (p, e))
    };
    let epoch = set.epoch_frames.max(1);
    let mut results: Vec<ShardOut> = Vec::new();
    if shards <= 1 {
        let mut sp = match spill(0) {
            Ok(s) => s,
            Err(e) => {
                out.write_error = Some(e);
                return out;
            }
        };
        let mut table = new_table();
        out.warning = each_frame(&mut stream, &shown, &mut out.packets, |i, frame| {
            if let Some(d) = pcap::decode(frame.link, frame.data) {
                table.push(frame.ts_ns, &d);
            }
            if i % epoch == 0 {
                table.expire(frame.ts_ns);
                sp.epoch(table.take_finished());
            }
            true
        });
        results.push(close(table, sp));
    } else {
        let mut spills = Vec::new();
        for s in 0..shards {
            match spill(s) {
                Ok(sp) => spills.push(sp),
                Err(e) => {
                    out.write_error = Some(e);
                    return out;
                }
            }
        }
        std::thread::scope(|scope| {
            let mut txs = Vec::new();
            let mut handles = Vec::new();
            for mut sp in spills {
                let (tx, rx) = mpsc::sync_channel::<Batch>(4);
                txs.push(tx);
                handles.push(scope.spawn(move || {
                    let mut table = new_table();
                    for b in rx {
                        let mut at = 0usize;
                        for (ts, link, len) in b.frames {
                            if link == EPOCH_MARK {
                                table.expire(ts);
                                sp.epoch(table.take_finished());
                                continue;
                            }
                            let data = &b.bytes[at..at + len as usize];
                            at += len as usize;
                            if let Some(d) = pcap::decode(link, data) {
                                table.push(ts, &d);
                            }
                        }
                    }
                    close(table, sp)
                }));
            }
            let mut batches: Vec<Batch> = (0..shards).map(|_| Batch::default()).collect();
            out.warning = each_frame(&mut stream, &shown, &mut out.packets, |i, frame| {
                if let Some(d) = pcap::decode(frame.link, frame.data) {
                    let b = &mut batches[shard_of(&d, shards)];
                    b.bytes.extend_from_slice(frame.data);
                    b.frames
                        .push((frame.ts_ns, frame.link, frame.data.len() as u32));
                }
                if i % epoch == 0 {
                    for b in &mut batches {
                        b.frames.push((frame.ts_ns, EPOCH_MARK, 0));
                    }
                }
                for (b, tx) in batches.iter_mut().zip(&txs) {
                    if b.frames.len() >= BATCH && tx.send(std::mem::take(b)).is_err() {
                        return false;
                    }
                }
                true
            });
            for (tx, b) in txs.iter().zip(batches) {
                let _ = tx.send(b);
            }
            drop(txs);
            for h in handles {
                if let Ok(r) = h.join() {
                    results.push(r);
                }
            }
        });
    }
    let mut tally: Option<Tally> = None;
    for (spilled, flows, c, k) in results {
        match spilled {
            Ok((p, t)) => {
                out.spills.push(p);
                match &mut tally {
                    Some(all) => all.merge(t),
                    None => tally = Some(t),
                }
            }
            Err(e) => {
                out.write_error.get_or_insert(e);
            }
        }
        out.flows += flows;
        for (i, (c, k)) in c.iter().zip(&k).enumerate() {
            out.cost_ns[i] += c;
            out.calls[i] += k;
        }
    }
    out.tally = tally;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect;
    use crate::experiment::pcap::write;

    /// A capture of `n` UDP flows of 3 packets each, interleaved so that flows end in many
    /// epochs (some by the idle timeout, some at the end), and TCP flows closed by RST.
    fn capture(n: u32) -> Vec<u8> {
        let mut frames = Vec::new();
        for i in 0..n {
            let c = [10, 1, (i >> 8) as u8, i as u8];
            let t0 = u64::from(i) * 7_000_000_000; // 7 s apart: flows time out mid-capture
            for k in 0..3u64 {
                let p = write::ipv4(
                    17,
                    c,
                    [10, 0, 0, 1],
                    &write::udp(40000 + (i % 7) as u16, 53, &[k as u8; 20]),
                );
                frames.push((t0 + k * 1_000_000_000, p));
            }
            let rst = write::ipv4(6, c, [10, 0, 0, 1], &write::tcp(5555, 443, 1, 0x04, b""));
            frames.push((t0 + 500_000_000, rst));
        }
        frames.sort_by_key(|f| f.0);
        let us: Vec<(u64, Vec<u8>)> = frames.into_iter().map(|(t, f)| (t / 1000, f)).collect();
        write::pcap(101, &us)
    }

    fn run(path: &Path, dir: &Path, shards: usize, spill_at: usize) -> (Vec<u8>, String) {
        let ds = detect::standard(detect::endpoints::Endpoints::default());
        let names: Vec<&'static str> = ds.iter().map(|d| d.name()).collect();
        let set = Settings {
            detectors: &ds,
            names: &names,
            labels: None,
            udp_timeout: 5,
            spill_dir: dir,
            epoch_frames: 64,
            spill_at,
        };
        let r = run_file(path, 0, &set, shards);
        assert!(r.warning.is_none() && r.write_error.is_none());
        let mut jsonl = Vec::new();
        super::super::output::assemble(r.spills, &mut jsonl).unwrap();
        let t = r.tally.unwrap();
        let report = super::super::report::Report::build(
            &super::super::report::RunStats {
                files: vec![r.name],
                packets: r.packets,
                seconds: 0.0,
                detectors: names.clone(),
                cost_ns: vec![0; names.len()],
                calls: vec![0; names.len()],
            },
            &t,
            false,
        );
        assert_eq!(report.flows, r.flows);
        (jsonl, report.markdown())
    }

    #[test]
    fn flows_stream_out_in_the_same_order_for_any_shard_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcap");
        std::fs::write(&path, capture(300)).unwrap();
        let (one, md1) = run(&path, dir.path(), 1, usize::MAX);
        let lines = String::from_utf8(one.clone()).unwrap();
        // 300 UDP flows (each ends by timeout) and 300 TCP ones (RST).
        assert_eq!(lines.lines().count(), 600, "{lines}");
        // In memory, and through spill files (moved to disk every 4 kB).
        for (shards, spill_at) in [(1, 4096), (2, usize::MAX), (3, 4096), (5, usize::MAX)] {
            let (many, md) = run(&path, dir.path(), shards, spill_at);
            assert_eq!(one, many, "{shards} shards, spill at {spill_at}");
            assert_eq!(md1, md);
        }
        let spills = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".spill")
            })
            .count();
        assert_eq!(spills, 0, "spills removed");
    }

    #[test]
    fn finished_flows_leave_the_table_while_the_capture_is_read() {
        let ds = detect::standard(detect::endpoints::Endpoints::default());
        let mut t = FlowTable::new(&ds);
        t.udp_timeout_ns = 5_000_000_000;
        let bytes = capture(300);
        let mut most = 0;
        for (i, f) in pcap::Reader::new(&bytes).unwrap().enumerate() {
            let f = f.unwrap();
            if let Some(d) = pcap::decode(f.link, f.data) {
                t.push(f.ts_ns, &d);
            }
            if i % 64 == 63 {
                t.expire(f.ts_ns);
                t.take_finished().clear();
            }
            most = most.max(t.open());
        }
        // Flows start 7 s apart, UDP times out after 5 s, TCP flows closed by a RST linger
        // 60 s: with an epoch of 16 flows' frames (about 112 s), at most about two epochs'
        // flows are open, not all 600.
        assert!(most <= 2 * 2 * 16 + 2, "{most} open at most");
        assert_eq!(t.flows(), 600);
    }
}

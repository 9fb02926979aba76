//! The decision log: one JSON object per line and decision, written off the serving path.
//!
//! Frontends hand events to a bounded queue ([`DecisionLog::record`] never blocks); one
//! background thread writes them to the file, rotating it by size (`file`, `file.1`, ...,
//! `file.N`). When the queue is full (a slow disk) the event is dropped and counted in
//! `blocklab_decision_log_dropped_total`, never silently. [`DecisionLog::close`] drains the queue
//! and flushes, so nothing accepted is lost on SIGTERM.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;

use crate::metrics::Metrics;

/// One logged decision.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    /// RFC 3339 time (UTC).
    pub time: String,
    /// Client address.
    pub client: String,
    /// Client jurisdiction (absent for refused clients).
    pub jurisdiction: Option<String>,
    /// `dns`, `http`, `tls`, `quic`, `relay`.
    pub layer: &'static str,
    /// Name, address or URL.
    pub target: String,
    /// `allow`, `block` or `refused`.
    pub verdict: &'static str,
    /// The rule that decided.
    pub rule: Option<String>,
    /// The technique enacted.
    pub technique: Option<&'static str>,
    /// The detector that named the flow, for relayed flows.
    pub detector: Option<String>,
    /// DNS: the question type (`A`, `AAAA`, `HTTPS`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qtype: Option<String>,
    /// DNS: the addresses the answer carried (A/AAAA; empty for an answer without any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<String>>,
    /// DNS: milliseconds from the query's arrival to its answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The simulated date the decision was made at (`YYYY-MM-DD`); absent when the gateway
    /// follows the clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// Why the decision log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open decision log {path}: {source}")]
pub struct LogError {
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Handle to the background writer.
#[derive(Debug)]
pub struct DecisionLog {
    tx: Mutex<Option<SyncSender<Event>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: BufWriter<File>,
    written: u64,
}

impl Writer {
    fn open(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        let len = f.metadata()?.len();
        Ok((BufWriter::with_capacity(64 * 1024, f), len))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        for i in (1..self.keep).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        let (f, len) = Writer::open(&self.path)?;
        self.file = f;
        self.written = len;
        Ok(())
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

impl DecisionLog {
    /// Opens (creates) `path` and starts the writer; fails before anything is served if the
    /// file cannot be opened.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        keep: u32,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Result<DecisionLog, LogError> {
        let (file, written) = Writer::open(path).map_err(|source| LogError {
            path: path.to_path_buf(),
            source,
        })?;
        let (tx, rx) = sync_channel::<Event>(queue.max(1));
        let mut w = Writer {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1024),
            keep,
            file,
            written,
        };
        let m = Arc::clone(&metrics);
        let writer = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || run_writer(&mut w, rx, &m))
            .map_err(|source| LogError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(DecisionLog {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            metrics,
        })
    }

    /// Queues `event`; if the queue is full it is dropped and counted.
    pub fn record(&self, event: Event) {
        let tx = match self.tx.lock() {
            Ok(g) => g.clone(),
            Err(_) => None,
        };
        let Some(tx) = tx else {
            Metrics::inc(&self.metrics.log_dropped);
            return;
        };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                Metrics::inc(&self.metrics.log_dropped);
            }
        }
    }

    /// Stops accepting events, writes everything queued and flushes.
    pub fn close(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn run_writer(w: &mut Writer, rx: Receiver<Event>, metrics: &Metrics) {
    let mut line = Vec::with_capacity(512);
    // Block for one event, then drain what is queued before flushing.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(ev) = next {
            line.clear();
            if serde_json::to_writer(&mut line, &ev).is_ok() {
                line.push(b'\n');
                match w.write(&line) {
                    Ok(()) => Metrics::inc(&metrics.log_written),
                    Err(e) => {
                        Metrics::inc(&metrics.log_dropped);
                        tracing::warn!(error = %e, "decision log write failed");
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = w.file.flush() {
            tracing::warn!(error = %e, "decision log flush failed");
        }
    }
    let _ = w.file.flush();
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let day = crate::rules::Day(secs.div_euclid(86_400) as i32);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{day}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn ev(i: usize) -> Event {
        Event {
            time: now_rfc3339(),
            client: "127.0.0.1:5000".into(),
            jurisdiction: Some("ru".into()),
            layer: "dns",
            target: format!("n{i}.example"),
            verdict: "block",
            rule: Some("r".into()),
            technique: Some("dns-nxdomain"),
            detector: None,
            ..Event::default()
        }
    }

    #[test]
    fn writes_everything_accepted_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let m = Arc::new(Metrics::default());
        let log = DecisionLog::open(&path, 4096, 3, 100_000, Arc::clone(&m)).unwrap();
        for i in 0..500 {
            log.record(ev(i));
        }
        log.close();
        let mut lines = 0;
        for p in [
            path.clone(),
            rotated(&path, 1),
            rotated(&path, 2),
            rotated(&path, 3),
        ] {
            if let Ok(t) = std::fs::read_to_string(&p) {
                assert!(
                    t.len() <= 4096 + 300,
                    "{} is {} bytes",
                    p.display(),
                    t.len()
                );
                for l in t.lines() {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    assert_eq!(v["layer"], "dns");
                    lines += 1;
                }
            }
        }
        assert!(!rotated(&path, 4).exists(), "keeps 3 rotated files");
        let written = m.log_written.load(Ordering::Relaxed) as usize;
        assert_eq!(written, 500);
        assert!(lines < 500, "old files were rotated away: {lines}");
        assert!(lines > 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let m = Arc::new(Metrics::default());
        let log = DecisionLog::open(&path, 1 << 30, 1, 1, Arc::clone(&m)).unwrap();
        for i in 0..10_000 {
            log.record(ev(i));
        }
        log.close();
        let written = m.log_written.load(Ordering::Relaxed);
        let dropped = m.log_dropped.load(Ordering::Relaxed);
        assert_eq!(
            written + dropped,
            10_000,
            "every event is written or counted"
        );
        let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(lines, written);
    }

    #[test]
    fn unwritable_path_is_a_clear_error() {
        let m = Arc::new(Metrics::default());
        let err = DecisionLog::open(Path::new("/nonexistent-dir/x.jsonl"), 1, 1, 1, m).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("cannot open decision log /nonexistent-dir/x.jsonl"));
    }

    #[test]
    fn time_format() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}

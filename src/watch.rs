//! Opt-in watching of the rules directory (`[reload] watch = true`).
//!
//! Once a second the task lists every file under the rules directory with its size and
//! modification time; when that fingerprint changes it reloads the policy exactly like SIGHUP
//! (off the serving path; a failing set keeps the old policy and logs every error). Polling
//! needs no extra dependency and works on every filesystem; a change is picked up within about
//! a second, and a burst of writes settles before the next poll counts it again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::gateway::Gateway;

/// How often the rules directory is looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// Spawns the watcher if `[reload] watch` is on and the config names a rules directory.
pub fn start(gw: &Arc<Gateway>) -> Option<JoinHandle<()>> {
    if !gw.config.reload.as_ref().is_some_and(|r| r.watch) {
        return None;
    }
    let Some(dir) = gw.config.rules_dir() else {
        tracing::warn!(
            "[reload] watch is on but the config names no rules directory: nothing to watch"
        );
        return None;
    };
    tracing::info!(dir = %dir.display(), "watching the rules directory for changes");
    let gw = Arc::clone(gw);
    Some(tokio::spawn(async move {
        let mut last = fingerprint(&dir);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let d = dir.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&d)).await else {
                continue;
            };
            if now == last {
                continue;
            }
            last = now;
            tracing::info!(dir = %dir.display(), "rules changed: reloading");
            let g = Arc::clone(&gw);
            // Errors are logged (and counted) by reload itself.
            let _ = tokio::task::spawn_blocking(move || g.reload()).await;
        }
    }))
}

/// A hash of every file's path, size and modification time under `dir` (recursively).
pub fn fingerprint(dir: &Path) -> u64 {
    let mut files: Vec<(PathBuf, u64, Option<std::time::SystemTime>)> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                files.push((e.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    files.sort();
    let mut h = DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_a_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.toml"), "x").unwrap();
        let a = fingerprint(d.path());
        assert_eq!(a, fingerprint(d.path()));
        std::fs::write(d.path().join("a.toml"), "xy").unwrap();
        let b = fingerprint(d.path());
        assert_ne!(a, b);
        std::fs::write(d.path().join("b.toml"), "").unwrap();
        assert_ne!(b, fingerprint(d.path()));
    }
}

//! The disk's own ceiling for durable writes: how many flushed appends (`fdatasync`, as SQLite's
//! and PostgreSQL's write-ahead logs use) it takes per second, measured in the database's folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Appends 4 KiB and flushes it to disk, again and again for `time`; answers flushes per second.
pub fn fsync_rate(dir: &Path, time: Duration) -> anyhow::Result<f64> {
    let file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("a file to measure flushes in {}", dir.display()))?;
    let mut out = file.as_file();
    let block = [0x5au8; 4096];
    let started = Instant::now();
    let mut flushes = 0u64;
    while started.elapsed() < time {
        out.write_all(&block)?;
        out.sync_data()?;
        flushes += 1;
    }
    Ok(flushes as f64 / started.elapsed().as_secs_f64())
}

/// `fsync_rate` in `dir` when it can be written there, else in the temporary folder (said so).
pub fn fsync_rate_near(dir: Option<PathBuf>, time: Duration) -> anyhow::Result<f64> {
    if let Some(dir) = dir {
        match fsync_rate(&dir, time) {
            Ok(rate) => return Ok(rate),
            Err(e) => println!("  cannot measure flushes beside the database ({e:#})"),
        }
    }
    let temp = std::env::temp_dir();
    println!("  measuring flushes in {} instead", temp.display());
    fsync_rate(&temp, time)
}

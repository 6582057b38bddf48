//! The pool as a table for people (or JSON for scripts): each interface, and counts per zone.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::pool::Member;

pub fn table(pool: &str, members: &[Member]) -> String {
    let mut out = String::new();
    let rows: Vec<[&str; 6]> = members
        .iter()
        .map(|m| {
            [
                m.eni.as_str(),
                m.zone.as_str(),
                m.ip.as_str(),
                m.hostname.as_deref().unwrap_or("-"),
                m.status.as_str(),
                m.instance.as_deref().unwrap_or("-"),
            ]
        })
        .collect();
    let header = ["ENI", "ZONE", "IP", "HOSTNAME", "STATE", "INSTANCE"];
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let mut zones: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for m in members {
        let counts = zones.entry(&m.zone).or_default();
        if m.is_available() {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let _ = writeln!(out);
    if zones.is_empty() {
        let _ = writeln!(
            out,
            "pool {pool:?} has no interfaces; create them with plura-eni provision"
        );
    }
    for (zone, (available, in_use)) in zones {
        let _ = writeln!(out, "{zone}: {available} available, {in_use} in use");
    }
    out
}

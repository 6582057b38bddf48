//! The pool as a table for people (or JSON for scripts): each interface, and counts per zone;
//! the counts in Prometheus's text format; and the zones running low.

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
    let zones = per_zone(members);
    let _ = writeln!(out);
    if zones.is_empty() {
        let _ = writeln!(
            out,
            "pool {pool:?} has no interfaces; create them with plura-eni provision"
        );
    }
    for (zone, Counts { available, in_use }) in zones {
        let _ = writeln!(out, "{zone}: {available} available, {in_use} in use");
    }
    out
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub available: usize,
    pub in_use: usize,
}

/// Free and claimed interfaces of each zone the pool has members in.
pub fn per_zone(members: &[Member]) -> BTreeMap<&str, Counts> {
    let mut zones: BTreeMap<&str, Counts> = BTreeMap::new();
    for m in members {
        let counts = zones.entry(&m.zone).or_default();
        if m.is_available() {
            counts.available += 1;
        } else {
            counts.in_use += 1;
        }
    }
    zones
}

/// The counts per zone as Prometheus text, for node_exporter's textfile collector.
pub fn prometheus(pool: &str, members: &[Member]) -> String {
    let zones = per_zone(members);
    let pool = pool.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::new();
    for (name, help, count) in [
        (
            "plura_eni_pool_free",
            "Interfaces of the pool free to claim, by zone.",
            (|c: &Counts| c.available) as fn(&Counts) -> usize,
        ),
        (
            "plura_eni_pool_in_use",
            "Interfaces of the pool claimed by an instance, by zone.",
            |c: &Counts| c.in_use,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (zone, counts) in &zones {
            let _ = writeln!(
                out,
                "{name}{{pool=\"{pool}\",zone=\"{zone}\"}} {}",
                count(counts)
            );
        }
    }
    out
}

/// The zones with fewer than `below` free interfaces, with how many they have; a pool with no
/// interfaces at all is low too (as the zone `-`).
pub fn low_zones(members: &[Member], below: usize) -> Vec<(String, usize)> {
    let zones = per_zone(members);
    if zones.is_empty() && below > 0 {
        return vec![("-".into(), 0)];
    }
    zones
        .into_iter()
        .filter(|(_, c)| c.available < below)
        .map(|(zone, c)| (zone.to_string(), c.available))
        .collect()
}

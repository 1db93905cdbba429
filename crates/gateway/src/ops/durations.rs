//! `palisade_gateway_request_duration_seconds`: a Prometheus histogram per
//! route whose buckets are counted as requests finish.
//!
//! Not through the `metrics` recorder: its histograms keep every sample in a
//! list until an upkeep pass folds them into buckets, which moved the work
//! into a burst on another thread (1.8 ms every 5 s at 26,000 requests/s,
//! stalling a worker that shares the core). Here a sample costs a search over
//! 14 bounds and two relaxed atomic additions, and nothing is kept or
//! deferred.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub const NAME: &str = "palisade_gateway_request_duration_seconds";

/// Upper bounds (seconds) of the buckets: Prometheus' defaults from 5 ms up,
/// with finer ones below, where a gateway's own share of a request lies.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`BUCKETS`] in nanoseconds (all exact).
const BOUNDS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// One route's durations: per-bucket counts (not cumulative; the last slot
/// is above the largest bound) and the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // the first bound at or above the sample: Prometheus' `le`
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// Every route's histogram since the process started. A reload keeps the
/// histograms of the routes it keeps (Prometheus counts never go back), and
/// those of removed routes stay exported, as the recorder's counters do.
static ROUTES: Mutex<BTreeMap<Box<str>, Arc<Histogram>>> = Mutex::new(BTreeMap::new());

/// The histogram of `route`, created on first use.
pub fn for_route(route: &str) -> Arc<Histogram> {
    let mut m = ROUTES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(h) = m.get(route) {
        return h.clone();
    }
    let h = Arc::new(Histogram::default());
    m.insert(route.into(), h.clone());
    h
}

/// Appends every route's histogram in the Prometheus text format.
pub fn render(out: &mut String) {
    let m = ROUTES.lock().unwrap_or_else(PoisonError::into_inner);
    if m.is_empty() {
        return;
    }
    let _ = writeln!(out, "# TYPE {NAME} histogram");
    for (route, h) in m.iter() {
        let route = label_value(route);
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(
                        out,
                        "{NAME}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{NAME}_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{NAME}_sum{{route=\"{route}\"}} {sum}");
        let _ = writeln!(out, "{NAME}_count{{route=\"{route}\"}} {cumulative}");
    }
}

/// A label value as the text format escapes it: `\`, `"` and line feed.
fn label_value(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_buckets_in_nanoseconds() {
        for (s, ns) in BUCKETS.iter().zip(BOUNDS_NS) {
            assert_eq!(Duration::from_secs_f64(*s).as_nanos(), u128::from(ns));
        }
    }

    fn lines_of(route: &str) -> Vec<String> {
        let mut out = String::new();
        render(&mut out);
        let needle = format!("route=\"{}\"", label_value(route));
        out.lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_sample_counts_in_its_bucket_and_every_one_above() {
        let route = "durations-test-buckets";
        let h = for_route(route);
        // on a bound: counted in that bucket (`le` is "less or equal")
        h.record(Duration::from_micros(500));
        h.record(Duration::from_micros(501));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(11));
        let lines = lines_of(route);
        let bucket = |le: &str| format!("{NAME}_bucket{{route=\"{route}\",le=\"{le}\"}}");
        let expect = [
            (bucket("0.0005"), 1),
            (bucket("0.001"), 2),
            (bucket("0.0025"), 2),
            (bucket("0.005"), 3),
            (bucket("10"), 3),
            (bucket("+Inf"), 4),
            (format!("{NAME}_count{{route=\"{route}\"}}"), 4),
        ];
        for (name, n) in expect {
            assert!(
                lines.contains(&format!("{name} {n}")),
                "{name} {n}: {lines:?}"
            );
        }
        let sum = format!("{NAME}_sum{{route=\"{route}\"}} 11.004001");
        assert!(lines.contains(&sum), "{lines:?}");
        // 14 bounds and +Inf, then _sum and _count
        assert_eq!(lines.len(), BUCKETS.len() + 3, "{lines:?}");
    }

    #[test]
    fn a_route_keeps_its_histogram_across_lookups() {
        let a = for_route("durations-test-same");
        let b = for_route("durations-test-same");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &for_route("durations-test-other")));
    }

    #[test]
    fn label_values_are_escaped() {
        let route = "we\"ird\\route\nname";
        for_route(route).record(Duration::from_millis(1));
        let lines = lines_of(route);
        assert!(
            lines.contains(&format!(
                "{NAME}_count{{route=\"we\\\"ird\\\\route\\nname\"}} 1"
            )),
            "{lines:?}"
        );
    }
}

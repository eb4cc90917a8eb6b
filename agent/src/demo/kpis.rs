//! The demo member's KPIs: writes accepted over a sliding window, writes refused, failed
//! operations and internal errors. Counted in memory since the agent started (a restart
//! starts them from zero), never persisted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::api::kpi_names;

/// The window `writeRate` averages over.
pub const WRITE_WINDOW: Duration = Duration::from_secs(10);
/// Slots of the window: 100 ms each.
const SLOTS: usize = 100;
const SLOT: Duration = Duration::from_millis(100);

/// Accepted writes per 100 ms slot over the last [`WRITE_WINDOW`]: a fixed ring, so a write
/// costs one lock and an addition however many writes arrive.
struct WriteWindow {
    /// (slot number since `start`, writes in it), at `slot % SLOTS`.
    slots: [(u64, u64); SLOTS],
}

impl WriteWindow {
    fn slot_of(start: Instant, at: Instant) -> u64 {
        let since = at.saturating_duration_since(start);
        (since.as_millis() / SLOT.as_millis()) as u64
    }

    fn add(&mut self, slot: u64) {
        let cell = &mut self.slots[(slot % SLOTS as u64) as usize];
        if cell.0 != slot {
            *cell = (slot, 0);
        }
        cell.1 += 1;
    }

    /// Writes in the slots `now - SLOTS + 1 ..= now`.
    fn count(&self, now: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(slot, _)| *slot <= now && now - *slot < SLOTS as u64)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The counters behind the demo's KPIs.
pub(crate) struct KpiCounters {
    start: Instant,
    window: Mutex<WriteWindow>,
    refused_writes: AtomicU64,
    failed_operations: AtomicU64,
    internal_errors: AtomicU64,
}

impl Default for KpiCounters {
    fn default() -> Self {
        KpiCounters::new(Instant::now())
    }
}

impl KpiCounters {
    fn new(start: Instant) -> KpiCounters {
        KpiCounters {
            start,
            // Slot u64::MAX is never reached, so no cell counts before its first write.
            window: Mutex::new(WriteWindow {
                slots: [(u64::MAX, 0); SLOTS],
            }),
            refused_writes: AtomicU64::new(0),
            failed_operations: AtomicU64::new(0),
            internal_errors: AtomicU64::new(0),
        }
    }

    /// A write acknowledged (durably stored) on the data port.
    pub fn write_accepted(&self) {
        self.write_accepted_at(Instant::now());
    }

    fn write_accepted_at(&self, at: Instant) {
        let slot = WriteWindow::slot_of(self.start, at);
        super::lock(&self.window).add(slot);
    }

    /// A data-port write the member did not store: not the serving Active member, or the log
    /// failed to store it.
    pub fn write_refused(&self) {
        self.refused_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// An operation that ended Failed (or whose task ended without an outcome).
    pub fn operation_failed(&self) {
        self.failed_operations.fetch_add(1, Ordering::Relaxed);
    }

    /// An internal error: the log failed to store a write.
    pub fn internal_error(&self) {
        self.internal_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes accepted per second over the last [`WRITE_WINDOW`] (divided by the whole
    /// window, also in the agent's first seconds).
    fn write_rate_at(&self, now: Instant) -> f64 {
        let slot = WriteWindow::slot_of(self.start, now);
        super::lock(&self.window).count(slot) as f64 / WRITE_WINDOW.as_secs_f64()
    }

    /// The four KPIs of [`kpi_names::DEMO`]; `serving` and `lag_seconds` as the status
    /// reports them.
    pub fn snapshot(&self, serving: bool, lag_seconds: f64) -> BTreeMap<String, f64> {
        self.snapshot_at(Instant::now(), serving, lag_seconds)
    }

    fn snapshot_at(&self, now: Instant, serving: bool, lag_seconds: f64) -> BTreeMap<String, f64> {
        let write_rate = if serving {
            self.write_rate_at(now)
        } else {
            0.0
        };
        let errors = self
            .failed_operations
            .load(Ordering::Relaxed)
            .saturating_add(self.internal_errors.load(Ordering::Relaxed));
        BTreeMap::from([
            (kpi_names::WRITE_RATE.to_string(), write_rate),
            (
                kpi_names::REFUSED_WRITES.to_string(),
                self.refused_writes.load(Ordering::Relaxed) as f64,
            ),
            (kpi_names::REPLICATION_LAG.to_string(), lag_seconds),
            (kpi_names::ERROR_COUNT.to_string(), errors as f64),
        ])
    }
}

/// Adds the `kpiOffsets` fault to `kpis`; a name not reported yet is reported with its offset.
/// A sum beyond the range of `f64` is held at its largest finite value, so what is reported
/// stays a number.
pub(crate) fn apply_offsets(kpis: &mut BTreeMap<String, f64>, offsets: &BTreeMap<String, f64>) {
    for (name, offset) in offsets {
        let value = kpis.entry(name.clone()).or_insert(0.0);
        *value = (*value + offset).clamp(f64::MIN, f64::MAX);
    }
}

/// Counts an operation as failed when dropped unless [`FailureGuard::succeeded`] was called:
/// an operation that returned an error, and one whose task panicked or was cancelled.
pub(crate) struct FailureGuard<'a> {
    counters: &'a KpiCounters,
    succeeded: bool,
}

impl<'a> FailureGuard<'a> {
    pub fn new(counters: &'a KpiCounters) -> FailureGuard<'a> {
        FailureGuard {
            counters,
            succeeded: false,
        }
    }

    pub fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for FailureGuard<'_> {
    fn drop(&mut self) {
        if !self.succeeded {
            self.counters.operation_failed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(kpis: &BTreeMap<String, f64>) -> f64 {
        kpis.get(kpi_names::WRITE_RATE).copied().unwrap_or(f64::NAN)
    }

    #[test]
    fn write_rate_is_the_writes_of_the_last_ten_seconds_per_second() {
        let t0 = Instant::now();
        let c = KpiCounters::new(t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(rate(&c.snapshot_at(at(0), true, 0.0)), 0.0);
        for i in 0..50 {
            c.write_accepted_at(at(i * 10)); // 50 writes in the first half second
        }
        assert_eq!(rate(&c.snapshot_at(at(600), true, 0.0)), 5.0);
        for _ in 0..30 {
            c.write_accepted_at(at(5_000));
        }
        assert_eq!(rate(&c.snapshot_at(at(9_950), true, 0.0)), 8.0);
        // The first burst leaves the window after 10 s, the second after 15 s.
        assert_eq!(rate(&c.snapshot_at(at(10_500), true, 0.0)), 3.0);
        assert_eq!(rate(&c.snapshot_at(at(15_100), true, 0.0)), 0.0);
        // Long after: slots are reused, the old counts do not come back.
        c.write_accepted_at(at(100_000));
        assert_eq!(rate(&c.snapshot_at(at(100_050), true, 0.0)), 0.1);
        // A member that does not serve reports 0, whatever it accepted before.
        assert_eq!(rate(&c.snapshot_at(at(100_050), false, 0.0)), 0.0);
    }

    #[test]
    fn the_counters_are_reported_under_the_demo_names() {
        let c = KpiCounters::default();
        for _ in 0..3 {
            c.write_refused();
        }
        c.operation_failed();
        c.internal_error();
        c.internal_error();
        let kpis = c.snapshot(false, 1.5);
        let names: Vec<&str> = kpis.keys().map(String::as_str).collect();
        let mut want = kpi_names::DEMO.to_vec();
        want.sort_unstable();
        assert_eq!(names, want);
        assert_eq!(kpis.get(kpi_names::REFUSED_WRITES), Some(&3.0));
        assert_eq!(kpis.get(kpi_names::ERROR_COUNT), Some(&3.0));
        assert_eq!(kpis.get(kpi_names::REPLICATION_LAG), Some(&1.5));
        assert_eq!(crate::api::check_kpis(&kpis), Ok(()));
    }

    #[test]
    fn a_failure_guard_counts_unless_told_it_succeeded() {
        let c = KpiCounters::default();
        FailureGuard::new(&c).succeeded();
        assert_eq!(c.failed_operations.load(Ordering::Relaxed), 0);
        drop(FailureGuard::new(&c));
        assert_eq!(c.failed_operations.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn offsets_add_to_reported_kpis_and_create_missing_ones() {
        let mut kpis = BTreeMap::from([("writeRate".to_string(), 2.0)]);
        let offsets = BTreeMap::from([
            ("writeRate".to_string(), -1.5),
            ("latencyMs".to_string(), 40.0),
            ("huge".to_string(), f64::MAX),
        ]);
        kpis.insert("huge".into(), f64::MAX);
        apply_offsets(&mut kpis, &offsets);
        assert_eq!(kpis.get("writeRate"), Some(&0.5));
        assert_eq!(kpis.get("latencyMs"), Some(&40.0));
        assert_eq!(kpis.get("huge"), Some(&f64::MAX), "held finite");
        assert_eq!(crate::api::check_kpis(&kpis), Ok(()));
    }
}

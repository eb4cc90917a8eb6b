//! What the typed errors of the effectful layers share: a short, stable label per variant, for
//! metrics and logs.
//!
//! Every error enum at a seam (members, the local state file, the Kubernetes controllers)
//! implements [`MetricLabel`] with an exhaustive `match` (no `_` arm), so a new variant does
//! not compile until it has a label. Labels are what dashboards and alerts select on: change
//! them only together with `docs/operator.md`.

/// A short, stable name of an error's kind (`StatusWrite`, `Read`, …).
pub trait MetricLabel {
    fn metric_label(&self) -> &'static str;
}

impl<T: MetricLabel + ?Sized> MetricLabel for &T {
    fn metric_label(&self) -> &'static str {
        (**self).metric_label()
    }
}

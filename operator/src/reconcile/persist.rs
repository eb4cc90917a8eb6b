//! Persist before act, as a type.
//!
//! A host writes a pass's planned status to its store (the local state file, the status
//! subresource of a Kubernetes object) through [`persist`], which hands back the pass wrapped
//! in [`Persisted`]. The functions that act on a plan ([`super::act`] for a cluster's agent
//! operations; the Mesh controller's wake-up of the clusters it admitted) take a `Persisted`
//! value, and this module holds its only constructor: acting on a plan that was not persisted
//! does not compile.

use std::future::Future;

/// A pass (or a host's batch of passes) whose planned status its host's [`StatusStore`] has
/// recorded: the only thing the act path accepts.
///
/// Why: crash safety. A step's intent is recorded in the status before the step is started,
/// so a crash before the write loses nothing (the next pass plans the same step again) and a
/// crash after it leaves the intent recorded: the next pass re-sends the same operation id
/// (ids derive from the step record), which the agent treats as the same operation.
///
/// Only [`persist`] creates one, after [`StatusStore::write`] succeeded; the field is private,
/// so no other module can build one:
///
/// ```compile_fail,E0451
/// use baton::reconcile::{ClusterPass, Persisted};
/// fn forge(pass: ClusterPass) -> Persisted<ClusterPass> {
///     Persisted { value: pass } // error: the field `value` is private
/// }
/// ```
#[must_use = "a persisted pass is there to be acted on"]
#[derive(Debug)]
pub struct Persisted<T> {
    value: T,
}

impl<T> Persisted<T> {
    /// The persisted value, to read.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// The value, giving up the proof that it was persisted.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<K, T> Persisted<(K, T)> {
    /// A batch entry's key and its persisted pass: persisted together, persisted each.
    pub fn into_parts(self) -> (K, Persisted<T>) {
        let (k, value) = self.value;
        (k, Persisted { value })
    }
}

impl<T> IntoIterator for Persisted<Vec<T>> {
    type Item = Persisted<T>;
    type IntoIter = std::iter::Map<std::vec::IntoIter<T>, fn(T) -> Persisted<T>>;

    /// A batch persisted in one write: each of its passes is persisted.
    fn into_iter(self) -> Self::IntoIter {
        self.value.into_iter().map(|value| Persisted { value })
    }
}

/// Where a host keeps the statuses of `T` (a pass, or the batch of passes of one local pass).
pub trait StatusStore<T> {
    /// What the write returns (the object as stored after the write, whether a file was
    /// written, …).
    type Written;
    type Error;

    /// Record the statuses `value` carries, durably, before anything acts on them; or nothing
    /// when the store already holds them (a pass whose status did not change).
    fn write(
        &mut self,
        value: &T,
    ) -> impl Future<Output = Result<Self::Written, Self::Error>> + Send;
}

/// Write `value`'s statuses through `store`; only when the write succeeded is `value`
/// [`Persisted`]. On an error nothing may act on `value`, and nothing can.
pub async fn persist<T, S: StatusStore<T>>(
    store: &mut S,
    value: T,
) -> Result<(Persisted<T>, S::Written), S::Error> {
    let written = store.write(&value).await?;
    Ok((Persisted { value }, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that records what it was asked to write, or fails.
    struct Log {
        writes: Vec<u32>,
        fail: bool,
    }

    impl StatusStore<u32> for Log {
        type Written = usize;
        type Error = &'static str;
        async fn write(&mut self, value: &u32) -> Result<usize, &'static str> {
            if self.fail {
                return Err("disk full");
            }
            self.writes.push(*value);
            Ok(self.writes.len())
        }
    }

    impl StatusStore<Vec<(char, u32)>> for Log {
        type Written = ();
        type Error = &'static str;
        async fn write(&mut self, value: &Vec<(char, u32)>) -> Result<(), &'static str> {
            self.writes.extend(value.iter().map(|(_, v)| *v));
            Ok(())
        }
    }

    #[tokio::test]
    async fn only_a_successful_write_yields_a_persisted_value() {
        let mut store = Log {
            writes: vec![],
            fail: false,
        };
        let (p, written) = persist(&mut store, 7).await.expect("written");
        assert_eq!((*p.get(), written), (7, 1));
        assert_eq!(store.writes, [7], "written before it was handed back");

        store.fail = true;
        assert_eq!(persist(&mut store, 8).await.err(), Some("disk full"));
        assert_eq!(store.writes, [7], "nothing recorded, nothing to act on");
    }

    #[tokio::test]
    async fn a_batch_persisted_at_once_splits_into_persisted_passes() {
        let mut store = Log {
            writes: vec![],
            fail: false,
        };
        let (batch, ()) = persist(&mut store, vec![('a', 1), ('b', 2)])
            .await
            .expect("written");
        let parts: Vec<(char, u32)> = batch
            .into_iter()
            .map(|p| {
                let (k, p) = p.into_parts();
                (k, p.into_inner())
            })
            .collect();
        assert_eq!(parts, [('a', 1), ('b', 2)]);
        assert_eq!(store.writes, [1, 2]);
    }
}

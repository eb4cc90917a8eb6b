//! Fair reconcile slots for the Cluster controller.
//!
//! kube-runtime's runner bounds concurrency itself, but it keeps the objects that are due
//! while every slot is taken in a `HashSet` and, when a slot frees, starts whichever comes
//! first in that set's iteration order. With 200 Clusters due and 8 slots, that order is not
//! the order in which they became due: the same objects win again and again while others wait
//! (issue 11 measured a cluster with a step in flight waiting 3.7 minutes for its next pass,
//! and a 250 ms requeue honoured after 58 s). The Cluster controller therefore runs the
//! runner without a limit (every due object starts at once, so nothing waits in that set)
//! and each pass first takes one of these slots:
//!
//! * waiters are served in the order they asked, **busy passes first** (a step in flight, or
//!   the last pass asked to look again soon), then idle ones (resyncs, admission changes of
//!   clusters with nothing to do);
//! * idle passes may hold at most `limit - reserve` slots, so a busy cluster never waits
//!   behind a full set of slow idle passes (members that time out hold a slot for seconds).
//!
//! A permit is released when dropped, also when the pass is cancelled.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Which queue a pass waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A step is in flight or the cluster asked to be looked at again soon.
    Busy,
    /// Nothing known to be running: a resync or a wake-up that may change nothing.
    Idle,
}

#[derive(Clone)]
pub struct Slots {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    limit: usize,
    idle_limit: usize,
    running: usize,
    running_idle: usize,
    busy: VecDeque<oneshot::Sender<Permit>>,
    idle: VecDeque<oneshot::Sender<Permit>>,
}

/// One slot, released on drop.
pub struct Permit {
    slots: Option<Slots>,
    class: Class,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = self.slots.take() {
            s.release(self.class);
        }
    }
}

impl Slots {
    /// `limit` passes at once (0 is taken as 1); idle passes leave a quarter (at least one
    /// slot, when there are two or more) to busy ones.
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        let reserve = if limit >= 2 { (limit / 4).max(1) } else { 0 };
        Slots {
            inner: Arc::new(Mutex::new(Inner {
                limit,
                idle_limit: limit - reserve,
                running: 0,
                running_idle: 0,
                busy: VecDeque::new(),
                idle: VecDeque::new(),
            })),
        }
    }

    /// Wait for a slot.
    pub async fn acquire(&self, class: Class) -> Permit {
        let rx = {
            let Ok(mut g) = self.inner.lock() else {
                // Poisoned: a panic elsewhere; do not block reconciles on it.
                return Permit { slots: None, class };
            };
            if g.may_run(class) {
                g.take(class);
                return Permit {
                    slots: Some(self.clone()),
                    class,
                };
            }
            let (tx, rx) = oneshot::channel();
            match class {
                Class::Busy => g.busy.push_back(tx),
                Class::Idle => g.idle.push_back(tx),
            }
            rx
        };
        match rx.await {
            Ok(p) => p,
            // The sender is dropped only with the Slots themselves (shutdown): run unbounded.
            Err(_) => Permit { slots: None, class },
        }
    }

    /// (running, waiting) — for tests and logs.
    pub fn load(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|g| (g.running, g.busy.len() + g.idle.len()))
            .unwrap_or((0, 0))
    }

    fn release(&self, class: Class) {
        let mut grants = Vec::new();
        if let Ok(mut g) = self.inner.lock() {
            g.running = g.running.saturating_sub(1);
            if class == Class::Idle {
                g.running_idle = g.running_idle.saturating_sub(1);
            }
            // Hand the free slots over in order: busy waiters first, then idle ones.
            loop {
                let next = if g.may_run(Class::Busy) && !g.busy.is_empty() {
                    g.busy.pop_front().map(|t| (t, Class::Busy))
                } else if g.may_run(Class::Idle) && !g.idle.is_empty() {
                    g.idle.pop_front().map(|t| (t, Class::Idle))
                } else {
                    None
                };
                let Some((tx, c)) = next else { break };
                if tx.is_closed() {
                    continue;
                }
                g.take(c);
                grants.push((tx, c));
            }
        }
        // Outside the lock: a waiter that went away hands its permit back through Drop.
        for (tx, c) in grants {
            let _ = tx.send(Permit {
                slots: Some(self.clone()),
                class: c,
            });
        }
    }
}

impl Inner {
    fn may_run(&self, class: Class) -> bool {
        self.running < self.limit && (class == Class::Busy || self.running_idle < self.idle_limit)
    }

    fn take(&mut self, class: Class) {
        self.running += 1;
        if class == Class::Idle {
            self.running_idle += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn busy_passes_go_first_and_each_queue_is_first_come_first_served() {
        let slots = Slots::new(1);
        let first = slots.acquire(Class::Idle).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, class) in [
            Class::Idle,
            Class::Idle,
            Class::Busy,
            Class::Idle,
            Class::Busy,
        ]
        .into_iter()
        .enumerate()
        {
            let (s, o) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = s.acquire(class).await;
                o.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            settle().await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [2, 4, 0, 1, 3]);
        assert_eq!(slots.load(), (0, 0));
    }

    #[tokio::test]
    async fn idle_passes_never_take_the_reserved_slots() {
        let slots = Slots::new(4);
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(slots.acquire(Class::Idle).await);
        }
        // The fourth slot is reserved: an idle pass waits, a busy one runs at once.
        let s = slots.clone();
        let waiting = tokio::spawn(async move { s.acquire(Class::Idle).await });
        settle().await;
        assert_eq!(slots.load(), (3, 1));
        let busy = tokio::time::timeout(Duration::from_secs(1), slots.acquire(Class::Busy))
            .await
            .expect("a busy pass gets the reserved slot");
        assert_eq!(slots.load(), (4, 1));
        drop(busy);
        settle().await;
        assert!(
            !waiting.is_finished(),
            "the freed slot is still the reserved one"
        );
        drop(idle.pop());
        let p = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("an idle slot freed")
            .unwrap();
        drop(p);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_leak_its_slot() {
        let slots = Slots::new(1);
        let p = slots.acquire(Class::Busy).await;
        let s = slots.clone();
        let gone = tokio::spawn(async move { s.acquire(Class::Busy).await });
        settle().await;
        gone.abort();
        let _ = gone.await;
        drop(p);
        let again = tokio::time::timeout(Duration::from_secs(1), slots.acquire(Class::Busy)).await;
        assert!(again.is_ok(), "slot leaked");
    }
}

//! Condition and log bookkeeping shared by the cluster and mesh planners.

use crate::api::{Condition, LOG_LIMIT, LogEntry, LogMode, LogResult, LogScope, Timestamp};

/// Set a condition, keeping `lastTransitionTime` when the status does not change, so that a
/// converged system writes an identical status (and therefore writes nothing).
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    on: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if on { "True" } else { "False" };
    let message = message.into();
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now;
            c.status = status.to_string();
        }
        // Assign only what changed: a converged pass sets the same values every time.
        if c.reason != reason {
            c.reason = reason.to_string();
        }
        if c.message != message {
            c.message = message;
        }
        c.observed_generation = generation;
    } else {
        conds.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now,
        });
    }
}

pub fn condition_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The bounded upgrade log of a status.
pub struct Log<'a> {
    pub entries: &'a mut Vec<LogEntry>,
    pub next_id: &'a mut u64,
}

impl Log<'_> {
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        parent: Option<u64>,
        action: &str,
        scope: LogScope,
        target: &str,
        version: Option<&str>,
        mode: LogMode,
        message: impl Into<String>,
        now: Timestamp,
    ) -> u64 {
        *self.next_id += 1;
        let id = *self.next_id;
        self.entries.push(LogEntry {
            id,
            parent,
            action: action.to_string(),
            scope,
            target: target.to_string(),
            version: version.map(str::to_string),
            start: now,
            end: None,
            result: LogResult::Running,
            mode,
            message: message.into(),
        });
        self.trim();
        id
    }

    pub fn close(
        &mut self,
        id: u64,
        result: LogResult,
        message: impl Into<String>,
        now: Timestamp,
    ) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.result = result;
            e.end = Some(now);
            let m = message.into();
            if !m.is_empty() {
                e.message = m;
            }
        }
    }

    /// Drop the oldest finished entries beyond the limit; running ones stay visible.
    fn trim(&mut self) {
        while self.entries.len() > LOG_LIMIT {
            match self
                .entries
                .iter()
                .position(|e| e.result != LogResult::Running)
            {
                Some(i) => {
                    self.entries.remove(i);
                }
                None => break,
            }
        }
    }
}

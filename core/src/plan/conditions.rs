//! Condition and log bookkeeping shared by the cluster and mesh planners.

use crate::api::{
    Condition, LOG_LIMIT, LogEntry, LogMode, LogResult, LogScope, Timestamp, condition as cond,
};
use crate::plan::observe::PlanEvent;
use crate::plan::stall::Stall;

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

/// A condition that is either on, with its reason and a message, or off with its reason and
/// no message (`Degraded`, `MixedVersion`, `Paused`, ...). The message is only made when on.
#[allow(clippy::too_many_arguments)]
pub fn set_flag(
    conds: &mut Vec<Condition>,
    type_: &str,
    on: bool,
    on_reason: &str,
    off_reason: &str,
    message: impl FnOnce() -> String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let (reason, message) = if on {
        (on_reason, message())
    } else {
        (off_reason, String::new())
    };
    set_condition(conds, type_, on, reason, message, generation, now);
}

/// Where an object stands, as the kstatus conditions say it.
pub struct Kstatus<'a> {
    /// Why it cannot make progress without a human.
    pub stalled: Option<&'a Stall>,
    /// Converged, and what `Ready` says then.
    pub ready: Option<String>,
    pub paused: bool,
    /// Reason and message of `Reconciling` while it is on (neither ready, stalled nor paused).
    pub reconciling: (&'a str, String),
}

/// Set `Stalled`, `Ready`, `Reconciling` and `Paused` the same way for every object: exactly
/// one of Ready / Stalled / Reconciling holds unless paused, as kstatus expects.
pub fn set_kstatus(
    conds: &mut Vec<Condition>,
    k: Kstatus<'_>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let (g, t) = (generation, now);
    match k.stalled {
        Some(stall) => {
            let message = stall.message();
            set_condition(conds, cond::STALLED, true, stall.reason(), message, g, t)
        }
        None => set_condition(conds, cond::STALLED, false, "Progressing", "", g, t),
    }
    let ready = k.ready.is_some();
    let ready_message = k.ready.unwrap_or_default();
    set_flag(
        conds,
        cond::READY,
        ready,
        "Converged",
        "NotConverged",
        || ready_message,
        g,
        t,
    );
    let on = !ready && k.stalled.is_none() && !k.paused;
    let (reason, message) = k.reconciling;
    set_flag(
        conds,
        cond::RECONCILING,
        on,
        reason,
        "Idle",
        || message,
        g,
        t,
    );
    set_flag(
        conds,
        cond::PAUSED,
        k.paused,
        "Paused",
        "NotPaused",
        String::new,
        g,
        t,
    );
}

/// A warning event when an object becomes `Stalled` (or stalls for another reason or with
/// another message): `kubectl get events` and alerting on events must see every stop a human
/// has to act on, not only those a planner step already announced. Call it before
/// [`set_kstatus`] with the conditions as last persisted.
pub fn announce_stall(
    conds_before: &[Condition],
    stalled: Option<&Stall>,
    events: &mut Vec<PlanEvent>,
) {
    let Some(stall) = stalled else {
        return;
    };
    let (reason, message) = (stall.reason(), stall.message());
    let unchanged = conds_before.iter().any(|c| {
        c.type_ == cond::STALLED && c.status == "True" && c.reason == reason && c.message == message
    });
    if unchanged || events.iter().any(|e| e.reason == reason) {
        return;
    }
    events.push(PlanEvent {
        warning: true,
        reason: reason.to_string(),
        message,
    });
}

pub fn condition_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` when something was cut:
/// text from outside (a deserialization error quoting the object) never grows a status or an
/// event without bound.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
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
        // A finished entry is history: a later rollout that supersedes a done one must not
        // rewrite its result (a Succeeded upgrade turned into "Cancelled" when the next began).
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.id == id && e.result == LogResult::Running)
        {
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

#[cfg(test)]
mod log_tests {
    use super::*;
    use crate::api::{LogMode, LogResult, LogScope};

    #[test]
    fn closing_a_finished_entry_leaves_its_result_and_end() {
        let mut entries = Vec::new();
        let mut next_id = 0;
        let mut log = Log {
            entries: &mut entries,
            next_id: &mut next_id,
        };
        let id = log.open(
            None,
            "upgrade",
            LogScope::Mesh,
            "m",
            Some("1.0.0"),
            LogMode::Automatic,
            "",
            Timestamp(1_000),
        );
        log.close(
            id,
            LogResult::Succeeded,
            "all 2 clusters run 1.0.0",
            Timestamp(2_000),
        );
        log.close(
            id,
            LogResult::Cancelled,
            "superseded by upgrade 2.0.0",
            Timestamp(3_000),
        );
        let e = &entries[0];
        assert_eq!(e.result, LogResult::Succeeded);
        assert_eq!(e.end, Some(Timestamp(2_000)));
        assert_eq!(e.message, "all 2 clusters run 1.0.0");
    }
}

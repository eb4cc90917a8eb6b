//! `status --watch`: re-read on an interval and print a frame only when it changed (a quiet
//! rollout prints nothing). On a terminal each frame replaces the last; otherwise frames are
//! appended with a timestamp line, like `kubectl get --watch`.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// How frames are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// Clear the screen and redraw (a terminal).
    Redraw,
    /// Append, separated by a timestamp line (a pipe or a file).
    Append,
}

/// When to stop watching (besides Ctrl-C).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Stop after this many frames were printed.
    pub frames: Option<usize>,
    /// Stop after this many reads.
    pub reads: Option<usize>,
}

/// Watch `frame` every `interval` until Ctrl-C or a limit. A failed read is reported on
/// stderr and retried at the next tick: an API server restart must not end the watch.
/// Returns the number of frames printed.
pub async fn watch<F, Fut>(
    mut frame: F,
    interval: Duration,
    title: &str,
    display: Display,
    limits: Limits,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<usize>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let mut last: Option<String> = None;
    let mut shown = 0usize;
    let mut reads = 0usize;
    loop {
        reads += 1;
        match frame().await {
            Ok(text) if last.as_deref() != Some(text.as_str()) => {
                let now = crate::reconcile::now().to_rfc3339();
                match display {
                    Display::Redraw => write!(
                        out,
                        "\x1b[H\x1b[2J{title}   every {}   {now}\n\n{text}",
                        humantime(interval)
                    )?,
                    Display::Append => write!(out, "--- {now}\n{text}")?,
                }
                out.flush()?;
                shown += 1;
                last = Some(text);
            }
            Ok(_) => {}
            Err(e) => eprintln!("error: {e:#} (retrying in {})", humantime(interval)),
        }
        if limits.frames.is_some_and(|n| shown >= n) || limits.reads.is_some_and(|n| reads >= n) {
            return Ok(shown);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(shown),
        }
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn prints_only_changed_frames_and_survives_errors() {
        let reads = Arc::new(Mutex::new(0usize));
        let script = ["a\n", "a\n", "ERR", "b\n", "b\n", "a\n"];
        let r = reads.clone();
        let mut out = Vec::new();
        let shown = watch(
            move || {
                let r = r.clone();
                async move {
                    let mut n = r.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let s = script[(*n).min(script.len() - 1)];
                    *n += 1;
                    if s == "ERR" {
                        anyhow::bail!("api down");
                    }
                    Ok(s.to_string())
                }
            },
            Duration::from_millis(1),
            "t",
            Display::Append,
            Limits {
                frames: None,
                reads: Some(script.len()),
            },
            &mut out,
        )
        .await
        .expect("watch");
        let text = String::from_utf8(out).expect("utf8");
        let frames: Vec<&str> = text.lines().filter(|l| !l.starts_with("--- ")).collect();
        assert_eq!(frames, ["a", "b", "a"], "{text}");
        assert_eq!(shown, 3);
        assert_eq!(*reads.lock().expect("lock"), 6);
    }

    #[tokio::test]
    async fn redraw_clears_the_screen_and_stops_at_the_frame_limit() {
        let mut n = 0;
        let mut out = Vec::new();
        let shown = watch(
            move || {
                n += 1;
                let s = format!("frame {n}\n");
                async move { Ok(s) }
            },
            Duration::from_millis(1),
            "kubectl baton status",
            Display::Redraw,
            Limits {
                frames: Some(2),
                reads: Some(100),
            },
            &mut out,
        )
        .await
        .expect("watch");
        assert_eq!(shown, 2);
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.matches("\x1b[H\x1b[2J").count(), 2);
        assert!(text.contains("kubectl baton status   every 1ms"));
        assert!(text.ends_with("frame 2\n"), "{text}");
    }
}

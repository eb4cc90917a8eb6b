//! Live output of the demo: on a terminal, one progress bar per cluster with the upgrade
//! events printed above them as they happen; otherwise (CI logs, `--quiet`) plain lines —
//! every event and every cluster phase change, one per line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::api::{ClusterPhase, ClusterStatus};
use crate::plan::PlanEvent;
use crate::reconcile::{ClusterObject, MeshObject};

pub struct Display {
    start: Instant,
    bars: Option<Bars>,
    /// Last phase/target printed per cluster (plain mode).
    last: BTreeMap<String, String>,
}

struct Bars {
    mp: MultiProgress,
    header: ProgressBar,
    clusters: Vec<(String, ProgressBar)>,
}

/// What the header line shows besides the mesh.
#[derive(Clone, Debug, Default)]
pub struct LoadView {
    pub acked: u64,
    pub refused: u64,
    /// Clusters whose writer is being refused right now.
    pub down: Vec<String>,
}

impl Display {
    /// `bars`: draw progress bars (stdout is a terminal and not `--quiet`).
    pub fn new(bars: bool, clusters: &[(String, usize)]) -> Display {
        let bars = bars.then(|| {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
            let header = mp.add(ProgressBar::new_spinner());
            header.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            header.enable_steady_tick(Duration::from_millis(120));
            let width = clusters.iter().map(|(n, _)| n.len()).max().unwrap_or(8);
            let style = ProgressStyle::with_template(&format!(
                "  {{prefix:<{width}}} [{{bar:16.green/white}}] {{pos}}/{{len}} {{wide_msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let clusters = clusters
                .iter()
                .map(|(name, members)| {
                    let b = mp.add(ProgressBar::new(*members as u64));
                    b.set_style(style.clone());
                    b.set_prefix(name.clone());
                    b.set_message("waiting for the first pass");
                    (name.clone(), b)
                })
                .collect();
            Bars {
                mp,
                header,
                clusters,
            }
        });
        Display {
            start: Instant::now(),
            bars,
            last: BTreeMap::new(),
        }
    }

    fn stamp(&self) -> String {
        format!("{:>6.1}s", self.start.elapsed().as_secs_f64())
    }

    /// A line of output (above the bars on a terminal).
    pub fn line(&self, text: &str) {
        match &self.bars {
            Some(b) => {
                if b.mp.println(text).is_err() {
                    println!("{text}");
                }
            }
            None => println!("{text}"),
        }
    }

    /// One event of the reconcile loop (`Cluster/web` shows as `web`, `Mesh/x` as `mesh x`).
    pub fn event(&self, object: &str, e: &PlanEvent) {
        let mark = if e.warning { "!" } else { " " };
        let object = match object.split_once('/') {
            Some(("Cluster", n)) => n.to_string(),
            Some(("Mesh", n)) => format!("mesh {n}"),
            _ => object.to_string(),
        };
        let line = format!(
            "{} {mark} {object:<10} {:<20} {}",
            self.stamp(),
            e.reason,
            e.message
        );
        // On a terminal, one event is one line: long messages are cut at the screen's edge.
        match (&self.bars, terminal_width()) {
            (Some(_), Some(w)) if line.chars().count() > w && w > 20 => {
                let cut: String = line.chars().take(w - 1).collect();
                self.line(&format!("{cut}…"));
            }
            _ => self.line(&line),
        }
    }

    /// Refresh the bars (or print phase changes) from the statuses of the last pass.
    pub fn update(&mut self, clusters: &[ClusterObject], meshes: &[MeshObject], load: &LoadView) {
        let mesh = mesh_line(meshes);
        let lines: Vec<(String, u64, u64, String, String)> = clusters
            .iter()
            .map(|c| {
                let (done, total, phase, text) = summary(c.status.as_ref(), c.spec.members.len());
                (c.name.clone(), done, total, phase, text)
            })
            .collect();
        match &self.bars {
            Some(b) => {
                b.header.set_message(header(mesh.as_deref(), load));
                for (name, done, total, _, text) in &lines {
                    if let Some((_, bar)) = b.clusters.iter().find(|(n, _)| n == name) {
                        bar.set_length(*total);
                        bar.set_position(*done);
                        bar.set_message(text.clone());
                    }
                }
            }
            None => {
                for (name, done, total, phase, text) in lines {
                    let key = format!("{phase} {done}/{total}");
                    if self.last.get(&name) != Some(&key) {
                        println!("{} = {name:<10} {done}/{total} {text}", self.stamp());
                        self.last.insert(name, key);
                    }
                }
            }
        }
    }

    /// Refresh only the header (between passes).
    pub fn tick(&self, meshes: &[MeshObject], load: &LoadView) {
        if let Some(b) = &self.bars {
            let mesh = mesh_line(meshes);
            b.header.set_message(header(mesh.as_deref(), load));
        }
    }

    /// Leave the bars on screen in their final state.
    pub fn finish(&mut self) {
        if let Some(b) = self.bars.take() {
            b.header.finish_and_clear();
            for (_, bar) in &b.clusters {
                bar.abandon();
            }
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The header's first part: the mesh's phase and progress (clusters without a mesh say so).
fn mesh_line(meshes: &[MeshObject]) -> Option<String> {
    let Some(m) = meshes.first() else {
        return Some("standalone clusters".into());
    };
    m.status.as_ref().map(|s| {
        format!(
            "mesh {:?} {}",
            s.phase,
            s.progress.as_deref().unwrap_or_default()
        )
    })
}

/// Columns of the terminal on stdout, if it is one.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; a failure leaves it untouched.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

fn header(mesh: Option<&str>, load: &LoadView) -> String {
    let mut s = mesh.unwrap_or("first pass").to_string();
    s.push_str(&format!(
        " | writes acknowledged {} refused {}",
        load.acked, load.refused
    ));
    if !load.down.is_empty() {
        s.push_str(&format!(" | refused now: {}", load.down.join(", ")));
    }
    s
}

/// (members at target, members, phase, one-line text) of a cluster.
fn summary(st: Option<&ClusterStatus>, members: usize) -> (u64, u64, String, String) {
    let Some(st) = st else {
        return (0, members as u64, "-".into(), "no status yet".into());
    };
    let target = st.target_version.as_deref().unwrap_or("?");
    let done = st.members.iter().filter(|m| m.up_to_date).count() as u64;
    // A CA rotation under way shows its phase beside the cluster's.
    let ca = st
        .certificates
        .as_ref()
        .and_then(|c| c.phase.as_deref())
        .filter(|p| *p != "Done");
    let phase = match ca {
        Some(ca) => format!("{:?} CA {ca}", st.phase),
        None => format!("{:?}", st.phase),
    };
    let active = st.active_member.as_deref().unwrap_or("none");
    // The operation running on a member, with its progress.
    let running = st
        .members
        .iter()
        .filter_map(|m| m.operation.as_ref().map(|o| (m, o)))
        .find(|(_, o)| o.state == "Running")
        .map(|(m, o)| format!(" [{} {} {}%]", o.kind, m.name, o.progress))
        .unwrap_or_default();
    let text = match st.phase {
        ClusterPhase::Ready => format!("Ready on {target}, active {active}"),
        _ => format!(
            "{} → {target}, active {active}: {}{running}",
            format_args!("{:?}", st.phase),
            match ca {
                Some(ca) => format!("CA {ca}: {}", st.message.as_deref().unwrap_or("")),
                None => st.message.clone().unwrap_or_default(),
            }
        ),
    };
    (done, members as u64, phase, text)
}

//! One report: query the API for the window, assemble HPAs and steps, write the CSV files
//! and the plots into the output directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::info;

use crate::column::on_grid;
use crate::csv;
use crate::error::{Error, Result};
use crate::hpa::{HpaAnswers, HpaTimeline, timelines};
use crate::plot::{TimeAxis, hpa_png, load_font, steps_png, timeline_png};
use crate::queries::{Selector, family, promql_duration};
use crate::query_api::{QueryApi, Series};
use crate::steps::{
    DeploymentColumns, DeploymentKey, ScenarioStep, Step, StepRow, find_steps, read_scenario_steps,
    step_rows,
};
use crate::window::{Window, rfc3339};

/// What to report on and where to write it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the query API.
    pub prometheus: String,
    /// The `cluster` label.
    pub cluster: String,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// The time window and resolution.
    pub window: Window,
    /// Cluster seconds per second of the query API's clock (a simulator's `--speed`).
    pub speed: f64,
    /// `rate()` window for CPU, seconds of the query API's clock.
    pub rate_window: f64,
    /// Changes this close together (seconds of the query API's clock) are one step, and a
    /// scaling counter's step and the desired replicas it set are one action.
    pub settle: f64,
    /// A kube-sim scenario file naming the steps.
    pub scenario: Option<PathBuf>,
    /// Deployments drawn in the step panels (all of the steps' namespaces when empty and
    /// no HPA scales one of them; else the HPAs' targets).
    pub plot_deployments: Vec<String>,
    /// Output directory (created).
    pub out: PathBuf,
    /// TrueType font for the plots.
    pub font: Option<PathBuf>,
    /// Plot size in pixels.
    pub size: (u32, u32),
    /// Per-request timeout.
    pub timeout: Duration,
    /// Largest answer read.
    pub max_answer_bytes: usize,
}

/// What a report wrote.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Files written, in order.
    pub files: Vec<PathBuf>,
    /// HPAs reported.
    pub hpas: usize,
    /// Scaling actions found, over all HPAs.
    pub scaling_events: u32,
    /// Steps found.
    pub steps: usize,
}

/// Runs the report.
///
/// # Errors
/// Anything [`Error`] names: arguments, the query API, no data, the scenario file, fonts,
/// drawing, writing.
pub async fn run(o: &Options) -> Result<Summary> {
    if !(o.speed.is_finite() && o.speed > 0.0) {
        return Err(Error::Argument {
            flag: "speed",
            value: o.speed.to_string(),
            reason: "must be a positive number".to_owned(),
        });
    }
    // Fonts and the scenario are files: read before any query, off the runtime's workers.
    let (font, scenario) = (o.font.clone(), o.scenario.clone());
    let names = blocking(move || -> Result<Vec<ScenarioStep>> {
        load_font(font.as_deref())?;
        scenario
            .as_deref()
            .map_or(Ok(Vec::new()), read_scenario_steps)
    })
    .await?;

    let api = QueryApi::new(&o.prometheus, o.timeout, o.max_answer_bytes)?;
    let sel = Selector::new(&o.cluster, o.namespace.as_deref());
    let w = &o.window;
    let range = |q: String| {
        let api = api.clone();
        async move { api.range(&q, w).await }
    };
    let answers = HpaAnswers {
        desired: range(sel.hpa_gauge(family::HPA_DESIRED)).await?,
        current: range(sel.hpa_gauge(family::HPA_CURRENT)).await?,
        min: range(sel.hpa_gauge(family::HPA_MIN)).await?,
        max: range(sel.hpa_gauge(family::HPA_MAX)).await?,
        utilization: range(sel.hpa_cpu_utilization(family::HPA_STATUS_METRIC)).await?,
        target: range(sel.hpa_cpu_utilization(family::HPA_SPEC_METRIC)).await?,
        events: range(sel.hpa_scaling_events()).await?,
        info: range(sel.hpa_targets()).await?,
        last_action: range(sel.hpa_last_actions()).await?,
    };
    let spec = range(sel.deployment_gauge(family::DEPLOYMENT_SPEC)).await?;
    let available = range(sel.deployment_gauge(family::DEPLOYMENT_AVAILABLE)).await?;
    let cpu = range(sel.cpu_per_pod(&promql_duration(o.rate_window))).await?;
    let restarts = range(sel.restarts()).await?;

    let settle = (o.settle / w.resolution).round() as usize;
    let hpas = timelines(w, &answers, settle);
    let mut deployments: BTreeMap<DeploymentKey, DeploymentColumns> = BTreeMap::new();
    let blank = vec![None; w.points()];
    for (list, pick) in [(&spec, 0usize), (&available, 1), (&cpu, 2), (&restarts, 3)] {
        for s in list {
            let key = deployment_key(s);
            let d = deployments.entry(key).or_insert_with(|| DeploymentColumns {
                spec: blank.clone(),
                available: blank.clone(),
                cpu_per_pod: blank.clone(),
                restarts: blank.clone(),
            });
            let column = on_grid(w, s);
            match pick {
                0 => d.spec = column,
                1 => d.available = column,
                2 => d.cpu_per_pod = column,
                _ => d.restarts = column,
            }
        }
    }
    // only Deployments that exist (have replicas) in the window, not pods' leftovers
    deployments.retain(|_, d| d.spec.iter().any(Option::is_some));
    if hpas.is_empty() && deployments.is_empty() {
        return Err(Error::NoData {
            cluster: o.cluster.clone(),
            from: rfc3339(w.from),
            to: rfc3339(w.to),
        });
    }

    let hpa_targets: BTreeSet<DeploymentKey> = hpas
        .iter()
        .filter_map(|h| match &h.scale_target {
            Some((kind, name)) if kind == "Deployment" => Some(DeploymentKey {
                namespace: h.key.namespace.clone(),
                name: name.clone(),
            }),
            _ => None,
        })
        .collect();
    let step_deployments: BTreeSet<DeploymentKey> = if names.is_empty() {
        deployments
            .keys()
            .filter(|k| !hpa_targets.contains(k))
            .cloned()
            .collect()
    } else {
        names
            .iter()
            .flat_map(|s| {
                s.scale.keys().map(|name| DeploymentKey {
                    namespace: s.namespace.clone(),
                    name: name.clone(),
                })
            })
            .collect()
    };
    let steps = find_steps(&deployments, &step_deployments, settle, &names);
    let rate_points = (o.rate_window / w.resolution).ceil() as usize;
    let rows = step_rows(&steps, &deployments, rate_points);
    let plotted: Vec<DeploymentKey> = {
        let namespaces: BTreeSet<&str> = steps
            .iter()
            .flat_map(|s| s.scale.keys().map(|k| k.namespace.as_str()))
            .collect();
        let in_steps = |k: &&DeploymentKey| namespaces.contains(k.namespace.as_str());
        let chosen: Vec<DeploymentKey> = if !o.plot_deployments.is_empty() {
            deployments
                .keys()
                .filter(in_steps)
                .filter(|k| o.plot_deployments.contains(&k.name))
                .cloned()
                .collect()
        } else {
            hpa_targets.iter().filter(in_steps).cloned().collect()
        };
        if chosen.is_empty() {
            deployments.keys().filter(in_steps).cloned().collect()
        } else {
            chosen
        }
    };
    info!(
        hpas = hpas.len(),
        deployments = deployments.len(),
        steps = steps.len(),
        "data read"
    );

    let job = Output {
        options: o.clone(),
        hpas,
        deployments,
        steps,
        rows,
        plotted,
        scenario_name: o
            .scenario
            .as_deref()
            .and_then(Path::file_stem)
            .map(|s| s.to_string_lossy().into_owned()),
    };
    blocking(move || job.write()).await
}

/// Runs blocking work (files, drawing) off the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn deployment_key(s: &Series) -> DeploymentKey {
    DeploymentKey {
        namespace: s.label("namespace").to_owned(),
        name: s.label("deployment").to_owned(),
    }
}

/// Everything assembled, ready to be written.
struct Output {
    options: Options,
    hpas: Vec<HpaTimeline>,
    deployments: BTreeMap<DeploymentKey, DeploymentColumns>,
    steps: Vec<Step>,
    rows: Vec<StepRow>,
    plotted: Vec<DeploymentKey>,
    scenario_name: Option<String>,
}

impl Output {
    fn write(self) -> Result<Summary> {
        let o = &self.options;
        std::fs::create_dir_all(&o.out).map_err(|source| Error::Write {
            path: o.out.clone(),
            source,
        })?;
        let axis = TimeAxis {
            window: o.window,
            speed: o.speed,
        };
        let mut summary = Summary {
            hpas: self.hpas.len(),
            scaling_events: self
                .hpas
                .iter()
                .flat_map(|h| &h.events)
                .map(|e| e.count)
                .sum(),
            steps: self.steps.len(),
            ..Summary::default()
        };
        for h in &self.hpas {
            let stem = format!(
                "hpa-{}-{}",
                file_part(&h.key.namespace),
                file_part(&h.key.name)
            );
            let path = o.out.join(format!("{stem}.csv"));
            write_file(
                &path,
                &csv::table(&csv::HPA_HEADER, csv::hpa_rows(h, &o.window, o.speed)),
            )?;
            summary.files.push(path);
            let path = o.out.join(format!("{stem}.png"));
            hpa_png(&path, o.size, &axis, h)?;
            summary.files.push(path);
        }
        if !self.steps.is_empty() {
            let path = o.out.join("steps.csv");
            write_file(
                &path,
                &csv::table(
                    &csv::STEPS_HEADER,
                    csv::step_table_rows(&self.rows, &o.window, o.speed),
                ),
            )?;
            summary.files.push(path);
            let path = o.out.join("steps.png");
            let plotted: Vec<(&DeploymentKey, &DeploymentColumns)> = self
                .plotted
                .iter()
                .filter_map(|k| self.deployments.get_key_value(k))
                .collect();
            let names: Vec<&str> = plotted.iter().map(|(k, _)| k.name.as_str()).collect();
            let title = format!(
                "{}: {} per step, replicas available (solid) and CPU per pod in millicores (dashed, right)",
                self.scenario_name.as_deref().unwrap_or(&o.cluster),
                names.join(", ")
            );
            let (w, h) = o.size;
            let (rows, cols) = crate::plot::grid_shape(self.steps.len());
            // panels no smaller than about 320 x 220 pixels
            let size = (w.max(cols as u32 * 320), h.max(rows as u32 * 220 + 40));
            steps_png(&path, size, &axis, &self.steps, &plotted, &title)?;
            summary.files.push(path);
            let path = o.out.join("timeline.png");
            let title = format!(
                "{}: {} over the run, steps numbered as in steps.csv",
                self.scenario_name.as_deref().unwrap_or(&o.cluster),
                names.join(", ")
            );
            timeline_png(&path, o.size, &axis, &self.steps, &plotted, &title)?;
            summary.files.push(path);
        }
        Ok(summary)
    }
}

/// A name made safe for a file name: `[A-Za-z0-9._-]`, anything else `_`.
fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

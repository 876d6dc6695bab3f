//! The steps of an experiment (a load matrix's "2 servers, 10 clients"), found in the data,
//! and what each Deployment did during each.
//!
//! A step is what the experimenter changed: the replicas asked of the *step Deployments*
//! (`kube_deployment_spec_replicas`), the ones the scenario scales (`kubectl scale`) rather
//! than an HPA. A step begins where any of them changes; changes closer together than
//! `settle` points are one step (a step scaling two Deployments may reach the relay in two
//! batches). Step names come from the scenario file when one is given (its `steps:` are
//! aligned with the steps found by the replicas they set), else from the replicas themselves
//! (`echo-client=10 echo-server=2`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::column::{Column, before, last_in};
use crate::error::{Error, Result};

/// A Deployment, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Deployment's columns over the window.
#[derive(Debug, Clone, Default)]
pub struct DeploymentColumns {
    /// Replicas asked (`spec_replicas`).
    pub spec: Column,
    /// Replicas available.
    pub available: Column,
    /// Mean CPU per pod, CPU seconds per second of the query API's clock.
    pub cpu_per_pod: Column,
    /// Restarts summed over its current pods.
    pub restarts: Column,
}

/// One step of a scenario file (`steps:`): its name and the replicas it sets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ScenarioStep {
    /// The step's name.
    pub name: String,
    /// Namespace of the Deployments it scales.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Deployment → replicas.
    #[serde(default)]
    pub scale: BTreeMap<String, u32>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Deserialize)]
struct ScenarioFile {
    #[serde(default)]
    steps: Vec<ScenarioStep>,
}

/// Reads the `steps:` of a kube-sim scenario file (`sim/scenarios/*.yaml`); everything else
/// in the file is ignored.
///
/// # Errors
/// [`Error::Scenario`] when the file cannot be read, is not YAML of that shape, or has no
/// steps.
pub fn read_scenario_steps(path: &Path) -> Result<Vec<ScenarioStep>> {
    let bad = |reason: String| Error::Scenario {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let file: ScenarioFile = serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if file.steps.is_empty() {
        return Err(bad("it has no `steps:`".to_owned()));
    }
    Ok(file.steps)
}

/// A step found in the data: points `start..end` of the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// 1-based, in time order.
    pub number: usize,
    /// Its name.
    pub name: String,
    /// First point.
    pub start: usize,
    /// One past its last point.
    pub end: usize,
    /// Replicas asked of each step Deployment during it.
    pub scale: BTreeMap<DeploymentKey, f64>,
}

/// Finds the steps: where the replicas asked of `step_deployments` change (changes within
/// `settle` points of a step's start belong to it), named from `names` when they match.
pub fn find_steps(
    deployments: &BTreeMap<DeploymentKey, DeploymentColumns>,
    step_deployments: &BTreeSet<DeploymentKey>,
    settle: usize,
    names: &[ScenarioStep],
) -> Vec<Step> {
    let points = deployments
        .values()
        .map(|d| d.spec.len())
        .max()
        .unwrap_or(0);
    let columns: Vec<(&DeploymentKey, &Column)> = deployments
        .iter()
        .filter(|(k, _)| step_deployments.contains(k))
        .map(|(k, d)| (k, &d.spec))
        .collect();
    let mut steps: Vec<Step> = Vec::new();
    let mut current: BTreeMap<DeploymentKey, f64> = BTreeMap::new();
    for i in 0..points {
        let mut changed = false;
        for (key, column) in &columns {
            if let Some(v) = column.get(i).copied().flatten()
                && current.get(*key) != Some(&v)
            {
                current.insert((*key).clone(), v);
                changed = true;
            }
        }
        if !changed {
            continue;
        }
        match steps.last_mut() {
            Some(last) if i - last.start <= settle => last.scale = current.clone(),
            _ => {
                if let Some(last) = steps.last_mut() {
                    last.end = i;
                }
                steps.push(Step {
                    number: steps.len() + 1,
                    name: String::new(),
                    start: i,
                    end: points,
                    scale: current.clone(),
                });
            }
        }
    }
    let named = align(&steps, names);
    for (step, name) in steps.iter_mut().zip(named) {
        step.name = match name {
            Some(s) => s.name.clone(),
            None => step
                .scale
                .iter()
                .map(|(k, v)| format!("{}={v}", k.name))
                .collect::<Vec<_>>()
                .join(" "),
        };
    }
    steps
}

/// Whether `step` sets the replicas `found` has (a step that scales nothing never matches:
/// Prometheus cannot see it).
fn matches(found: &Step, step: &ScenarioStep) -> bool {
    !step.scale.is_empty()
        && step.scale.iter().all(|(name, n)| {
            let key = DeploymentKey {
                namespace: step.namespace.clone(),
                name: name.clone(),
            };
            found.scale.get(&key) == Some(&f64::from(*n))
        })
}

/// The scenario step each found step is, in order: the alignment matching the most of them
/// (a longest common subsequence). Greedy matching would go wrong where the data begin in
/// a state a later step sets again (clients at 0 before the load and after it), and data
/// may begin after the first steps (the sender connected late), so any step may go unseen.
fn align<'a>(found: &[Step], names: &'a [ScenarioStep]) -> Vec<Option<&'a ScenarioStep>> {
    let (n, m) = (found.len(), names.len());
    // best[i][j]: most matches of found[i..] with names[j..]
    let mut best = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let paired = if matches(&found[i], &names[j]) {
                best[i + 1][j + 1] + 1
            } else {
                0
            };
            best[i][j] = paired.max(best[i + 1][j]).max(best[i][j + 1]);
        }
    }
    let mut out = vec![None; n];
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if matches(&found[i], &names[j]) && best[i][j] == best[i + 1][j + 1] + 1 {
            out[i] = Some(&names[j]);
            i += 1;
            j += 1;
        } else if best[i][j] == best[i + 1][j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// What one Deployment did during one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    /// The step's number.
    pub number: usize,
    /// The step's name.
    pub step: String,
    /// The step's first point.
    pub start: usize,
    /// Its length in points.
    pub points: usize,
    /// The Deployment.
    pub deployment: DeploymentKey,
    /// Replicas asked at the step's end.
    pub asked: Option<f64>,
    /// Replicas available at the step's end.
    pub reached: Option<f64>,
    /// Points from the step's start until available replicas reached `asked` for good
    /// (`None` when they had not at the step's end).
    pub points_to_reach: Option<usize>,
    /// Mean CPU per pod over the step (the query API's clock).
    pub cpu_mean: Option<f64>,
    /// Highest CPU per pod in the step (the query API's clock).
    pub cpu_max: Option<f64>,
    /// Restarts during the step (increases of the pods' restart counts).
    pub restarts: u64,
}

/// One row per step and Deployment of the steps' namespaces. CPU is averaged over the
/// step's points from `cpu_skip` points after its start (the rate window: before that,
/// `rate()` still reaches back into the previous step), or over the whole step when it is
/// shorter than that.
pub fn step_rows(
    steps: &[Step],
    deployments: &BTreeMap<DeploymentKey, DeploymentColumns>,
    cpu_skip: usize,
) -> Vec<StepRow> {
    let namespaces: BTreeSet<&str> = steps
        .iter()
        .flat_map(|s| s.scale.keys().map(|k| k.namespace.as_str()))
        .collect();
    let mut rows = Vec::new();
    for step in steps {
        let range = step.start..step.end;
        for (key, d) in deployments
            .iter()
            .filter(|(k, _)| namespaces.contains(k.namespace.as_str()))
        {
            let asked = last_in(&d.spec, range.clone());
            let reached = last_in(&d.available, range.clone());
            let points_to_reach = match (asked, reached) {
                (Some(a), Some(r)) if a == r => {
                    // the first point after which available stays at `asked`
                    let mut since = step.end;
                    for i in range.clone().rev() {
                        match d.available.get(i).copied().flatten() {
                            Some(v) if v != a => break,
                            _ => since = i,
                        }
                    }
                    Some(since - step.start)
                }
                _ => None,
            };
            let cpu_in = |r: std::ops::Range<usize>| -> Vec<f64> {
                d.cpu_per_pod
                    .get(r)
                    .unwrap_or_default()
                    .iter()
                    .flatten()
                    .copied()
                    .collect()
            };
            let mut cpu = cpu_in((step.start + cpu_skip).min(step.end)..step.end);
            if cpu.is_empty() {
                cpu = cpu_in(range.clone());
            }
            let cpu_mean = (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64);
            let cpu_max = cpu.iter().copied().reduce(f64::max);
            let mut restarts = 0u64;
            let mut last = before(&d.restarts, step.start);
            for i in range.clone() {
                if let Some(v) = d.restarts.get(i).copied().flatten() {
                    if let Some(prev) = last
                        && v > prev
                    {
                        restarts += (v - prev).round() as u64;
                    }
                    last = Some(v);
                }
            }
            rows.push(StepRow {
                number: step.number,
                step: step.name.clone(),
                start: step.start,
                points: step.end - step.start,
                deployment: key.clone(),
                asked,
                reached,
                points_to_reach,
                cpu_mean,
                cpu_max,
                restarts,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> DeploymentKey {
        DeploymentKey {
            namespace: "echo".to_owned(),
            name: name.to_owned(),
        }
    }

    fn col(values: &[f64]) -> Column {
        values.iter().map(|v| (!v.is_nan()).then_some(*v)).collect()
    }

    #[test]
    fn steps_are_found_merged_and_named() {
        let n = f64::NAN;
        let mut deployments = BTreeMap::new();
        // the server scaled 2 → 4 one point after the clients moved 100 → 10: one step
        deployments.insert(
            key("client"),
            DeploymentColumns {
                spec: col(&[n, 10.0, 10.0, 50.0, 50.0, 50.0, 10.0, 10.0, 10.0, 10.0]),
                ..DeploymentColumns::default()
            },
        );
        deployments.insert(
            key("server"),
            DeploymentColumns {
                spec: col(&[2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0]),
                available: col(&[2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 2.0, 2.0, 3.0, 4.0]),
                cpu_per_pod: col(&[0.1, 0.1, 0.1, 0.3, 0.5, 0.5, 0.2, 0.2, 0.1, 0.1]),
                restarts: col(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 2.0, 3.0]),
            },
        );
        let step_deployments: BTreeSet<_> = [key("client"), key("server")].into();
        let names = vec![
            ScenarioStep {
                name: "c10".into(),
                namespace: "echo".into(),
                scale: [("client".to_owned(), 10)].into(),
            },
            ScenarioStep {
                name: "c50".into(),
                namespace: "echo".into(),
                scale: [("client".to_owned(), 50)].into(),
            },
            ScenarioStep {
                name: "s4-c10".into(),
                namespace: "echo".into(),
                scale: [("client".to_owned(), 10), ("server".to_owned(), 4)].into(),
            },
        ];
        let steps = find_steps(&deployments, &step_deployments, 1, &names);
        let got: Vec<_> = steps
            .iter()
            .map(|s| (s.name.as_str(), s.start, s.end))
            .collect();
        // the first point (server alone) and the next (clients appear) are one step
        assert_eq!(got, vec![("c10", 0, 3), ("c50", 3, 6), ("s4-c10", 6, 10)]);

        let unnamed = find_steps(&deployments, &step_deployments, 1, &[]);
        assert_eq!(unnamed[2].name, "client=10 server=4");

        let rows = step_rows(&steps, &deployments, 0);
        let server: Vec<_> = rows
            .iter()
            .filter(|r| r.deployment == key("server"))
            .collect();
        assert_eq!(server.len(), 3);
        // c50: asked 2, available dipped to 1 and came back at point 6 (not within the step)
        assert_eq!(
            (
                server[1].asked,
                server[1].reached,
                server[1].points_to_reach
            ),
            (Some(2.0), Some(1.0), None)
        );
        // s4-c10: 4 reached at point 9, 3 points after the step began
        assert_eq!(
            (
                server[2].asked,
                server[2].reached,
                server[2].points_to_reach
            ),
            (Some(4.0), Some(4.0), Some(3))
        );
        assert_eq!(server[0].points_to_reach, Some(0));
        assert_eq!(server[1].cpu_max, Some(0.5));
        assert!((server[1].cpu_mean.unwrap_or_default() - 1.3 / 3.0).abs() < 1e-9);
        // a restart in c50 (the pod then replaced: its count gone), two more in s4-c10
        assert_eq!(
            server.iter().map(|r| r.restarts).collect::<Vec<_>>(),
            vec![0, 1, 3]
        );
    }

    #[test]
    fn names_follow_the_best_alignment_not_the_first_match() {
        let mut deployments = BTreeMap::new();
        // clients 0 (before the load), 30, 0 (the cooldown): the first 0 is not the cooldown
        deployments.insert(
            key("client"),
            DeploymentColumns {
                spec: col(&[0.0, 0.0, 30.0, 30.0, 0.0, 0.0]),
                ..DeploymentColumns::default()
            },
        );
        let step = |name: &str, clients: Option<u32>| ScenarioStep {
            name: name.into(),
            namespace: "echo".into(),
            scale: clients
                .map(|n| ("client".to_owned(), n))
                .into_iter()
                .collect(),
        };
        let names = vec![
            step("idle", None),
            step("load", Some(30)),
            step("pod-deleted", None),
            step("cooldown", Some(0)),
        ];
        let steps = find_steps(&deployments, &[key("client")].into(), 0, &names);
        let got: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, vec!["client=0", "load", "cooldown"]);
        // data that begin after the first step still get the later names
        let late = vec![
            step("c10", Some(10)),
            step("c0", Some(0)),
            step("c30", Some(30)),
            step("end", Some(0)),
        ];
        let steps = find_steps(&deployments, &[key("client")].into(), 0, &late);
        let got: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, vec!["c0", "c30", "end"]);
    }

    #[test]
    fn scenario_files_give_their_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, "name: x\nsteps:\n  - {at: 0s, name: a, namespace: echo, scale: {web: 2}}\n  - {at: 60s, name: b}\n").expect("write");
        let steps = read_scenario_steps(&path).expect("steps");
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].scale.get("web"), Some(&2));
        assert_eq!(steps[1].namespace, "default");
        std::fs::write(&path, "name: x\n").expect("write");
        assert!(matches!(
            read_scenario_steps(&path),
            Err(Error::Scenario { .. })
        ));
        assert!(matches!(
            read_scenario_steps(&dir.path().join("none")),
            Err(Error::Scenario { .. })
        ));
    }
}

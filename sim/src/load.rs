//! The load model: clients over time → CPU and memory per pod.
//!
//! Each deployment has a load curve (clients over time, steps or straight lines), or takes
//! its clients from other deployments' Ready pods (`clients_from`: load generators). The
//! clients' CPU demand is spread evenly over the deployment's Ready pods (a Service only
//! sends traffic to Ready endpoints); every running container also burns an idle amount.
//! Each pod's share gets seeded noise and is capped at its CPU limit (CFS throttling).
//! The kubelet integrates these rates into cumulative CPU seconds; metrics-server turns the
//! counters back into rates over its window (see `cluster.rs`).

use rand::Rng;
use rand::rngs::StdRng;

use crate::scenario::{Interpolation, LoadSpec};

/// A deployment's load: the curve plus the per-pod cost model.
#[derive(Debug, Clone)]
pub(crate) struct LoadModel {
    idle_cpu_millis: f64,
    cpu_per_client_millis: f64,
    memory_bytes: f64,
    memory_per_client_bytes: f64,
    noise: f64,
    interpolation: Interpolation,
    /// (sim milliseconds, clients), in time order.
    curve: Vec<(u64, f64)>,
    /// A `set_load` override: from this sim time on, this many clients.
    override_clients: Option<(u64, f64)>,
    /// Client deployments (name, weight) whose Ready pods are the clients, if any.
    pub clients_from: Vec<(String, f64)>,
    /// Their weighted count, as of the last accounting second.
    derived_clients: f64,
}

impl LoadModel {
    /// The model a scenario describes.
    pub(crate) fn from_spec(spec: &LoadSpec) -> Self {
        LoadModel {
            idle_cpu_millis: spec.idle_cpu.0 as f64,
            cpu_per_client_millis: spec.cpu_per_client.0 as f64,
            memory_bytes: spec.memory.0 as f64,
            memory_per_client_bytes: spec.memory_per_client.0 as f64,
            noise: spec.noise,
            interpolation: spec.interpolation,
            curve: spec.curve.iter().map(|p| (p.at.ms(), p.clients)).collect(),
            override_clients: None,
            clients_from: spec
                .clients_from
                .iter()
                .map(|c| (c.deployment.clone(), c.weight))
                .collect(),
            derived_clients: 0.0,
        }
    }

    /// The clients counted from the client deployments' Ready pods (see `clients_from`).
    pub(crate) fn set_derived_clients(&mut self, clients: f64) {
        self.derived_clients = clients.max(0.0);
    }

    /// From `now_ms` on, `clients` regardless of the curve.
    pub(crate) fn set_clients(&mut self, now_ms: u64, clients: f64) {
        self.override_clients = Some((now_ms, clients.max(0.0)));
    }

    /// Clients at sim time `t_ms`.
    pub(crate) fn clients_at(&self, t_ms: u64) -> f64 {
        if let Some((from, clients)) = self.override_clients
            && t_ms >= from
        {
            return clients;
        }
        if !self.clients_from.is_empty() {
            return self.derived_clients;
        }
        let idx = self.curve.partition_point(|(at, _)| *at <= t_ms);
        if idx == 0 {
            return 0.0;
        }
        let (at0, c0) = self.curve[idx - 1];
        match (self.interpolation, self.curve.get(idx)) {
            (Interpolation::Linear, Some(&(at1, c1))) if at1 > at0 => {
                let f = (t_ms - at0) as f64 / (at1 - at0) as f64;
                c0 + (c1 - c0) * f
            }
            _ => c0,
        }
    }

    /// CPU rate (millicores) of one running container at `t_ms`; `serving` tells whether
    /// the pod is Ready (receives its share of clients) and `ready_pods` how many share.
    pub(crate) fn cpu_millis(
        &self,
        t_ms: u64,
        serving: bool,
        ready_pods: usize,
        limit_millis: Option<u64>,
        rng: &mut StdRng,
    ) -> f64 {
        let share = if serving && ready_pods > 0 {
            self.clients_at(t_ms) * self.cpu_per_client_millis / ready_pods as f64
        } else {
            0.0
        };
        let jitter = if self.noise > 0.0 {
            1.0 + self.noise * rng.random_range(-1.0..=1.0)
        } else {
            1.0
        };
        let rate = (self.idle_cpu_millis + share) * jitter;
        match limit_millis {
            Some(limit) => rate.min(limit as f64),
            None => rate,
        }
        .max(0.0)
    }

    /// Working-set memory (bytes) of one running container at `t_ms`.
    pub(crate) fn memory_bytes(&self, t_ms: u64, serving: bool, ready_pods: usize) -> u64 {
        let share = if serving && ready_pods > 0 {
            self.clients_at(t_ms) * self.memory_per_client_bytes / ready_pods as f64
        } else {
            0.0
        };
        (self.memory_bytes + share).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::LoadPoint;
    use crate::units::{Cpu, Dur};
    use rand::SeedableRng;
    use std::time::Duration;

    fn model(interpolation: Interpolation, noise: f64) -> LoadModel {
        LoadModel::from_spec(&LoadSpec {
            idle_cpu: Cpu(2),
            cpu_per_client: Cpu(10),
            noise,
            interpolation,
            curve: vec![
                LoadPoint {
                    at: Dur(Duration::from_secs(10)),
                    clients: 10.0,
                },
                LoadPoint {
                    at: Dur(Duration::from_secs(20)),
                    clients: 30.0,
                },
            ],
            ..LoadSpec::default()
        })
    }

    #[test]
    fn step_curves_hold_each_point_until_the_next() {
        let m = model(Interpolation::Step, 0.0);
        assert_eq!(m.clients_at(0), 0.0);
        assert_eq!(m.clients_at(10_000), 10.0);
        assert_eq!(m.clients_at(15_000), 10.0);
        assert_eq!(m.clients_at(60_000), 30.0);
    }

    #[test]
    fn linear_curves_interpolate() {
        let m = model(Interpolation::Linear, 0.0);
        assert_eq!(m.clients_at(15_000), 20.0);
        assert_eq!(m.clients_at(25_000), 30.0);
    }

    #[test]
    fn clients_are_shared_by_ready_pods_and_capped_by_the_limit() {
        let m = model(Interpolation::Step, 0.0);
        let mut rng = StdRng::seed_from_u64(0);
        // 10 clients × 10m over 4 ready pods = 25m each, plus 2m idle.
        assert_eq!(m.cpu_millis(10_000, true, 4, None, &mut rng), 27.0);
        assert_eq!(m.cpu_millis(10_000, false, 4, None, &mut rng), 2.0);
        assert_eq!(m.cpu_millis(10_000, true, 1, Some(50), &mut rng), 50.0);
    }

    #[test]
    fn noise_stays_within_its_bound_and_follows_the_seed() {
        let m = model(Interpolation::Step, 0.1);
        let mut a = StdRng::seed_from_u64(9);
        let mut b = StdRng::seed_from_u64(9);
        for _ in 0..100 {
            let x = m.cpu_millis(10_000, true, 1, None, &mut a);
            assert!((91.8..=112.2).contains(&x), "{x}");
            assert_eq!(x, m.cpu_millis(10_000, true, 1, None, &mut b));
        }
    }

    #[test]
    fn an_override_replaces_the_curve_from_its_time() {
        let mut m = model(Interpolation::Step, 0.0);
        m.set_clients(12_000, 3.0);
        assert_eq!(m.clients_at(11_000), 10.0);
        assert_eq!(m.clients_at(12_000), 3.0);
        assert_eq!(m.clients_at(90_000), 3.0);
    }
}

//! What every simulated sender reports: `series` series shaped like the sender's catalogue
//! (per pod five phase series, a memory gauge and a cpu counter), its snapshot split into
//! frames, its steady batches of changes, and the same series as Prometheus text for the
//! Pushgateway baseline.

use kube_relay_proto::{Batch, FamilyDef, MetricKind, SeriesDef, SnapshotPart, Updates, Value};

const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// Series per snapshot frame: about 400 kB encoded, well under the default 1 MiB limit.
const SERIES_PER_PART: usize = 4000;

/// The families every sender defines.
pub fn families() -> Vec<FamilyDef> {
    vec![
        FamilyDef {
            id: 0,
            name: "kube_pod_status_phase".into(),
            help: "The pods current phase.".into(),
            kind: MetricKind::Gauge,
        },
        FamilyDef {
            id: 1,
            name: "container_memory_working_set_bytes".into(),
            help: "Current working set of the container in bytes.".into(),
            kind: MetricKind::Gauge,
        },
        FamilyDef {
            id: 2,
            name: "container_cpu_usage_seconds".into(),
            help: "Cumulative cpu time consumed in seconds.".into(),
            kind: MetricKind::Counter,
        },
    ]
}

/// The series of one sender and their first values; `sender` makes pod names and uids
/// differ between senders (as in real clusters, where nothing is shared).
pub fn series(sender: usize, n: u32) -> (Vec<SeriesDef>, Vec<(u32, Value)>) {
    let mut defs = Vec::with_capacity(n as usize);
    let mut vals = Vec::with_capacity(n as usize);
    let mut id = 0;
    let mut pod = 0u32;
    while id < n {
        let ns = format!("team-{}", pod % 40);
        let name = format!("web-{pod}-7d9f8c6b5-x{:04x}", (pod * 7919) % 65_536);
        let uid = format!("5f1c{pod:08x}-1b2c-4d3e-9f00-{sender:012x}");
        let base = [
            ("namespace".to_owned(), ns.clone()),
            ("pod".to_owned(), name.clone()),
            ("uid".to_owned(), uid),
        ];
        for (i, phase) in PHASES.iter().enumerate() {
            let mut labels = base.to_vec();
            labels.push(("phase".into(), (*phase).into()));
            defs.push(SeriesDef {
                id,
                family: 0,
                labels,
            });
            vals.push((id, Value::Int(i64::from(i == 1))));
            id += 1;
        }
        let container = [
            ("namespace".to_owned(), ns),
            ("pod".to_owned(), name),
            ("container".to_owned(), "app".to_owned()),
            (
                "image".to_owned(),
                "registry.example/shop/web:1.42.0".to_owned(),
            ),
        ];
        for family in [1, 2] {
            defs.push(SeriesDef {
                id,
                family,
                labels: container.to_vec(),
            });
            vals.push((
                id,
                if family == 1 {
                    Value::Int(180_000_000 + i64::from(pod) * 4096)
                } else {
                    Value::Float(1234.5 + f64::from(pod) * 0.25)
                },
            ));
            id += 1;
        }
        pod += 1;
    }
    defs.truncate(n as usize);
    vals.truncate(n as usize);
    (defs, vals)
}

/// The snapshot of sender `sender`'s `n` series as batches `first_seq..`, stamped `now_ms`.
pub fn snapshot(sender: usize, n: u32, first_seq: u64, now_ms: u64) -> Vec<Batch> {
    let (defs, vals) = series(sender, n);
    let parts = defs.len().div_ceil(SERIES_PER_PART).max(1);
    (0..parts)
        .map(|p| {
            let range = p * SERIES_PER_PART..((p + 1) * SERIES_PER_PART).min(defs.len());
            Batch {
                observed_at_ms: now_ms,
                seq: first_seq + p as u64,
                snapshot: Some(SnapshotPart {
                    first: p == 0,
                    last: p == parts - 1,
                }),
                families: if p == 0 { families() } else { Vec::new() },
                series: defs[range.clone()].to_vec(),
                updates: Updates::from_unsorted(vals[range].to_vec()),
                removals: Vec::new(),
            }
        })
        .collect()
}

/// A steady batch: `changes` series from `*cursor` on (wrapping over `n`) get new values,
/// so every series changes once per `n / changes` batches.
pub fn changes(seq: u64, n: u32, changes: u32, cursor: &mut u32, now_ms: u64) -> Batch {
    let pairs = (0..changes.min(n))
        .map(|_| {
            let id = *cursor;
            *cursor = (*cursor + 1) % n.max(1);
            // Values that differ from the last ones the series had, as real changes do.
            (id, Value::Int((seq as i64) * 7 + i64::from(id)))
        })
        .collect();
    Batch {
        observed_at_ms: now_ms,
        seq,
        snapshot: None,
        families: Vec::new(),
        series: Vec::new(),
        updates: Updates::from_unsorted(pairs),
        removals: Vec::new(),
    }
}

/// Sender `sender`'s series as Prometheus text, labelled `cluster`, for Pushgateway.
pub fn as_text(sender: usize, n: u32, cluster: &str) -> String {
    let (defs, vals) = series(sender, n);
    let mut body = String::with_capacity(n as usize * 160);
    for fam in families() {
        let (sample, kind) = match fam.kind {
            MetricKind::Counter => (format!("{}_total", fam.name), "counter"),
            MetricKind::Gauge => (fam.name.clone(), "gauge"),
        };
        body.push_str(&format!(
            "# HELP {sample} {}\n# TYPE {sample} {kind}\n",
            fam.help
        ));
        for (def, (_, v)) in defs.iter().zip(&vals).filter(|(d, _)| d.family == fam.id) {
            body.push_str(&sample);
            body.push_str(&format!("{{cluster=\"{cluster}\""));
            for (k, val) in &def.labels {
                body.push_str(&format!(",{k}=\"{val}\""));
            }
            body.push_str(&format!("}} {}\n", v.as_f64()));
        }
    }
    body
}

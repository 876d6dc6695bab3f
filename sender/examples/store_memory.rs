//! Scratch: RSS of the derived state for the pods in a PodList JSON file.
use k8s_openapi::api::core::v1::Pod;
use kube_relay_sender::store::SeriesStore;
use kube_relay_sender::translate::pods::{pod_key, pod_series};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .expect("rss")
        .split_whitespace()
        .nth(1)
        .expect("n")
        .parse()
        .expect("num");
    kb / 1024.0
}

fn main() {
    use std::io::BufRead;
    let path = std::env::args().nth(1).expect("path");
    let base = rss_mib();
    let mut store = SeriesStore::new(1);
    let mut n = 0;
    for line in std::io::BufReader::new(std::fs::File::open(&path).expect("open")).lines() {
        let p: Pod = serde_json::from_str(&line.expect("line")).expect("pod");
        n += 1;
        let key = pod_key(&p).expect("key");
        store.apply(&key, &pod_series(&p));
    }
    let with_pending = rss_mib();
    let mut n_batches = 0;
    while let Some(b) = store.take_delta(1 << 20) {
        n_batches += 1;
        drop(b);
    }
    let with_batches = rss_mib();
    let after = rss_mib();
    println!("batches {n_batches}");
    println!(
        "pods {} series {} atoms {}; RSS over base: {:.1} MiB with pending, {:.1} MiB with all delta batches, {:.1} MiB after",
        n,
        store.len(),
        store.distinct_label_values(),
        with_pending - base,
        with_batches - base,
        after - base
    );
}

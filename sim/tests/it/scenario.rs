//! Scenario files: the built-ins load, and mistakes are reported naming the bad field.

use kube_relay_sim::{Error, Scenario};

fn error(yaml: &str) -> String {
    match Scenario::from_yaml(yaml) {
        Ok(_) => panic!("scenario should be rejected:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(
            message.contains(p),
            "error {message:?} should mention {p:?}"
        );
    }
}

#[test]
fn unknown_fields_are_named_with_their_path() {
    let e = error("deployments:\n  - name: web\n    image: nginx\n    replica: 2\n");
    assert_mentions(
        &e,
        &[
            "deployments[0]",
            "unknown field `replica`",
            "replicas",
            "line 4",
        ],
    );
    let e = error("hpas:\n  - {name: a, target: web, max: 3, cpu: 50}\n");
    assert_mentions(&e, &["hpas[0]", "unknown field `cpu`"]);
    let e = error("seeed: 3\n");
    assert_mentions(&e, &["unknown field `seeed`", "seed"]);
    let e = error("deployments: [{name: web, image: nginx, load: {curve: [{at: 1s, client: 5}]}}]");
    assert_mentions(
        &e,
        &["deployments[0].load.curve[0]", "unknown field `client`"],
    );
}

#[test]
fn bad_values_are_named_with_their_path() {
    let e = error("deployments: [{name: web, image: nginx, startup: 3x}]");
    assert_mentions(&e, &["deployments[0].startup", "invalid duration `3x`"]);
    let e = error("deployments: [{name: web, image: nginx, requests: {cpu: lots}}]");
    assert_mentions(
        &e,
        &[
            "deployments[0].requests",
            "invalid CPU quantity `lots`",
            "line 1",
        ],
    );
    let e = error("faults: [{at: 5s, kind: meteor}]");
    assert_mentions(
        &e,
        &["faults[0].kind", "unknown variant `meteor`", "drop_watches"],
    );
    let e = error("crashes: [{at: 5s, deployment: web, action: explode}]");
    assert_mentions(&e, &["crashes[0].action", "unknown variant `explode`"]);
}

#[test]
fn inconsistent_scenarios_name_the_field() {
    let e =
        error("deployments: [{name: web, image: nginx}]\nhpas: [{name: h, target: api, max: 3}]");
    assert_mentions(&e, &["hpas[0].target", "no deployment named `api`"]);
    let e = error(
        "deployments: [{name: web, image: nginx}]\nhpas: [{name: h, target: web, min: 5, max: 3}]",
    );
    assert_mentions(&e, &["hpas[0].min", "min (5) exceeds max (3)"]);
    let e = error("deployments: [{name: Web_1, image: nginx}]");
    assert_mentions(&e, &["deployments[0].name", "`Web_1` is not a valid name"]);
    let e = error(
        "deployments: [{name: web, image: nginx, load: {curve: [{at: 20s, clients: 1}, {at: 10s, clients: 2}]}}]",
    );
    assert_mentions(&e, &["deployments[0].load.curve[1].at", "time order"]);
    let e = error("crashes: [{at: 5s, deployment: ghost}]");
    assert_mentions(&e, &["crashes[0].deployment", "ghost"]);
    let e = error("faults: [{at: 5s, kind: errors, resource: widgets}]");
    assert_mentions(&e, &["faults[0].resource", "unknown resource `widgets`"]);
    assert!(matches!(
        Scenario::from_yaml("nodes: {count: 0}"),
        Err(Error::ScenarioInvalid { field, .. }) if field == "nodes.count"
    ));
}

#[test]
fn builtins_load_by_name_and_unknown_names_list_them() {
    for name in ["demo", "load-test", "bulk", "faults", "api-faults"] {
        let s = Scenario::builtin(name).expect("built-in scenario");
        assert_eq!(s.name(), name);
    }
    let e = Scenario::builtin("nope").expect_err("unknown").to_string();
    assert_mentions(
        &e,
        &[
            "`nope`",
            "demo",
            "load-test",
            "bulk",
            "faults",
            "api-faults",
        ],
    );
    assert!(
        !Scenario::from_yaml("metrics: {enabled: false}")
            .expect("parses")
            .serves_metrics()
    );
}

#[test]
fn scenario_files_load_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, "name: from-disk\nseed: 9\n").expect("write");
    let s = Scenario::from_name_or_path(path.to_str().expect("utf-8 path")).expect("loads");
    assert_eq!((s.name(), s.seed()), ("from-disk", 9));
    let e = Scenario::from_name_or_path("/nonexistent/s.yaml").expect_err("missing file");
    assert!(matches!(e, Error::ScenarioRead { .. }), "{e}");
}

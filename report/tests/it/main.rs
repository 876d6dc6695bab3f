//! kube-relay-report's integration tests (one binary; see CONTRIBUTING.md).

mod end_to_end;

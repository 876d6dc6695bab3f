//! kube-relay-report's integration tests (one binary; see CONTRIBUTING.md).

mod bad_answers;
mod end_to_end;

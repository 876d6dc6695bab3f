//! API faults: the kinds a scenario or [`crate::SimHandle::inject_fault`] can inject, and
//! the pending request faults the HTTP layer consumes one request at a time.

use std::time::Duration;

/// An API fault to inject (see [`crate::SimHandle::inject_fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every open watch stream is cut (the connection is aborted mid-stream).
    DropWatches,
    /// The watch history and paged-list snapshots are compacted away, and watches are cut:
    /// clients that resume from an old resourceVersion get `410 Gone` and must relist.
    ExpireResourceVersions,
    /// The next `requests` API requests (optionally only for one resource, by plural name)
    /// fail with `500 InternalError`.
    Errors {
        /// How many requests fail.
        requests: u32,
        /// Only requests for this resource (`pods`, `events`, ...).
        resource: Option<String>,
    },
    /// The next `requests` API requests are answered after `delay`.
    Slow {
        /// How many requests are delayed.
        requests: u32,
        /// The delay.
        delay: Duration,
    },
}

/// What the HTTP layer must do to one request because of an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Fail,
    Delay(Duration),
}

/// Pending request faults.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    errors: u32,
    errors_resource: Option<String>,
    slow: u32,
    slow_delay: Duration,
}

impl FaultState {
    /// The next `requests` requests (to `resource` only, if given) fail.
    pub(crate) fn fail(&mut self, requests: u32, resource: Option<String>) {
        self.errors = requests;
        self.errors_resource = resource;
    }

    /// The next `requests` requests are answered after `delay`.
    pub(crate) fn delay(&mut self, requests: u32, delay: Duration) {
        self.slow = requests;
        self.slow_delay = delay;
    }

    /// Consumes a pending fault for a request to `resource`, if one applies.
    pub(crate) fn take(&mut self, resource: &str) -> Option<FaultAction> {
        if self.errors > 0
            && self
                .errors_resource
                .as_deref()
                .is_none_or(|r| r == resource)
        {
            self.errors -= 1;
            return Some(FaultAction::Fail);
        }
        if self.slow > 0 {
            self.slow -= 1;
            return Some(FaultAction::Delay(self.slow_delay));
        }
        None
    }
}

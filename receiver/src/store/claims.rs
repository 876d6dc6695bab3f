//! Who holds a cluster: the connection that claimed it, the session memory that lets a
//! reconnecting sender resume (sender id, epoch, highest acked seq), and the link state
//! behind `relay_cluster_up` and TTL expiry.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use kube_relay_proto::{Hello, Resume};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Identifies one accepted connection, so a replaced connection cannot touch the state of
/// the connection that replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub(crate) u64);

/// Why the store refused a `Hello` (the session turns it into a `Reject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// Another live connection with a different sender id holds the cluster.
    ClusterInUse {
        /// The sender id holding it.
        holder: String,
    },
    /// The cluster is new and the store already holds its limit of clusters.
    TooManyClusters {
        /// The limit (`--max-clusters`).
        limit: usize,
    },
}

/// A successful claim of a cluster by a connection.
#[derive(Debug)]
pub struct Claim {
    /// The connection's identity in the store.
    pub conn: ConnId,
    /// Where the sender continues.
    pub resume: Resume,
    /// True when this claim replaced a live connection of the same sender.
    pub replaced: bool,
}

/// Whether a cluster has a live sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// A sender is connected.
    Up {
        /// Since when (wall clock).
        since: SystemTime,
        /// The sender's address.
        peer: Option<SocketAddr>,
    },
    /// No sender is connected; the cluster's series expire at `expires_in` from now.
    Down {
        /// Since when (wall clock).
        since: SystemTime,
        /// Time left before the series are removed.
        expires_in: Duration,
    },
}

#[derive(Debug)]
enum Link {
    Up {
        conn: ConnId,
        cancel: CancellationToken,
        since: SystemTime,
        peer: Option<SocketAddr>,
    },
    Down {
        since: SystemTime,
        at: Instant,
    },
}

/// The holder of one cluster and its session memory.
#[derive(Debug)]
pub(crate) struct Holder {
    pub(crate) sender_id: String,
    epoch: u64,
    /// Highest contiguous seq applied in this epoch; `None` until a snapshot completes.
    pub(crate) acked: Option<u64>,
    pub(crate) agent: String,
    /// The address of the last connection that claimed the cluster.
    pub(crate) peer: Option<SocketAddr>,
    link: Link,
}

impl Holder {
    /// A holder for a cluster first seen in `hello`, down until claimed.
    pub(crate) fn new(hello: &Hello) -> Self {
        Holder {
            sender_id: hello.sender_id.clone(),
            epoch: hello.epoch,
            acked: None,
            agent: hello.agent.clone(),
            peer: None,
            link: Link::Down {
                since: SystemTime::now(),
                at: Instant::now(),
            },
        }
    }

    /// Gives the cluster to connection `conn`, deciding where the sender resumes; a live
    /// connection of the same sender is cancelled. Returns the resume point and whether a
    /// live connection was replaced.
    pub(crate) fn claim(
        &mut self,
        hello: &Hello,
        conn: ConnId,
        cancel: CancellationToken,
        peer: Option<SocketAddr>,
    ) -> Result<(Resume, bool), ClaimError> {
        let mut replaced = false;
        if let Link::Up { cancel: old, .. } = &self.link {
            if self.sender_id != hello.sender_id {
                return Err(ClaimError::ClusterInUse {
                    holder: self.sender_id.clone(),
                });
            }
            old.cancel();
            replaced = true;
        }
        let resume = match self.acked {
            Some(acked)
                if self.sender_id == hello.sender_id
                    && self.epoch == hello.epoch
                    && hello
                        .resume_from
                        .is_none_or(|from| acked.saturating_add(1) >= from) =>
            {
                Resume::After { acked }
            }
            _ => {
                self.sender_id.clone_from(&hello.sender_id);
                self.epoch = hello.epoch;
                self.acked = None;
                Resume::Snapshot
            }
        };
        self.agent.clone_from(&hello.agent);
        self.peer = peer;
        self.link = Link::Up {
            conn,
            cancel,
            since: SystemTime::now(),
            peer,
        };
        Ok((resume, replaced))
    }

    /// True while `conn` holds the cluster.
    pub(crate) fn holds(&self, conn: ConnId) -> bool {
        matches!(self.link, Link::Up { conn: c, .. } if c == conn)
    }

    /// True while any connection holds the cluster.
    pub(crate) fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Marks the cluster down from now.
    pub(crate) fn release(&mut self) {
        self.link = Link::Down {
            since: SystemTime::now(),
            at: Instant::now(),
        };
    }

    /// When a down cluster's series expire.
    pub(crate) fn expires_at(&self, ttl: Duration) -> Option<Instant> {
        match self.link {
            Link::Down { at, .. } => Some(at + ttl),
            Link::Up { .. } => None,
        }
    }

    /// The link as the status page and self-metrics show it.
    pub(crate) fn link_state(&self, ttl: Duration, now: Instant) -> LinkState {
        match &self.link {
            Link::Up { since, peer, .. } => LinkState::Up {
                since: *since,
                peer: *peer,
            },
            Link::Down { since, at } => LinkState::Down {
                since: *since,
                expires_in: (*at + ttl).saturating_duration_since(now),
            },
        }
    }
}

//! Watch streams: newline-delimited JSON `WatchEvent`s, as the API server sends them.
//!
//! - Without a resourceVersion (or with `0`), or with `sendInitialEvents=true`, the stream
//!   starts with a synthetic `ADDED` per current object (the latter then sends a `BOOKMARK`
//!   annotated `k8s.io/initial-events-end`).
//! - Changes are read from the store's history after the watch's resourceVersion; a
//!   resourceVersion the history no longer holds ends the stream with an `ERROR` event
//!   carrying a `410 Expired` Status (so does falling behind by more than the history). One
//!   the server has not issued is waited for up to 3 s and then ends the stream with an
//!   `ERROR` event carrying `504 Too large resource version` (cause
//!   `ResourceVersionTooLarge`), as the watch cache answers after a restart with fresh
//!   storage.
//! - With selectors, an object entering the selection arrives as `ADDED` and one leaving as
//!   `DELETED`, like the watch cache does.
//! - `allowWatchBookmarks=true` adds a `BOOKMARK` every bookmark interval and before the
//!   stream ends at `timeoutSeconds` (default: 30–60 min, randomized).
//! - A `DropWatches` fault aborts the connection mid-stream (no terminating chunk).
//! - Clients asking for Tables (`kubectl get -w`) get each object as a one-row Table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Status, WatchEvent};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::info;

use crate::api::{
    self, Format, Query, Reply, ResourceRequest, Selection, TOO_LARGE_WAIT, too_large,
};
use crate::resources::{ResourceDef, Source, View};
use crate::shared::{Body, Shared};
use crate::store::{ChangeType, Stored};

type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// Longest watch honoured (a day); longer `timeoutSeconds` are cut to it.
const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;

#[derive(Serialize)]
struct BookmarkEvent<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    object: BookmarkObject<'a>,
}

#[derive(Serialize)]
struct BookmarkObject<'a> {
    kind: &'a str,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: ObjectMeta,
}

fn line<T: Serialize>(event: &T) -> Bytes {
    let mut v = serde_json::to_vec(event).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn object_line(ty: ChangeType, object: &RawValue) -> Bytes {
    let event = match ty {
        ChangeType::Added => WatchEvent::Added(object),
        ChangeType::Modified => WatchEvent::Modified(object),
        ChangeType::Deleted => WatchEvent::Deleted(object),
    };
    line(&event)
}

fn bookmark_line(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let annotations = initial_end
        .then(|| BTreeMap::from([("k8s.io/initial-events-end".to_string(), "true".to_string())]));
    line(&BookmarkEvent {
        type_: "BOOKMARK",
        object: BookmarkObject {
            kind: def.kind,
            api_version: def.api_version(),
            metadata: ObjectMeta {
                resource_version: Some(rv.to_string()),
                annotations,
                ..ObjectMeta::default()
            },
        },
    })
}

fn expired_line(requested: u64, oldest: u64) -> Bytes {
    let status = Status {
        code: Some(410),
        message: Some(format!("too old resource version: {requested} ({oldest})")),
        reason: Some("Expired".to_string()),
        status: Some("Failure".to_string()),
        metadata: ListMeta::default(),
        details: None,
    };
    line(&WatchEvent::<()>::ErrorStatus(status))
}

/// Decides how a change appears to a watch with `selection` (or not at all).
fn visible(
    ty: ChangeType,
    obj: &Arc<Stored>,
    prev: Option<&Arc<Stored>>,
    selection: &Selection,
) -> Option<ChangeType> {
    let now = selection.matches(obj);
    let before = prev.is_some_and(|p| selection.matches(p));
    match ty {
        ChangeType::Added => now.then_some(ChangeType::Added),
        ChangeType::Deleted => (now || before).then_some(ChangeType::Deleted),
        ChangeType::Modified => match (before, now) {
            (true, true) => Some(ChangeType::Modified),
            (false, true) => Some(ChangeType::Added),
            (true, false) => Some(ChangeType::Deleted),
            (false, false) => None,
        },
    }
}

/// Starts a watch: answers 200 at once and streams events from a task.
pub(crate) fn start(
    shared: Arc<Shared>,
    r: &ResourceRequest,
    q: &Query,
    format: Format,
) -> Result<Response<Body>, Reply> {
    let Source::Store(kind, view) = r.def.source else {
        return Err(Reply::method_not_allowed());
    };
    let selection = Selection::parse(r.def, r.namespace.as_deref(), q)?;
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        Some(t) => Duration::from_secs(t.min(MAX_TIMEOUT_SECONDS)),
        None => Duration::from_secs(1800 + rand::random_range(0..1800)),
    };
    let requested = api::requested_rv(q)?;
    let (drop_token, bookmark_every) = {
        let c = shared.lock();
        (c.watch_drop.clone(), c.cfg.bookmark_interval)
    };
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let table = (format == Format::Table).then(|| q.get("includeObject").map(str::to_string));
    let def = r.def;
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        let mut stream = Stream {
            shared: task_shared,
            def,
            kind,
            view,
            selection,
            tx,
            rv: 0,
            table,
        };
        let Some(initial) = stream.begin(requested, send_initial).await else {
            return;
        };
        stream
            .run(
                initial,
                send_initial,
                bookmarks,
                bookmark_every,
                timeout,
                drop_token,
            )
            .await;
    });
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
    .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

struct Stream {
    shared: Arc<Shared>,
    def: &'static ResourceDef,
    kind: crate::resources::Kind,
    view: View,
    selection: Selection,
    tx: mpsc::Sender<Chunk>,
    /// Everything up to here has been sent.
    rv: u64,
    /// Render objects as Tables (with this `includeObject`).
    table: Option<Option<String>>,
}

enum Drained {
    Events(Vec<(ChangeType, Arc<Stored>)>),
    Expired {
        oldest: u64,
    },
    /// A `DropWatches` fault cut this stream: nothing written after it may be sent.
    Dropped,
}

impl Stream {
    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(Ok(Frame::data(bytes))).await.is_ok()
    }

    /// Cuts the connection mid-stream (no terminating chunk), as a network failure would.
    async fn abort(&self) {
        let _ = self
            .tx
            .send(Err(std::io::Error::other(
                "watch dropped by an injected fault",
            )))
            .await;
    }

    /// One object's event line, as JSON or as a one-row Table.
    fn object_line(&self, ty: ChangeType, obj: &Arc<Stored>) -> Bytes {
        let Some(include) = &self.table else {
            return object_line(ty, obj.view(self.view));
        };
        let now_ms = {
            let c = self.shared.lock();
            c.wall_ms(c.now_ms)
        };
        let meta = ListMeta {
            resource_version: Some(obj.rv.to_string()),
            ..ListMeta::default()
        };
        let rendered = crate::table::table(
            self.def,
            std::slice::from_ref(obj),
            self.view,
            now_ms,
            meta,
            include.as_deref(),
        )
        .and_then(|t| t.ok())
        .and_then(|t| serde_json::value::to_raw_value(&t).ok());
        match rendered {
            Some(raw) => object_line(ty, &raw),
            None => object_line(ty, obj.view(self.view)),
        }
    }

    /// Takes the changes since the last drain. Faults are injected under the same lock, so a
    /// stream cut by one never carries a change made after it.
    fn drain(&mut self, drop_token: &tokio_util::sync::CancellationToken) -> Drained {
        let c = self.shared.lock();
        if drop_token.is_cancelled() {
            return Drained::Dropped;
        }
        match c.store.changes_since(self.kind, self.rv) {
            Ok(changes) => {
                let events = changes
                    .iter()
                    .filter_map(|ch| {
                        visible(ch.ty, &ch.obj, ch.prev.as_ref(), &self.selection)
                            .map(|ty| (ty, ch.obj.clone()))
                    })
                    .collect();
                self.rv = c.store.rv();
                Drained::Events(events)
            }
            Err(e) => Drained::Expired { oldest: e.oldest },
        }
    }

    /// Where the stream starts: the current objects (no resourceVersion, `0`, or
    /// `sendInitialEvents`) or the changes after the requested resourceVersion. One the
    /// store has not reached is waited for (at most [`TOO_LARGE_WAIT`]) and then refused
    /// with an `ERROR` event carrying `504 Too large resource version`, as the watch cache
    /// does. `None` when the stream ends there.
    async fn begin(
        &mut self,
        requested: Option<u64>,
        send_initial: bool,
    ) -> Option<Vec<Arc<Stored>>> {
        if let Some(rv) = requested {
            let current = self.shared.lock().store.rv();
            if rv > current && !self.shared.wait_for_rv(rv, TOO_LARGE_WAIT).await {
                let current = self.shared.lock().store.rv();
                info!(
                    resource = self.def.plural,
                    requested = rv,
                    current,
                    "refused a watch from a resourceVersion this server never issued (Too large resource version)"
                );
                let _ = self
                    .send(line(&WatchEvent::<()>::ErrorStatus(too_large(rv, current))))
                    .await;
                return None;
            }
        }
        let c = self.shared.lock();
        if send_initial || requested.is_none() {
            self.rv = c.store.rv();
            let initial = c
                .store
                .objects(self.kind, self.selection.namespace.as_deref())
                .into_iter()
                .filter(|s| self.selection.matches(s))
                .collect();
            Some(initial)
        } else {
            self.rv = requested.unwrap_or(0);
            Some(Vec::new())
        }
    }

    async fn run(
        mut self,
        initial: Vec<Arc<Stored>>,
        send_initial: bool,
        bookmarks: bool,
        bookmark_every: Duration,
        timeout: Duration,
        drop_token: tokio_util::sync::CancellationToken,
    ) {
        let mut changed = self.shared.subscribe();
        changed.borrow_and_update();
        for obj in &initial {
            if !self.send(self.object_line(ChangeType::Added, obj)).await {
                return;
            }
        }
        if send_initial && bookmarks && !self.send(bookmark_line(self.def, self.rv, true)).await {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let requested = self.rv;
            match self.drain(&drop_token) {
                Drained::Events(events) => {
                    for (ty, obj) in events {
                        if !self.send(self.object_line(ty, &obj)).await {
                            return;
                        }
                    }
                }
                Drained::Expired { oldest } => {
                    let _ = self.send(expired_line(requested, oldest)).await;
                    return;
                }
                Drained::Dropped => return self.abort().await,
            }
            tokio::select! {
                biased;
                _ = drop_token.cancelled() => return self.abort().await,
                r = changed.changed() => if r.is_err() { return },
                _ = ticker.tick(), if bookmarks => {
                    if !self.send(bookmark_line(self.def, self.rv, false)).await {
                        return;
                    }
                }
                _ = &mut deadline => {
                    if bookmarks {
                        let _ = self.send(bookmark_line(self.def, self.rv, false)).await;
                    }
                    return;
                }
                _ = self.shared.shutdown.cancelled() => return,
                _ = self.tx.closed() => return,
            }
        }
    }
}

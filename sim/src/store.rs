//! The object store: what etcd plus the watch cache are to a real API server.
//!
//! One global, monotonically increasing `resourceVersion`; per kind a map of the current
//! objects (serialized once, when written) and a bounded history of changes. A watch from a
//! resourceVersion older than a kind's history gets `410 Gone` — exactly when the real watch
//! cache would have forgotten it. Paged lists are served from snapshots so every page of one
//! list is consistent, like etcd reads at the first page's revision.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::resources::{Kind, View};

/// How long a paged list's snapshot survives (etcd compacts every 5 minutes).
const SNAPSHOT_TTL: Duration = Duration::from_secs(300);
/// At most this many paged-list snapshots are kept.
const MAX_SNAPSHOTS: usize = 256;

/// An object's identity: namespace (empty when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    /// A namespaced key.
    pub(crate) fn new(namespace: &str, name: &str) -> Self {
        ObjKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// A cluster-scoped key.
    pub(crate) fn cluster(name: &str) -> Self {
        ObjKey::new("", name)
    }

    /// The key of an object's metadata.
    pub(crate) fn of(meta: &ObjectMeta) -> Self {
        ObjKey::new(
            meta.namespace.as_deref().unwrap_or(""),
            meta.name.as_deref().unwrap_or(""),
        )
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One stored version of an object, serialized.
#[derive(Debug)]
pub(crate) struct Stored {
    pub key: ObjKey,
    pub rv: u64,
    pub labels: BTreeMap<String, String>,
    /// Values of the selectable fields.
    pub fields: Vec<(&'static str, String)>,
    pub json: Box<RawValue>,
    /// The `events.k8s.io/v1` rendering of a core event.
    pub alt: Option<Box<RawValue>>,
}

impl Stored {
    /// The serialization for a view (falls back to the primary one).
    pub(crate) fn view(&self, view: View) -> &RawValue {
        match (view, &self.alt) {
            (View::EventsV1, Some(alt)) => alt,
            _ => &self.json,
        }
    }
}

/// The type of a change, as watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as the watch history keeps it.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub ty: ChangeType,
    pub obj: Arc<Stored>,
    /// The previous version (for selector transitions).
    pub prev: Option<Arc<Stored>>,
}

/// A Kubernetes object the store can hold.
pub(crate) trait StoreObject: Serialize + Metadata<Ty = ObjectMeta> {
    /// Which map it lives in.
    const KIND: Kind;
    /// A short name for errors.
    const NAME: &'static str;

    /// Values of the kind's selectable fields.
    fn fields(&self) -> Vec<(&'static str, String)>;

    /// An alternative rendering (events.k8s.io/v1 for core events).
    fn alt_view(&self) -> Option<std::result::Result<Box<RawValue>, serde_json::Error>> {
        None
    }
}

#[derive(Debug, Default)]
struct KindStore {
    objects: BTreeMap<ObjKey, Arc<Stored>>,
    history: VecDeque<Arc<Change>>,
    /// Changes at or below this resourceVersion are no longer in `history`.
    compacted_rv: u64,
}

#[derive(Debug)]
struct Snapshot {
    rv: u64,
    items: Arc<Vec<Arc<Stored>>>,
    created: Instant,
}

/// The store.
#[derive(Debug)]
pub(crate) struct Store {
    rv: u64,
    kinds: Vec<KindStore>,
    history_capacity: usize,
    snapshots: BTreeMap<u64, Snapshot>,
    next_snapshot: u64,
    /// Random per store, in continue tokens: a token from another run of the simulator (a
    /// client paging across a restart) is expired, never mistaken for one of this run's.
    instance: u32,
}

/// A watch asked for changes the history no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired {
    /// The oldest resourceVersion a watch may still start from.
    pub oldest: u64,
}

impl Store {
    /// An empty store keeping `history_capacity` changes per kind.
    pub(crate) fn new(history_capacity: usize) -> Self {
        Store {
            rv: 0,
            kinds: Kind::ALL.iter().map(|_| KindStore::default()).collect(),
            history_capacity: history_capacity.max(1),
            snapshots: BTreeMap::new(),
            next_snapshot: 1,
            instance: rand::random(),
        }
    }

    /// The latest resourceVersion.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    fn encode<T: StoreObject>(obj: &mut T, rv: u64) -> Result<Stored> {
        obj.metadata_mut().resource_version = Some(rv.to_string());
        let encode = |source| Error::Encode {
            kind: T::NAME,
            source,
        };
        let json = serde_json::value::to_raw_value(obj).map_err(encode)?;
        let alt = obj.alt_view().transpose().map_err(encode)?;
        let meta = obj.metadata();
        Ok(Stored {
            key: ObjKey::of(meta),
            rv,
            labels: meta.labels.clone().unwrap_or_default(),
            fields: obj.fields(),
            json,
            alt,
        })
    }

    /// Creates or replaces an object: bumps the resourceVersion, writes it into the object,
    /// and records an ADDED or MODIFIED change.
    pub(crate) fn upsert<T: StoreObject>(&mut self, obj: &mut T) -> Result<()> {
        let rv = self.rv + 1;
        let stored = Arc::new(Self::encode(obj, rv)?);
        self.rv = rv;
        let kind = &mut self.kinds[<T as StoreObject>::KIND.index()];
        let prev = kind.objects.insert(stored.key.clone(), stored.clone());
        let ty = if prev.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(<T as StoreObject>::KIND, ty, stored, prev);
        Ok(())
    }

    /// Removes an object: bumps the resourceVersion and records a DELETED change carrying
    /// the object's final state.
    pub(crate) fn delete<T: StoreObject>(&mut self, obj: &mut T) -> Result<()> {
        let rv = self.rv + 1;
        let stored = Arc::new(Self::encode(obj, rv)?);
        self.rv = rv;
        let prev = self.kinds[<T as StoreObject>::KIND.index()]
            .objects
            .remove(&stored.key);
        if prev.is_some() {
            self.record(<T as StoreObject>::KIND, ChangeType::Deleted, stored, prev);
        }
        Ok(())
    }

    fn record(&mut self, kind: Kind, ty: ChangeType, obj: Arc<Stored>, prev: Option<Arc<Stored>>) {
        let capacity = self.history_capacity;
        let k = &mut self.kinds[kind.index()];
        k.history.push_back(Arc::new(Change {
            rv: obj.rv,
            ty,
            obj,
            prev,
        }));
        while k.history.len() > capacity {
            if let Some(old) = k.history.pop_front() {
                k.compacted_rv = old.rv;
            }
        }
    }

    /// The current version of one object.
    pub(crate) fn get(&self, kind: Kind, key: &ObjKey) -> Option<Arc<Stored>> {
        self.kinds[kind.index()].objects.get(key).cloned()
    }

    /// Current objects of a kind, optionally in one namespace, in key order.
    pub(crate) fn objects(&self, kind: Kind, namespace: Option<&str>) -> Vec<Arc<Stored>> {
        let objects = &self.kinds[kind.index()].objects;
        match namespace {
            None => objects.values().cloned().collect(),
            Some(ns) => objects
                .range(ObjKey::new(ns, "")..)
                .take_while(|(k, _)| k.namespace == ns)
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }

    /// Number of current objects of a kind.
    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.kinds[kind.index()].objects.len()
    }

    /// Every change of `kind` after resourceVersion `rv`, oldest first.
    ///
    /// # Errors
    /// [`Expired`] when the history no longer reaches back to `rv`.
    pub(crate) fn changes_since(
        &self,
        kind: Kind,
        rv: u64,
    ) -> std::result::Result<Vec<Arc<Change>>, Expired> {
        let k = &self.kinds[kind.index()];
        if rv < k.compacted_rv {
            return Err(Expired {
                oldest: k.compacted_rv,
            });
        }
        let start = k.history.partition_point(|c| c.rv <= rv);
        Ok(k.history.range(start..).cloned().collect())
    }

    /// Forgets all history, as an etcd compaction after unrelated writes moved the revision
    /// on: every watch or continue token from before now gets `410 Gone`, while a list made
    /// after the compaction can be watched from.
    pub(crate) fn compact(&mut self) {
        self.rv += 1;
        let rv = self.rv;
        for k in &mut self.kinds {
            k.history.clear();
            k.compacted_rv = rv;
        }
        self.snapshots.clear();
    }

    /// Keeps the items of a paged list; returns the snapshot id for continue tokens.
    pub(crate) fn save_snapshot(&mut self, rv: u64, items: Arc<Vec<Arc<Stored>>>) -> u64 {
        let now = Instant::now();
        self.snapshots
            .retain(|_, s| now.duration_since(s.created) < SNAPSHOT_TTL);
        while self.snapshots.len() >= MAX_SNAPSHOTS {
            self.snapshots.pop_first();
        }
        let id = self.next_snapshot;
        self.next_snapshot += 1;
        self.snapshots.insert(
            id,
            Snapshot {
                rv,
                items,
                created: now,
            },
        );
        id
    }

    /// The continue token of a paged list's snapshot, for the page ending at `offset`.
    pub(crate) fn continue_token(&self, id: u64, offset: usize) -> String {
        format!("{}.{id}.{offset}", self.instance)
    }

    /// The snapshot and offset a continue token names, if it is one of this store's.
    ///
    /// # Errors
    /// `Err(())` for a token this simulator could not have issued (malformed).
    #[allow(clippy::result_unit_err, reason = "the caller words the error")]
    pub(crate) fn parse_continue(
        &self,
        token: &str,
    ) -> std::result::Result<Option<(u64, usize)>, ()> {
        let mut parts = token.split('.').map(str::parse::<u64>);
        let (Some(Ok(instance)), Some(Ok(id)), Some(Ok(offset)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(());
        };
        let offset = usize::try_from(offset).map_err(drop)?;
        Ok((instance == u64::from(self.instance)).then_some((id, offset)))
    }

    /// A paged list's snapshot, if it has not expired: (resourceVersion, items).
    pub(crate) fn snapshot(&self, id: u64) -> Option<(u64, Arc<Vec<Arc<Stored>>>)> {
        self.snapshots
            .get(&id)
            .filter(|s| s.created.elapsed() < SNAPSHOT_TTL)
            .map(|s| (s.rv, s.items.clone()))
    }

    /// Drops a finished paged list's snapshot.
    pub(crate) fn drop_snapshot(&mut self, id: u64) {
        self.snapshots.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace;

    fn ns(name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[test]
    fn every_write_bumps_the_resource_version_and_is_recorded() {
        let mut store = Store::new(10);
        let mut a = ns("a");
        store.upsert(&mut a).expect("stored");
        store.upsert(&mut a).expect("stored");
        let mut b = ns("b");
        store.upsert(&mut b).expect("stored");
        store.delete(&mut a).expect("deleted");
        assert_eq!(store.rv(), 4);
        assert_eq!(a.metadata.resource_version.as_deref(), Some("4"));
        let changes = store.changes_since(Kind::Namespace, 1).expect("in history");
        let types: Vec<_> = changes.iter().map(|c| (c.rv, c.ty)).collect();
        assert_eq!(
            types,
            vec![
                (2, ChangeType::Modified),
                (3, ChangeType::Added),
                (4, ChangeType::Deleted)
            ]
        );
        assert_eq!(store.count(Kind::Namespace), 1);
        assert!(changes[2].json_is_final_state());
    }

    impl Change {
        fn json_is_final_state(&self) -> bool {
            self.obj.json.get().contains("\"resourceVersion\":\"4\"")
        }
    }

    #[test]
    fn history_overflow_expires_old_resource_versions() {
        let mut store = Store::new(2);
        let mut a = ns("a");
        for _ in 0..4 {
            store.upsert(&mut a).expect("stored");
        }
        assert_eq!(
            store.changes_since(Kind::Namespace, 1).err(),
            Some(Expired { oldest: 2 })
        );
        assert_eq!(
            store
                .changes_since(Kind::Namespace, 2)
                .expect("still in history")
                .len(),
            2
        );
    }

    #[test]
    fn compaction_expires_everything_before_now() {
        let mut store = Store::new(100);
        let mut a = ns("a");
        store.upsert(&mut a).expect("stored");
        store.upsert(&mut a).expect("stored");
        store.compact();
        assert_eq!(store.rv(), 3, "the revision moved on");
        assert!(
            store.changes_since(Kind::Namespace, 2).is_err(),
            "even the last write's rv expired"
        );
        assert!(
            store
                .changes_since(Kind::Namespace, 3)
                .expect("a list made after the compaction can be watched from")
                .is_empty()
        );
    }

    #[test]
    fn namespace_listing_uses_key_ranges() {
        let mut store = Store::new(10);
        for (ns_name, name) in [("a", "x"), ("b", "y"), ("b", "z"), ("c", "w")] {
            let mut n = ns(name);
            n.metadata.namespace = Some(ns_name.to_string());
            store.upsert(&mut n).expect("stored");
        }
        let names: Vec<_> = store
            .objects(Kind::Namespace, Some("b"))
            .iter()
            .map(|s| s.key.name.clone())
            .collect();
        assert_eq!(names, ["y", "z"]);
    }
}

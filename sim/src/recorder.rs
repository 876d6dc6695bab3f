//! The event recorder: `core/v1` Events as the cluster's components write them, identical
//! ones aggregated into `count` (client-go's event correlator), each gone after the
//! scenario's TTL (the API server's `--event-ttl`).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::debug;

use crate::error::Result;
use crate::objects;
use crate::state::{Cluster, DedupKey, EventState};
use crate::store::ObjKey;

impl Cluster {
    /// Records an event (aggregating identical ones into `count`).
    pub(crate) fn record_event(
        &mut self,
        involved: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
        component: &str,
        host: Option<&str>,
    ) -> Result<()> {
        let now = self.now()?;
        let dedup: DedupKey = (
            involved.uid.clone().unwrap_or_default(),
            type_.to_string(),
            reason.to_string(),
            message.clone(),
            component.to_string(),
        );
        let expires_ms = self.now_ms + self.cfg.event_ttl_ms;
        if let Some(key) = self.event_dedup.get(&dedup).cloned()
            && let Some(state) = self.events.get_mut(&key)
        {
            self.event_expiry.remove(&(state.expires_ms, key.clone()));
            state.obj.count = Some(state.obj.count.unwrap_or(1) + 1);
            state.obj.last_timestamp = Some(now);
            state.expires_ms = expires_ms;
            self.store.upsert(&mut state.obj)?;
            self.event_expiry.insert((expires_ms, key));
            return Ok(());
        }
        let namespace = involved
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        self.event_seq += 1;
        let stamp = self.wall_ms(self.now_ms) as u64 * 1_000_000 + self.event_seq;
        let name = format!("{}.{:x}", involved.name.clone().unwrap_or_default(), stamp);
        let uid = self.new_uid();
        let mut event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(uid),
                creation_timestamp: Some(now.clone()),
                managed_fields: Some(vec![objects::managed(
                    component,
                    "v1",
                    &now,
                    None,
                    serde_json::json!({"f:count": {}, "f:firstTimestamp": {}, "f:involvedObject": {}, "f:lastTimestamp": {}, "f:message": {}, "f:reason": {}, "f:reportingComponent": {}, "f:source": {"f:component": {}}, "f:type": {}}),
                )]),
                ..ObjectMeta::default()
            },
            involved_object: involved,
            reason: Some(reason.to_string()),
            message: Some(message),
            source: Some(EventSource {
                component: Some(component.to_string()),
                host: host.map(str::to_string),
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            type_: Some(type_.to_string()),
            event_time: None,
            reporting_component: Some(component.to_string()),
            reporting_instance: Some(host.unwrap_or_default().to_string()),
            action: None,
            related: None,
            series: None,
        };
        self.store.upsert(&mut event)?;
        let key = ObjKey::new(&namespace, &name);
        self.event_expiry.insert((expires_ms, key.clone()));
        self.event_dedup.insert(dedup.clone(), key.clone());
        self.events.insert(
            key,
            EventState {
                obj: event,
                expires_ms,
                dedup,
            },
        );
        Ok(())
    }

    pub(crate) fn expire_events(&mut self) -> Result<()> {
        while let Some((at, key)) = self.event_expiry.first().cloned() {
            if at > self.now_ms {
                break;
            }
            self.event_expiry.pop_first();
            if let Some(mut state) = self.events.remove(&key) {
                self.event_dedup.remove(&state.dedup);
                self.store.delete(&mut state.obj)?;
                debug!(event = %key, "event expired");
            }
        }
        Ok(())
    }

    /// All current events with a given reason, oldest first.
    pub(crate) fn events_with_reason(&self, reason: &str) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .events
            .values()
            .filter(|e| e.obj.reason.as_deref() == Some(reason))
            .map(|e| e.obj.clone())
            .collect();
        events.sort_by(|a, b| {
            (&a.first_timestamp, &a.metadata.name).cmp(&(&b.first_timestamp, &b.metadata.name))
        });
        events
    }
}

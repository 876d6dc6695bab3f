//! Image pulls that fail: a pod whose image never pulls stays `Pending` with its container
//! waiting in `ErrImagePull`, then `ImagePullBackOff`, retried with the kubelet's back-off
//! (10 s doubling to 5 min), with the messages and events a containerd-backed kubelet
//! leaves (`Failed`, `BackOff`, `Pulling`).

use crate::error::Result;
use crate::pod::{ContainerView, Stage};
use crate::state::Cluster;
use crate::store::ObjKey;

/// How long after a failed pull the kubelet reports the back-off.
const BACK_OFF_AFTER_MS: u64 = 1_000;

/// An image reference as containerd resolves it: `nginx:1.27` is
/// `docker.io/library/nginx:1.27`, a missing tag is `latest`.
fn full_reference(image: &str) -> String {
    let (name, tag) = match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (image, None),
    };
    let tagged = |name: &str| match (tag, image.contains('@')) {
        (_, true) => name.to_string(),
        (Some(t), false) => format!("{name}:{t}"),
        (None, false) => format!("{name}:latest"),
    };
    let first = name.split('/').next().unwrap_or(name);
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        tagged(name)
    } else if name.contains('/') {
        tagged(&format!("docker.io/{name}"))
    } else {
        tagged(&format!("docker.io/library/{name}"))
    }
}

impl Cluster {
    /// The pull failed: the container waits in `ErrImagePull`; the back-off follows.
    pub(crate) fn pull_failed(&mut self, key: &ObjKey) -> Result<()> {
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        let image = p.image();
        let reference = full_reference(&image);
        let message = format!(
            "rpc error: code = NotFound desc = failed to pull and unpack image \"{reference}\": failed to resolve reference \"{reference}\": {reference}: not found"
        );
        p.stage = Stage::ImagePull;
        p.pull_failures += 1;
        p.container = Some(ContainerView::Waiting {
            reason: "ErrImagePull".to_string(),
            message: Some(message.clone()),
        });
        let (events, reference, host) = (
            p.events,
            p.container_reference(),
            p.node_name().map(str::to_string),
        );
        let due = self.now_ms + BACK_OFF_AFTER_MS;
        self.set_due(key, Some(due));
        self.write_pod(key)?;
        if events {
            let host = host.as_deref();
            self.record_event(
                reference.clone(),
                "Warning",
                "Failed",
                format!("Failed to pull image \"{image}\": {message}"),
                "kubelet",
                host,
            )?;
            self.record_event(
                reference,
                "Warning",
                "Failed",
                "Error: ErrImagePull".to_string(),
                "kubelet",
                host,
            )?;
        }
        Ok(())
    }

    /// After a failed pull the kubelet waits before the next one: `ImagePullBackOff`.
    pub(crate) fn pull_back_off(&mut self, key: &ObjKey) -> Result<()> {
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        let image = p.image();
        let backoff_s = (10u64 << p.pull_failures.saturating_sub(1).min(5)).min(300);
        let cause = match &p.container {
            Some(ContainerView::Waiting {
                message: Some(m), ..
            }) => format!(": ErrImagePull: {m}"),
            _ => String::new(),
        };
        p.container = Some(ContainerView::Waiting {
            reason: "ImagePullBackOff".to_string(),
            message: Some(format!("Back-off pulling image \"{image}\"{cause}")),
        });
        let (events, reference, host) = (
            p.events,
            p.container_reference(),
            p.node_name().map(str::to_string),
        );
        let due = self.now_ms + backoff_s * 1000;
        self.set_due(key, Some(due));
        self.write_pod(key)?;
        if events {
            let host = host.as_deref();
            self.record_event(
                reference.clone(),
                "Normal",
                "BackOff",
                format!("Back-off pulling image \"{image}\""),
                "kubelet",
                host,
            )?;
            self.record_event(
                reference,
                "Warning",
                "Failed",
                "Error: ImagePullBackOff".to_string(),
                "kubelet",
                host,
            )?;
        }
        Ok(())
    }

    /// The back-off is over: the kubelet pulls again (and fails again).
    pub(crate) fn pull_again(&mut self, key: &ObjKey) -> Result<()> {
        let Some(p) = self.pods.get(key) else {
            return Ok(());
        };
        if p.events {
            let (reference, image, host) = (
                p.container_reference(),
                p.image(),
                p.node_name().map(str::to_string),
            );
            self.record_event(
                reference,
                "Normal",
                "Pulling",
                format!("Pulling image \"{image}\""),
                "kubelet",
                host.as_deref(),
            )?;
        }
        self.pull_failed(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_as_containerd_resolves_them() {
        assert_eq!(full_reference("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(full_reference("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            full_reference("bitnami/redis:7"),
            "docker.io/bitnami/redis:7"
        );
        assert_eq!(
            full_reference("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(
            full_reference("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
    }
}

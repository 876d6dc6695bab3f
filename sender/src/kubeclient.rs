//! Kubernetes access like kubectl: `--kubeconfig` (else `$KUBECONFIG`, else
//! `~/.kube/config`) with `--context` (else the current context), else the in-cluster
//! service account. The cluster name defaults to the context's name.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config as KubeConfig};
use tracing::info;

use crate::config::Config;
use crate::error::Error;

/// A kube client and the name of what it points at (the kubeconfig context, or
/// `None` in-cluster).
pub struct KubeAccess {
    /// The client.
    pub client: Client,
    /// The context's name, if a kubeconfig was used.
    pub context: Option<String>,
}

/// Builds the client as kubectl would; see the [module docs](self).
///
/// # Errors
/// [`Error::KubeConfig`] when neither a kubeconfig nor the in-cluster environment works.
pub async fn connect(config: &Config) -> Result<KubeAccess, Error> {
    let kubeconfig = match &config.kubeconfig {
        Some(path) => Some(read(path)?),
        None => match Kubeconfig::read() {
            Ok(kc) => Some(kc),
            // No kubeconfig at all: fall back to in-cluster, unless a context was asked for.
            Err(e) if config.context.is_some() => return Err(Error::KubeConfig(Box::new(e))),
            Err(_) => None,
        },
    };
    let (kube_config, context) = match kubeconfig {
        Some(kc) => {
            let context = config
                .context
                .clone()
                .or_else(|| kc.current_context.clone());
            let options = KubeConfigOptions {
                context: config.context.clone(),
                ..KubeConfigOptions::default()
            };
            let kube_config = KubeConfig::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::KubeConfig(Box::new(e)))?;
            (kube_config, context)
        }
        None => {
            let kube_config = KubeConfig::incluster().map_err(|e| {
                Error::KubeConfig(
                    format!("no kubeconfig found and not running in a cluster: {e}").into(),
                )
            })?;
            (kube_config, None)
        }
    };
    info!(server = %kube_config.cluster_url, context = ?context, "kubernetes access configured");
    let client = Client::try_from(kube_config).map_err(|e| Error::KubeConfig(Box::new(e)))?;
    Ok(KubeAccess { client, context })
}

fn read(path: &Path) -> Result<Kubeconfig, Error> {
    Kubeconfig::read_from(path).map_err(|e| Error::KubeConfig(Box::new(e)))
}

/// A client for an API server at `url` without TLS or credentials (the simulated cluster).
///
/// # Errors
/// [`Error::KubeConfig`] for a bad URL.
pub fn plain_client(url: &str) -> Result<Client, Error> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| Error::KubeConfig(Box::new(e)))?;
    Client::try_from(KubeConfig::new(uri)).map_err(|e| Error::KubeConfig(Box::new(e)))
}

/// A cluster name from a context name: characters outside `[A-Za-z0-9._-]` become `-`
/// (EKS contexts are ARNs), cut to 253 bytes.
pub fn cluster_name_from_context(context: &str) -> String {
    let mut name: String = context
        .chars()
        .map(|c| {
            if kube_relay_proto::names::is_cluster_name_char(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(kube_relay_proto::MAX_NAME_BYTES);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_become_valid_cluster_names() {
        assert_eq!(cluster_name_from_context("minikube"), "minikube");
        assert_eq!(
            cluster_name_from_context("arn:aws:eks:eu-west-1:123:cluster/prod"),
            "arn-aws-eks-eu-west-1-123-cluster-prod"
        );
        assert_eq!(cluster_name_from_context(&"x".repeat(300)).len(), 253);
    }

    #[tokio::test]
    async fn a_kubeconfig_file_and_context_are_honoured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\n\
             clusters:\n- name: ca\n  cluster: {server: 'http://127.0.0.1:1'}\n\
             - name: cb\n  cluster: {server: 'http://127.0.0.1:2'}\n\
             contexts:\n- name: a\n  context: {cluster: ca, user: u}\n\
             - name: b\n  context: {cluster: cb, user: u}\n\
             users:\n- name: u\n  user: {}\n",
        )
        .expect("write");
        let mut config = Config::new("b:1");
        config.kubeconfig = Some(path.clone());
        let access = connect(&config).await.expect("current context");
        assert_eq!(access.context.as_deref(), Some("a"));
        config.context = Some("b".to_owned());
        let access = connect(&config).await.expect("named context");
        assert_eq!(access.context.as_deref(), Some("b"));
        config.context = Some("missing".to_owned());
        let err = connect(&config).await.err().expect("unknown context");
        assert!(err.to_string().contains("Kubernetes access"), "{err}");
    }
}

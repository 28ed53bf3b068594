//! The `IsHostingVps` controller: wiring of kube-runtime's `Controller`, the shared
//! context and the per-resource backoff.

pub mod conditions;
pub mod decide;
pub mod error;
pub mod limits;
pub mod order;
pub mod reconcile;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Controller, Error as ControllerError};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use rand::Rng;
use tracing::{error, info};

use crate::crd::IsHostingVps;
use crate::ishosting::{ApiClient, ErrorClass};
use crate::metrics::Metrics;

pub use error::Error;

/// Field manager of every status write, so server-side apply records one owner.
pub const FIELD_MANAGER: &str = "ishosting-operator";

/// Location of the operator's default API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretLocation {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

impl std::str::FromStr for SecretLocation {
    type Err = String;

    /// Parses `namespace/name` or `namespace/name:key`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (path, key) = match text.split_once(':') {
            Some((path, key)) => (path, key),
            None => (text, crate::crd::DEFAULT_SECRET_KEY),
        };
        let Some((namespace, name)) = path.split_once('/') else {
            return Err(format!(
                "invalid Secret {text:?}: expected namespace/name or namespace/name:key"
            ));
        };
        if namespace.is_empty() || name.is_empty() || key.is_empty() {
            return Err(format!(
                "invalid Secret {text:?}: namespace, name and key must not be empty"
            ));
        }
        Ok(SecretLocation {
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
        })
    }
}

/// Timing and defaults of the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Namespace to watch; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Secret used by resources without `credentialsSecretRef`.
    pub default_secret: Option<SecretLocation>,
    /// How long an order with an unknown outcome is left to settle before the provider is
    /// searched for it; longer than the client's request timeout.
    pub order_settle: Duration,
    /// Requeue while money or provisioning is in flight.
    pub fast_requeue: Duration,
    /// Requeue once the server is settled (running, stopped, cancelled).
    pub settled_requeue: Duration,
    /// First retry interval while a person must act (missing Secret, rejected key, no
    /// funds); later retries double up to 8 times it.
    pub needs_user_requeue: Duration,
    /// Maximum backoff after transient errors.
    pub max_backoff: Duration,
    /// Operator-wide order and spend limits per account.
    pub account_limits: decide::AccountLimits,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            namespace: None,
            default_secret: None,
            order_settle: Duration::from_secs(90),
            fast_requeue: Duration::from_secs(5),
            settled_requeue: Duration::from_secs(300),
            needs_user_requeue: Duration::from_secs(120),
            max_backoff: Duration::from_secs(300),
            account_limits: decide::AccountLimits::default(),
        }
    }
}

/// State shared by every reconcile.
pub struct Context {
    pub kube: Client,
    pub provider: ApiClient,
    pub config: ControllerConfig,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub spending: limits::SpendingGuard,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        kube: Client,
        provider: ApiClient,
        config: ControllerConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(kube.clone(), reporter),
            spending: limits::SpendingGuard::new(config.account_limits.clone()),
            kube,
            provider,
            config,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the delay before the next attempt for a resource whose pass failed.
    /// Transient errors back off exponentially, with jitter, from the fast requeue up to
    /// `max_backoff`. Errors that need a person back off from `needs_user_requeue` up to
    /// 8 times it. An unknown outcome waits the settle window before the provider is
    /// searched.
    pub fn next_backoff(&self, obj: &IsHostingVps, class: ErrorClass) -> Duration {
        let key = obj.uid().unwrap_or_else(|| obj.name_any());
        let attempts = {
            let mut failures = self.failures.lock().expect("backoff map lock poisoned");
            let entry = failures.entry(key).or_insert(0);
            *entry = entry.saturating_add(1);
            *entry
        };
        match class {
            // Waits double from the recheck interval up to 8 times it (16 min by default),
            // so 100 resources stalled on one key cost about 12 requests a minute at the
            // cap, 5% of the default budget. A Secret change still starts a pass at once.
            ErrorClass::NeedsUser => {
                let jitter = rand::rng().random_range(0.0..0.2);
                let recheck = self.config.needs_user_requeue;
                transient_backoff(attempts, recheck, recheck.saturating_mul(8), jitter)
            }
            ErrorClass::OutcomeUnknown => self.config.order_settle,
            ErrorClass::Transient => {
                // Up to 20% jitter spreads retries of many failing resources apart.
                let jitter = rand::rng().random_range(0.0..0.2);
                transient_backoff(
                    attempts,
                    self.config.fast_requeue,
                    self.config.max_backoff,
                    jitter,
                )
            }
        }
    }

    /// Reports whether the last two or more passes of a resource failed.
    pub fn repeated_failures(&self, obj: &IsHostingVps) -> bool {
        let key = obj.uid().unwrap_or_else(|| obj.name_any());
        self.failures
            .lock()
            .expect("backoff map lock poisoned")
            .get(&key)
            .is_some_and(|count| *count >= 2)
    }

    /// Forgets a resource's failures after a successful pass.
    pub fn reset_backoff(&self, obj: &IsHostingVps) {
        let key = obj.uid().unwrap_or_else(|| obj.name_any());
        self.failures
            .lock()
            .expect("backoff map lock poisoned")
            .remove(&key);
    }
}

/// Returns the wait after the `attempts`-th failed pass in a row (from 1) with a transient
/// error: `fast` doubled per earlier failure, stretched by `jitter` (a share, 0..1) and
/// capped at `max`.
pub fn transient_backoff(attempts: u32, fast: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    let base = fast.saturating_mul(1 << exponent);
    base.min(max).mul_f64(1.0 + jitter).min(max)
}

/// Runs the controller until a shutdown signal arrives.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let (resources, secrets): (Api<IsHostingVps>, Api<Secret>) = match &ctx.config.namespace {
        Some(namespace) => (
            Api::namespaced(ctx.kube.clone(), namespace),
            Api::namespaced(ctx.kube.clone(), namespace),
        ),
        None => (Api::all(ctx.kube.clone()), Api::all(ctx.kube.clone())),
    };
    if let Err(error) = resources.list(&ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list IsHostingVps resources ({error}); is the CRD installed (kubectl apply -f crds/) and does the operator's RBAC allow it?"
        );
    }

    // Status writes do not re-trigger a pass. The next pass comes from the requeue that the
    // pass requested, so an error that needs a person is retried on its own schedule. A
    // money call is then not repeated milliseconds after the status recorded its failure.
    let (store, writer) = reflector::store();
    let triggers = reflector(
        writer,
        watcher(resources, watcher::Config::default().any_semantic()),
    )
    .applied_objects()
    .predicate_filter(spec_or_lifecycle, PredicateConfig::default());
    let controller = Controller::for_stream(triggers, store.clone());
    let default_secret = ctx.config.default_secret.clone();

    info!("controller started");
    controller
        // A created or rotated Secret re-runs every resource that reads it, so a new key
        // takes effect without a restart.
        .watches(secrets, watcher::Config::default(), move |secret| {
            resources_using_secret(&store, default_secret.as_ref(), &secret)
        })
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // error_policy has logged the reconciler's own errors already.
                Err(ControllerError::ReconcilerFailed(..)) | Ok(_) => {}
                Err(error) => error!(%error, "controller stream error"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

/// Hashes what should start a pass: the spec's generation, the finalizers and whether
/// the resource is being deleted. Status and other metadata changes are ignored.
fn spec_or_lifecycle(obj: &IsHostingVps) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    obj.metadata.generation.hash(&mut hasher);
    obj.finalizers().hash(&mut hasher);
    obj.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// Returns the resources whose API key comes from `secret`.
fn resources_using_secret(
    store: &Store<IsHostingVps>,
    default_secret: Option<&SecretLocation>,
    secret: &Secret,
) -> Vec<ObjectRef<IsHostingVps>> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let is_default = default_secret.is_some_and(|d| d.namespace == namespace && d.name == name);
    store
        .state()
        .iter()
        .filter(|vps| match &vps.spec.credentials_secret_ref {
            Some(reference) => {
                reference.name == name && vps.namespace().as_deref() == Some(namespace.as_str())
            }
            None => is_default,
        })
        .map(|vps| ObjectRef::from_obj(vps.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_backoff_grows_to_minutes() {
        let fast = Duration::from_secs(5);
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=8)
            .map(|attempt| transient_backoff(attempt, fast, max, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        // Jitter never pushes a wait past the cap.
        assert_eq!(transient_backoff(7, fast, max, 0.19), max);
        assert_eq!(
            transient_backoff(2, fast, max, 0.1),
            Duration::from_secs(11)
        );
        assert_eq!(transient_backoff(u32::MAX, fast, max, 0.0), max);
    }

    #[test]
    fn needs_user_backoff_caps_at_eight_rechecks() {
        let recheck = Duration::from_secs(120);
        let waits: Vec<u64> = (1..=6)
            .map(|attempt| transient_backoff(attempt, recheck, recheck * 8, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [120, 240, 480, 960, 960, 960]);
    }

    #[test]
    fn secret_location_parses_key() {
        let parsed: SecretLocation = "ops/ishosting:token".parse().unwrap();
        assert_eq!(parsed.namespace, "ops");
        assert_eq!(parsed.name, "ishosting");
        assert_eq!(parsed.key, "token");
    }

    #[test]
    fn secret_location_defaults_key() {
        let parsed: SecretLocation = "ops/ishosting".parse().unwrap();
        assert_eq!(parsed.key, "apiKey");
    }

    #[test]
    fn secret_location_rejects_bad_input() {
        for text in ["ishosting", "/name", "ns/", "ns/name:"] {
            assert!(text.parse::<SecretLocation>().is_err(), "{text}");
        }
    }
}

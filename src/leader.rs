//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one runs the controller and talks to the provider.
//!
//! [`acquire`] waits until this replica holds the lease. [`hold`] then runs the controller
//! and returns an error as soon as the lease is lost, cannot be renewed, or the task that
//! renews it ends. The caller then exits the process, because a replica that may no longer
//! lead must not send another order or payment.
//!
//! NOTE: a leader whose process or node freezes for longer than the lease notices the loss
//! only when it runs again, after a call it had already started. Against that overlap the
//! controller relies on the order identity it records before ordering.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use rand::Rng;
use rand::distr::Alphanumeric;
use tracing::{debug, warn};

/// Settings of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Name of the Lease object.
    pub name: String,
    /// Namespace of the Lease object.
    pub namespace: String,
    /// This replica's identity, written as the lease's holder.
    pub identity: String,
    /// How long a lease stays valid after its last renewal, in seconds.
    pub duration_seconds: u64,
    /// Seconds after its last renewal at which the leader renews the lease. The rest of the
    /// duration is the margin in which a failed renewal ends the process before the lease
    /// expires and another replica may take it.
    pub renew_deadline_seconds: u64,
    /// Interval at which the leader checks that the Lease still names it, and at which a
    /// replica retries after a failed request.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Checks that the timings leave a renewal margin.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return Err(
                "--lease-name, --lease-namespace and the identity must not be empty".into(),
            );
        }
        if self.renew_deadline_seconds == 0 || self.renew_deadline_seconds >= self.duration_seconds
        {
            return Err(format!(
                "--renew-deadline-seconds ({}) must be at least 1 and less than --lease-duration-seconds ({}), so that a failed renewal is noticed before the lease expires",
                self.renew_deadline_seconds, self.duration_seconds
            ));
        }
        if self.retry_period.is_zero() {
            return Err("--retry-period-seconds must be at least 1".into());
        }
        Ok(())
    }

    /// Returns the timeout of one request to the Lease: a renewal makes up to three
    /// requests, and all of them must end within the margin before the lease expires.
    pub fn request_timeout(&self) -> Duration {
        let margin = self.duration_seconds - self.renew_deadline_seconds;
        Duration::from_secs(margin)
            .div_f64(3.0)
            .max(Duration::from_millis(300))
    }
}

/// Returns this replica's identity: `POD_NAME` (else the host name) plus a random suffix, so
/// that a restarted pod with the same name is not mistaken for the old holder.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "ishosting-operator".to_string());
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(6)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{base}-{suffix}")
}

/// A lease that this replica can hold. [`KubeLease`] is the real one.
pub trait LeaseLock: Send + Sync + 'static {
    /// Returns this replica's identity.
    fn identity(&self) -> &str;

    /// Waits until this replica's hold on the lease changes, acquiring a free or expired
    /// lease and renewing a held one meanwhile, and returns whether it now holds the lease.
    fn changed(&self) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Reads the current holder of the lease from the API server.
    fn holder(&self) -> impl Future<Output = anyhow::Result<Option<String>>> + Send;

    /// Gives the lease up if this replica holds it.
    fn release(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A Lease object in the cluster, managed by `kube-lease-manager`.
pub struct KubeLease {
    manager: LeaseManager,
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl KubeLease {
    /// Connects to the Lease, creating it when it does not exist. Its requests use their
    /// own client whose timeouts end a stuck renewal before the lease can expire.
    pub async fn connect(config: &kube::Config, settings: &LeaseSettings) -> anyhow::Result<Self> {
        let timeout = settings.request_timeout();
        let mut config = config.clone();
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        config.reset_reader_on_write = true;
        let client = kube::Client::try_from(config)
            .context("failed to build the Kubernetes client for the lease")?;
        let grace = settings.duration_seconds - settings.renew_deadline_seconds;
        let params = LeaseParams::new(&settings.identity, settings.duration_seconds, grace);
        let manager = LeaseManager::new(
            client.clone(),
            &settings.name,
            &settings.namespace,
            params,
            LeaseCreateMode::AutoCreate,
        )
        .await
        .with_context(|| {
            format!(
                "failed to read or create Lease {}/{}: check that the namespace exists (or set --lease-namespace) and that the operator's RBAC allows leases there",
                settings.namespace, settings.name
            )
        })?;
        Ok(KubeLease {
            manager,
            api: Api::namespaced(client, &settings.namespace),
            name: settings.name.clone(),
            identity: settings.identity.clone(),
        })
    }
}

impl LeaseLock for KubeLease {
    fn identity(&self) -> &str {
        &self.identity
    }

    async fn changed(&self) -> anyhow::Result<bool> {
        Ok(self.manager.changed().await?)
    }

    async fn holder(&self) -> anyhow::Result<Option<String>> {
        let lease = self.api.get(&self.name).await?;
        Ok(lease.spec.and_then(|spec| spec.holder_identity))
    }

    async fn release(&self) -> anyhow::Result<()> {
        Ok(self.manager.release().await?)
    }
}

/// Waits until this replica holds the lease. Failed requests are logged and retried every
/// `retry_period`.
pub async fn acquire<L: LeaseLock>(lock: &L, retry_period: Duration) {
    loop {
        match lock.changed().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                warn!(error = %format!("{error:#}"), identity = lock.identity(), "failed to acquire the lease, retrying");
                tokio::time::sleep(retry_period).await;
            }
        }
    }
}

/// Runs `lead` while this replica holds the lease, which it must have acquired.
///
/// Returns `lead`'s result (after releasing the lease) when it ends first, and an error as
/// soon as the lease is lost, its renewal fails, or the task that renews it ends. The
/// caller must then exit: `lead` is dropped mid-flight, as a crash would stop it.
pub async fn hold<L, F>(lock: Arc<L>, retry_period: Duration, lead: F) -> anyhow::Result<()>
where
    L: LeaseLock,
    F: Future<Output = anyhow::Result<()>>,
{
    let mut keeper = tokio::spawn(keep(lock.clone(), retry_period));
    tokio::select! {
        result = lead => {
            keeper.abort();
            if let Err(error) = lock.release().await {
                warn!(error = %format!("{error:#}"), "failed to release the lease; another replica takes over once it expires");
            }
            result
        }
        joined = &mut keeper => match joined {
            Ok(error) => Err(error),
            Err(error) => Err(anyhow!(
                "the task that renews the lease ended ({error}), so this replica can no longer be sure it leads"
            )),
        },
    }
}

/// Renews the lease and checks every `retry_period` that it still names this replica.
/// Returns only when that is no longer certain, with the reason.
async fn keep<L: LeaseLock>(lock: Arc<L>, retry_period: Duration) -> anyhow::Error {
    let changed = lock.changed();
    tokio::pin!(changed);
    let mut ticker = tokio::time::interval(retry_period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut changed => {
                return match result {
                    Ok(false) => anyhow!("lost the lease while leading (another replica holds it or it expired)"),
                    Ok(true) => anyhow!("the lease manager reported acquiring a lease this replica already held"),
                    Err(error) => anyhow!("failed to renew the lease while leading: {error:#}"),
                };
            }
            _ = ticker.tick() => match lock.holder().await {
                Ok(Some(holder)) if holder == lock.identity() => {}
                Ok(holder) => {
                    return anyhow!(
                        "lost the lease while leading: it is now held by {}",
                        holder.as_deref().unwrap_or("nobody")
                    );
                }
                // The renewal decides: it fails (and ends the process) before the lease
                // expires if the API server stays unreachable.
                Err(error) => debug!(error = %format!("{error:#}"), "failed to read the lease"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A lease driven by the test: `changed` returns the queued results in order and then
    /// waits forever, `holder` returns the current holder.
    struct FakeLease {
        changes: Mutex<Vec<anyhow::Result<bool>>>,
        holder: Mutex<Option<String>>,
        released: AtomicBool,
    }

    impl FakeLease {
        fn new(changes: Vec<anyhow::Result<bool>>) -> Arc<Self> {
            Arc::new(FakeLease {
                changes: Mutex::new(changes.into_iter().rev().collect()),
                holder: Mutex::new(Some("me".into())),
                released: AtomicBool::new(false),
            })
        }
    }

    impl LeaseLock for FakeLease {
        fn identity(&self) -> &str {
            "me"
        }

        async fn changed(&self) -> anyhow::Result<bool> {
            let next = self.changes.lock().unwrap().pop();
            match next {
                Some(result) => result,
                None => std::future::pending().await,
            }
        }

        async fn holder(&self) -> anyhow::Result<Option<String>> {
            Ok(self.holder.lock().unwrap().clone())
        }

        async fn release(&self) -> anyhow::Result<()> {
            self.released.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    const RETRY: Duration = Duration::from_millis(20);

    fn settings() -> LeaseSettings {
        LeaseSettings {
            name: "ishosting-operator".into(),
            namespace: "ishosting-system".into(),
            identity: "pod-a-x1y2z3".into(),
            duration_seconds: 15,
            renew_deadline_seconds: 10,
            retry_period: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn acquire_retries_after_errors() {
        let lock = FakeLease::new(vec![Err(anyhow!("apiserver down")), Ok(false), Ok(true)]);
        tokio::time::timeout(Duration::from_secs(2), acquire(&*lock, RETRY))
            .await
            .expect("acquired after the error");
    }

    #[tokio::test]
    async fn lost_lease_ends_hold() {
        let lock = FakeLease::new(vec![Ok(false)]);
        let error = hold(lock, RETRY, std::future::pending()).await.unwrap_err();
        assert!(error.to_string().contains("lost the lease"), "{error}");
    }

    #[tokio::test]
    async fn failed_renewal_ends_hold() {
        let lock = FakeLease::new(vec![Err(anyhow!("timed out"))]);
        let error = hold(lock, RETRY, std::future::pending()).await.unwrap_err();
        assert!(error.to_string().contains("failed to renew"), "{error}");
    }

    #[tokio::test]
    async fn other_holder_ends_hold() {
        let lock = FakeLease::new(vec![]);
        *lock.holder.lock().unwrap() = Some("pod-b".into());
        let error = hold(lock, RETRY, std::future::pending()).await.unwrap_err();
        assert!(error.to_string().contains("held by pod-b"), "{error}");
    }

    #[tokio::test]
    async fn finished_lead_releases_lease() {
        let lock = FakeLease::new(vec![]);
        hold(lock.clone(), RETRY, async { Ok(()) }).await.unwrap();
        assert!(lock.released.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn dead_renewal_task_ends_hold() {
        /// A lease whose renewal panics, as a bug in the renewing task would.
        struct PanickingLease;
        impl LeaseLock for PanickingLease {
            fn identity(&self) -> &str {
                "me"
            }
            async fn changed(&self) -> anyhow::Result<bool> {
                panic!("renewal task bug");
            }
            async fn holder(&self) -> anyhow::Result<Option<String>> {
                Ok(Some("me".into()))
            }
            async fn release(&self) -> anyhow::Result<()> {
                Ok(())
            }
        }
        let error = hold(Arc::new(PanickingLease), RETRY, std::future::pending())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("task that renews"), "{error}");
    }

    #[test]
    fn settings_need_a_renewal_margin() {
        assert!(settings().validate().is_ok());
        let equal = LeaseSettings {
            renew_deadline_seconds: 15,
            ..settings()
        };
        assert!(equal.validate().is_err());
        let zero_retry = LeaseSettings {
            retry_period: Duration::ZERO,
            ..settings()
        };
        assert!(zero_retry.validate().is_err());
    }

    #[test]
    fn request_timeout_fits_the_margin() {
        // 5 s of margin: three requests of 5/3 s each.
        assert_eq!(
            settings().request_timeout(),
            Duration::from_secs(5).div_f64(3.0)
        );
    }

    #[test]
    fn identities_differ_per_process_start() {
        assert_ne!(default_identity(), default_identity());
    }
}

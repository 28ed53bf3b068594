use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ishosting_operator::controller::decide::AccountLimits;
use ishosting_operator::controller::{self, Context, ControllerConfig, SecretLocation};
use ishosting_operator::ishosting::{ApiClient, Budget, ClientConfig};
use ishosting_operator::leader::{self, KubeLease, LeaseSettings};
use ishosting_operator::metrics::{self, Metrics};
use ishosting_operator::telemetry::{self, LogFormat};
use ishosting_operator::{crd, simulator};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Kubernetes operator that orders, pays for and manages is*hosting VPS servers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the cluster in KUBECONFIG (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print the IsHostingVps CustomResourceDefinition as YAML.
    Crd,
    /// Serve a simulator of the is*hosting API for tests and demos.
    Simulate(simulator::SimulateArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Kubeconfig file; without it the usual inference applies (KUBECONFIG, ~/.kube/config,
    /// in-cluster service account).
    #[arg(long, env = "ISHOSTING_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "ISHOSTING_WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Base URL of the is*hosting API.
    #[arg(
        long,
        env = "ISHOSTING_API_URL",
        default_value = "https://api.ishosting.com"
    )]
    api_url: url::Url,

    /// Secret with the API key for resources that set no credentialsSecretRef, as
    /// namespace/name or namespace/name:key (key defaults to apiKey).
    #[arg(long, env = "ISHOSTING_DEFAULT_SECRET")]
    default_secret: Option<SecretLocation>,

    /// Address of the /metrics, /livez and /readyz endpoints.
    #[arg(long, env = "ISHOSTING_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "ISHOSTING_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Accept-Language header sent to the provider (en or ru); it sets the language of the
    /// provider's messages.
    #[arg(long, env = "ISHOSTING_ACCEPT_LANGUAGE", default_value = "en")]
    accept_language: String,

    /// Header that carries the API key.
    #[arg(long, env = "ISHOSTING_TOKEN_HEADER", default_value = "X-Api-Token")]
    token_header: String,

    /// User-Agent sent to the provider.
    #[arg(long, env = "ISHOSTING_USER_AGENT")]
    user_agent: Option<String>,

    /// Timeout of one provider request, in seconds.
    #[arg(long, env = "ISHOSTING_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    request_timeout_seconds: u64,

    /// Requests per 10 seconds per API key (the provider blocks a key for an hour above 150).
    #[arg(long, env = "ISHOSTING_BUDGET_PER_10S", default_value_t = 100)]
    budget_per_10s: u32,

    /// Requests per minute per API key (the provider challenges a key above 300).
    #[arg(long, env = "ISHOSTING_BUDGET_PER_MINUTE", default_value_t = 250)]
    budget_per_minute: u32,

    /// Seconds an order with an unknown outcome is left to settle before the provider is
    /// searched for it; keep it above the request timeout.
    #[arg(long, env = "ISHOSTING_ORDER_SETTLE_SECONDS", default_value_t = 90)]
    order_settle_seconds: u64,

    /// Seconds between checks while money or provisioning is in flight.
    #[arg(long, env = "ISHOSTING_POLL_SECONDS", default_value_t = 5)]
    poll_seconds: u64,

    /// Seconds between checks of a settled server.
    #[arg(long, env = "ISHOSTING_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,

    /// Maximum wait, in seconds, before retrying a resource whose passes keep failing with
    /// temporary errors; the wait doubles from --poll-seconds up to it.
    #[arg(long, env = "ISHOSTING_MAX_BACKOFF_SECONDS", default_value_t = 300)]
    max_backoff_seconds: u64,

    /// Seconds before the first retry while a person must act (missing Secret, rejected
    /// key, insufficient balance). Later retries wait twice as long each time, up to 8
    /// times this. A change of the Secret starts a retry at once.
    #[arg(long, env = "ISHOSTING_RECHECK_SECONDS", default_value_t = 120)]
    recheck_seconds: u64,

    /// Elect one leader among the replicas through a Lease; only the leader runs the
    /// controller. Turn it off only when exactly one replica runs.
    #[arg(
        long,
        env = "ISHOSTING_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    leader_election: bool,

    /// Name of the Lease used for leader election.
    #[arg(
        long,
        env = "ISHOSTING_LEASE_NAME",
        default_value = "ishosting-operator"
    )]
    lease_name: String,

    /// Namespace of the Lease; defaults to the pod's namespace (POD_NAMESPACE), else
    /// ishosting-system.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ishosting-system")]
    lease_namespace: String,

    /// Seconds a lease stays valid after its last renewal; a follower takes over this long
    /// after the leader stopped renewing.
    #[arg(long, env = "ISHOSTING_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,

    /// Seconds after its last renewal at which the leader renews the lease. A renewal that
    /// fails before the lease expires ends the process.
    #[arg(long, env = "ISHOSTING_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    renew_deadline_seconds: u64,

    /// Seconds between the leader's checks that the Lease still names it, and between a
    /// follower's retries after a failed request.
    #[arg(long, env = "ISHOSTING_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    retry_period_seconds: u64,
    /// New orders per API key in any hour, counted from the provider's invoices; 0 means
    /// no limit. Paying an invoice that already exists is never limited.
    #[arg(long, env = "ISHOSTING_MAX_ORDERS_PER_HOUR", default_value_t = 10)]
    max_orders_per_hour: u32,

    /// Total of new orders per API key in any 24 hours, in the currency of the quotes
    /// (USD at is*hosting), counted from the provider's invoices that are not cancelled;
    /// 0 means no limit.
    #[arg(long, env = "ISHOSTING_MAX_SPEND_PER_DAY", default_value = "1000")]
    max_spend_per_day: rust_decimal::Decimal,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd::crd_yaml());
            Ok(())
        }
        Command::Simulate(args) => {
            telemetry::init(LogFormat::Text);
            simulator::run(args).await
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    if args.order_settle_seconds <= args.request_timeout_seconds {
        anyhow::bail!(
            "--order-settle-seconds ({}) must be greater than --request-timeout-seconds ({}), or an order still in flight could be placed twice",
            args.order_settle_seconds,
            args.request_timeout_seconds
        );
    }

    let lease_settings = LeaseSettings {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity: leader::default_identity(),
        duration_seconds: args.lease_duration_seconds,
        renew_deadline_seconds: args.renew_deadline_seconds,
        retry_period: Duration::from_secs(args.retry_period_seconds),
    };
    if args.leader_election {
        lease_settings.validate().map_err(anyhow::Error::msg)?;
    }

    if args.max_spend_per_day.is_sign_negative() {
        anyhow::bail!(
            "--max-spend-per-day ({}) must not be negative: give an amount, or 0 for no limit",
            args.max_spend_per_day
        );
    }

    let kube_config = match &args.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("cannot find a Kubernetes configuration")?,
    };
    let kube = kube::Client::try_from(kube_config.clone())?;

    let metrics = Arc::new(Metrics::new());
    let mut server = tokio::spawn(metrics::serve(args.metrics_listen, metrics.clone()));
    // A follower is ready too: it serves health and metrics and waits for the lease.
    metrics.set_ready(true);

    if args.leader_election {
        let lock = Arc::new(KubeLease::connect(&kube_config, &lease_settings).await?);
        tracing::info!(
            lease = %format!("{}/{}", lease_settings.namespace, lease_settings.name),
            identity = %lease_settings.identity,
            "waiting to acquire the lease"
        );
        tokio::select! {
            () = leader::acquire(&*lock, lease_settings.retry_period) => {}
            () = shutdown_signal() => {
                tracing::info!("stopped before acquiring the lease");
                return Ok(());
            }
            result = &mut server => return metrics_server_ended(result),
        }
        tracing::info!(identity = %lease_settings.identity, "acquired the lease; starting the controller");
        metrics.set_leader(true);
        let ctx = Arc::new(build_context(&args, kube, metrics.clone())?);
        let result = tokio::select! {
            result = leader::hold(lock, lease_settings.retry_period, controller::run(ctx)) => {
                if let Err(error) = &result {
                    tracing::error!(
                        error = %format!("{error:#}"),
                        identity = %lease_settings.identity,
                        "exiting: this replica may no longer lead, and only the leader may order or pay"
                    );
                }
                result
            }
            result = &mut server => metrics_server_ended(result),
        };
        metrics.set_leader(false);
        return result;
    }

    tracing::warn!(
        "leader election is off: run exactly one replica, or two could order the same server"
    );
    metrics.set_leader(true);
    let ctx = Arc::new(build_context(&args, kube, metrics.clone())?);
    tokio::select! {
        result = controller::run(ctx) => result,
        result = server => metrics_server_ended(result),
    }
}

/// Builds the provider client and the controller's context.
fn build_context(
    args: &RunArgs,
    kube: kube::Client,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Context> {
    let mut client_config = ClientConfig {
        base_url: args.api_url.clone(),
        token_header: args.token_header.clone(),
        accept_language: args.accept_language.clone(),
        request_timeout: Duration::from_secs(args.request_timeout_seconds),
        budget: Budget {
            short_requests: args.budget_per_10s,
            short_window: Duration::from_secs(10),
            long_requests: args.budget_per_minute,
            long_window: Duration::from_secs(60),
        },
        ..ClientConfig::default()
    };
    if let Some(user_agent) = &args.user_agent {
        client_config.user_agent = user_agent.clone();
    }
    let provider = ApiClient::new(client_config)?;

    let config = ControllerConfig {
        namespace: args.namespace.clone(),
        default_secret: args.default_secret.clone(),
        order_settle: Duration::from_secs(args.order_settle_seconds),
        fast_requeue: Duration::from_secs(args.poll_seconds.max(1)),
        settled_requeue: Duration::from_secs(args.resync_seconds.max(1)),
        needs_user_requeue: Duration::from_secs(args.recheck_seconds.max(1)),
        account_limits: AccountLimits {
            max_orders_per_hour: args.max_orders_per_hour,
            max_spend_per_day: args.max_spend_per_day,
        },
        max_backoff: Duration::from_secs(args.max_backoff_seconds.max(1)),
    };
    tracing::info!(
        api = %args.api_url,
        default_secret = ?args.default_secret,
        max_orders_per_hour = args.max_orders_per_hour,
        max_spend_per_day = %args.max_spend_per_day,
        "starting ishosting-operator"
    );
    Ok(Context::new(kube, provider, config, metrics))
}

/// Turns the end of the metrics server into the process's error.
fn metrics_server_ended(
    result: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    result??;
    anyhow::bail!("the metrics server stopped")
}

/// Waits for SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "failed to listen for SIGTERM; only Ctrl-C stops the wait");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

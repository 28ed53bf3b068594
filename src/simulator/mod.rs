//! A stand-in for the is*hosting HTTP API that serves the provider's paths,
//! bodies, status codes and error shapes, including the deviations seen in real
//! responses, so that the operator can be tested and demonstrated without the
//! real provider.
//!
//! Beside the provider API it serves an admin API under `/_admin/` (accounts,
//! simulated clock, fault injection, stats, request log); [`AdminClient`] is its
//! client.
//!
//! Time: invoice due dates, key blocks, key expiry and renewals follow a
//! simulated clock that runs [`SimulatorConfig::speed`] times real time and can
//! be advanced through the admin API; provisioning and reboots take real time
//! ([`SimulatorConfig::provision`]).

mod admin;
mod catalogue;
mod client;
mod model;
mod provider;
mod state;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use client::AdminClient;
pub use model::{Faults, InvoiceSummary, OPERATIONS, RequestRecord, ServiceSummary, Stats};

use state::State;

/// Command-line options of `ishosting-operator simulate`.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8181")]
    pub listen: SocketAddr,
    /// Account to create at start, as KEY=BALANCE in dollars (repeatable), e.g. demo-key=500.
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// How many simulated seconds pass per real second (invoice due dates, key blocks).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Real seconds a paid service spends in each of Pending→Installing→Running.
    #[arg(long, default_value_t = 3.0)]
    pub provision_seconds: f64,
}

/// Settings of a [`Simulator`].
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Simulated seconds per real second; must be positive (1.0 otherwise).
    pub speed: f64,
    /// Real time a paid service spends pending and then installing before it
    /// runs; a reboot takes as long.
    pub provision: Duration,
    /// Accounts created at start: API key and balance in dollars.
    pub accounts: Vec<(String, Decimal)>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            speed: 1.0,
            provision: Duration::from_secs(3),
            accounts: Vec::new(),
        }
    }
}

/// Parses `KEY=BALANCE` (balance in dollars, an optional trailing `$` allowed).
fn parse_account(spec: &str) -> anyhow::Result<(String, Decimal)> {
    let (key, balance) = spec
        .rsplit_once('=')
        .context("an account is given as KEY=BALANCE")?;
    anyhow::ensure!(!key.trim().is_empty(), "an account needs a non-empty key");
    let amount = balance.trim().trim_end_matches('$');
    let balance: Decimal = amount
        .parse()
        .with_context(|| format!("balance {amount:?} is not a decimal number"))?;
    anyhow::ensure!(!balance.is_sign_negative(), "a balance cannot be negative");
    Ok((key.trim().to_owned(), balance))
}

impl From<&SimulateArgs> for SimulatorConfig {
    /// Invalid `--account` entries are skipped with a warning. [`run`] rejects
    /// them before converting.
    fn from(args: &SimulateArgs) -> Self {
        let accounts = args
            .accounts
            .iter()
            .filter_map(|spec| match parse_account(spec) {
                Ok(account) => Some(account),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an invalid --account");
                    None
                }
            })
            .collect();
        SimulatorConfig {
            speed: args.speed,
            provision: Duration::try_from_secs_f64(args.provision_seconds.max(0.0))
                .unwrap_or(Duration::ZERO),
            accounts,
        }
    }
}

/// The simulated provider. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Mutex<State>>,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        Simulator {
            inner: Arc::new(Mutex::new(State::new(&config))),
        }
    }

    /// Returns the provider API and the admin API in one router.
    pub fn router(&self) -> axum::Router {
        admin::router(self.clone()).merge(provider::router(self.clone()))
    }

    /// Binds `listen` (`127.0.0.1:0` picks a free port), serves in a background
    /// task and returns its handle.
    pub async fn start(
        config: SimulatorConfig,
        listen: SocketAddr,
    ) -> anyhow::Result<SimulatorHandle> {
        let simulator = Simulator::new(config);
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = simulator.router();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator stopped with an error");
            }
        });
        Ok(SimulatorHandle {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Locks the state and applies what time has brought about.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.tick();
        state
    }

    /// Locks the state as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A simulator serving in the background. Dropping the handle stops it too,
/// without waiting.
pub struct SimulatorHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimulatorHandle {
    /// `http://IP:PORT`; an unspecified listen address is given as loopback.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.base_url())
    }

    /// Stops serving: open connections get 5 s to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs the simulator until Ctrl-C or SIGTERM (`ishosting-operator simulate`).
/// Logs the listen address and the accounts by key fingerprint, never the keys.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    for spec in &args.accounts {
        parse_account(spec).context("invalid --account, expected KEY=BALANCE")?;
    }

    anyhow::ensure!(
        args.speed.is_finite() && args.speed > 0.0,
        "--speed must be a positive number"
    );
    anyhow::ensure!(
        args.provision_seconds.is_finite() && args.provision_seconds >= 0.0,
        "--provision-seconds must be a non-negative number"
    );

    let config = SimulatorConfig::from(&args);
    let accounts: Vec<String> = config
        .accounts
        .iter()
        .map(|(key, balance)| format!("{}={balance}", state::fingerprint(key)))
        .collect();
    let simulator = Simulator::new(config);

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        speed = args.speed,
        provision_seconds = args.provision_seconds,
        accounts = ?accounts,
        "is*hosting simulator listening on http://{addr}"
    );
    axum::serve(listener, simulator.router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("simulator server failed")?;
    tracing::info!("simulator stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_spec_parsing() {
        let (key, balance) = parse_account("demo-key=500").unwrap();
        assert_eq!(key, "demo-key");
        assert_eq!(balance, Decimal::from(500));
        assert_eq!(
            parse_account("a=b=12.50$").unwrap(),
            ("a=b".to_owned(), Decimal::new(1250, 2))
        );
        assert!(parse_account("no-balance").is_err());
        assert!(parse_account("=5").is_err());
        assert!(parse_account("k=-5").is_err());
        assert!(parse_account("k=lots").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        simulate: SimulateArgs,
    }

    fn parse_args(args: &[&str]) -> SimulateArgs {
        use clap::Parser;
        Cli::parse_from(std::iter::once("simulate").chain(args.iter().copied())).simulate
    }

    #[test]
    fn args_defaults_and_conversion() {
        let args = parse_args(&[]);
        assert_eq!(args.listen, "127.0.0.1:8181".parse().unwrap());
        assert_eq!(args.speed, 1.0);
        assert_eq!(args.provision_seconds, 3.0);
        assert!(args.accounts.is_empty());

        let args = parse_args(&[
            "--account",
            "demo-key=500",
            "--account",
            "broken",
            "--speed",
            "60",
            "--provision-seconds",
            "0.5",
        ]);
        let config = SimulatorConfig::from(&args);
        assert_eq!(
            config.accounts,
            vec![("demo-key".to_owned(), Decimal::from(500))]
        );
        assert_eq!(config.speed, 60.0);
        assert_eq!(config.provision, Duration::from_millis(500));
    }

    #[tokio::test]
    async fn run_rejects_invalid_args() {
        let mut args = parse_args(&["--account", "broken", "--listen", "127.0.0.1:0"]);
        assert!(run(args.clone()).await.is_err());

        args.accounts.clear();
        args.speed = 0.0;
        assert!(run(args.clone()).await.is_err());

        args.speed = 1.0;
        args.provision_seconds = -1.0;
        assert!(run(args).await.is_err());
    }
}

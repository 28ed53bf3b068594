//! Harness of the end-to-end tests: a real kube-apiserver started by
//! `hack/with-controlplane.sh`, the provider simulator in-process on loopback, and the
//! operator binary as a separate process with its production RBAC.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ishosting_operator::crd::{IsHostingVps, Phase};
use ishosting_operator::ishosting::{Account, ApiClient, ApiKey, ClientConfig};
use ishosting_operator::simulator::{
    AdminClient, Simulator, SimulatorConfig, SimulatorHandle, Stats,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rust_decimal::Decimal;

/// One test's world: its own namespace, simulator and operator process.
pub struct TestEnv {
    pub client: kube::Client,
    pub namespace: String,
    pub simulator: SimulatorHandle,
    pub admin: AdminClient,
    pub api_key: String,
    operator: Option<OperatorProcess>,
    operator_kubeconfig: PathBuf,
    /// Address of the operator's `/metrics` once it runs.
    metrics_addr: Option<std::net::SocketAddr>,
    /// Operator processes started so far, to name their log files apart.
    operator_starts: u32,
}

impl TestEnv {
    /// Starts a test world, or returns `None` (and prints why) when no control plane is
    /// configured outside CI. Under `CI=true` a missing control plane fails the test.
    pub async fn start(test: &str, balance: Decimal) -> Option<TestEnv> {
        TestEnv::start_with(test, balance, 1.0).await
    }

    /// Like [`TestEnv::start`], with the simulator's clock running `speed` times real
    /// time, which also shortens its rate-limit windows to 10 / `speed` and 60 / `speed`
    /// real seconds.
    pub async fn start_with(test: &str, balance: Decimal, speed: f64) -> Option<TestEnv> {
        let admin_kubeconfig = match std::env::var("ISHOSTING_E2E_KUBECONFIG") {
            Ok(path) if !path.is_empty() => PathBuf::from(path),
            _ => {
                let message = "ISHOSTING_E2E_KUBECONFIG is not set: run the tests with `make test` (hack/with-controlplane.sh starts the control plane)";
                if std::env::var("CI").is_ok_and(|value| value == "true") {
                    panic!("{message}");
                }
                eprintln!("skipping {test}: {message}");
                return None;
            }
        };
        let operator_kubeconfig = std::env::var("ISHOSTING_E2E_OPERATOR_KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|_| admin_kubeconfig.clone());

        let client = client_for(&admin_kubeconfig).await;
        let namespace = format!(
            "{}-{}",
            test.replace('_', "-"),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let manifest: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace}
        }))
        .unwrap();
        namespaces
            .create(&PostParams::default(), &manifest)
            .await
            .expect("create the test namespace");

        let api_key = format!("key-{namespace}");
        let config = SimulatorConfig {
            speed,
            provision: Duration::from_millis(500),
            accounts: vec![(api_key.clone(), balance)],
        };
        let simulator = Simulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("start the simulator");
        let admin = simulator.admin();

        Some(TestEnv {
            client,
            namespace,
            simulator,
            admin,
            api_key,
            operator: None,
            operator_kubeconfig,
            metrics_addr: None,
            operator_starts: 0,
        })
    }

    pub fn vps_api(&self) -> Api<IsHostingVps> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Starts the operator binary, watching only this test's namespace.
    pub fn start_operator(&mut self) {
        self.start_operator_with(&[], &[]);
    }

    /// Starts the operator binary with extra environment variables and flags (a later
    /// flag overrides the harness's own). Its `/metrics` listens on a free loopback port,
    /// read by [`Self::metrics_text`].
    pub fn start_operator_with(&mut self, env: &[(&str, &str)], args: &[&str]) {
        self.operator_starts += 1;
        // The port is free when probed; another process could take it before the
        // operator binds it, which would fail this test's metrics read only.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe a free port");
        let metrics_addr = probe.local_addr().expect("read the probed port");
        drop(probe);
        self.metrics_addr = Some(metrics_addr);
        self.operator = Some(OperatorProcess::spawn(
            &self.operator_kubeconfig,
            &self.namespace,
            &self.simulator.base_url(),
            &format!("operator-{}", self.operator_starts),
            &metrics_addr.to_string(),
            env,
            args,
        ));
    }

    /// Starts another operator process for this test's namespace, with `POD_NAME` set to
    /// `name` (its lease identity starts with it) and `extra` arguments appended. Its lease
    /// lives in the test's namespace, so tests running at once do not share one.
    pub fn spawn_operator(&self, name: &str, extra: &[&str]) -> OperatorProcess {
        OperatorProcess::spawn(
            &self.operator_kubeconfig,
            &self.namespace,
            &self.simulator.base_url(),
            name,
            "127.0.0.1:0",
            &[],
            extra,
        )
    }

    /// Returns the holder of the operator's Lease in the test's namespace, if any.
    pub async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        leases
            .get_opt("ishosting-operator")
            .await
            .expect("read the Lease")
            .and_then(|lease| lease.spec)
            .and_then(|spec| spec.holder_identity)
    }

    /// Returns the operator's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let addr = self.metrics_addr.expect("the operator was started");
        let url = format!("http://{addr}/metrics");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match reqwest::get(&url).await {
                Ok(response) => return response.text().await.expect("read /metrics"),
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "GET {url} failed: {error}\noperator log: {}",
                        self.operator_log_tail()
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Kills the operator with SIGKILL (`Child::kill` on Unix), as a crash would, and
    /// reaps it.
    pub fn kill_operator(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            operator.child.kill().expect("kill the operator");
            operator.child.wait().expect("reap the operator");
        }
    }

    /// Waits until the running operator's log has a line containing `marker`.
    pub async fn wait_operator_log(&self, marker: &str, timeout: Duration) {
        let log = self
            .operator
            .as_ref()
            .expect("the operator is running")
            .log
            .clone();
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().any(|line| line.contains(marker)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not log {marker:?} within {timeout:?}\noperator log: {}",
                self.operator_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the simulator's stats satisfy `check`, polling every 50 ms.
    pub async fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Stats) -> bool,
    ) -> Stats {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.admin.stats().await.expect("read the simulator stats");
            if check(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "the simulator did not show {what} within {timeout:?}; stats: {stats:?}\noperator log: {}",
                self.operator_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates the Secret `name` holding `key` under `apiKey`, or updates its key in place
    /// (a key rotation) when it exists.
    pub async fn create_secret(&self, name: &str, key: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        if secrets
            .get_opt(name)
            .await
            .expect("read the Secret")
            .is_some()
        {
            let patch = serde_json::json!({"stringData": {"apiKey": key}});
            secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("update the Secret");
            return;
        }
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "stringData": {"apiKey": key}
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the Secret");
    }

    /// Creates an `IsHostingVps` from a JSON spec.
    pub async fn create_vps(&self, name: &str, spec: serde_json::Value) -> IsHostingVps {
        self.try_create_vps(name, spec)
            .await
            .expect("create the IsHostingVps")
    }

    pub async fn try_create_vps(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<IsHostingVps, kube::Error> {
        let vps: IsHostingVps = serde_json::from_value(serde_json::json!({
            "apiVersion": "ishosting.com/v1alpha1",
            "kind": "IsHostingVps",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("a valid IsHostingVps");
        self.vps_api().create(&PostParams::default(), &vps).await
    }

    /// Waits until `check` accepts the resource, polling every 250 ms; panics with the last
    /// status seen after `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&IsHostingVps) -> bool,
    ) -> IsHostingVps {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(Some(vps)) = self.vps_api().get_opt(name).await {
                if check(&vps) {
                    return vps;
                }
                last = Some(vps);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "{name} did not reach {what} within {timeout:?}; last status: {}\noperator log: {}",
            serde_json::to_string_pretty(&last.and_then(|v| v.status)).unwrap(),
            self.operator_log_tail()
        );
    }

    pub async fn wait_phase(&self, name: &str, phase: Phase, timeout: Duration) -> IsHostingVps {
        self.wait_for(name, timeout, phase.as_str(), |vps| {
            vps.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }

    /// Waits until condition `type_` has `reason`.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        reason: &str,
        timeout: Duration,
    ) -> IsHostingVps {
        self.wait_for(name, timeout, &format!("{type_}={reason}"), |vps| {
            condition(vps, type_).is_some_and(|c| c.reason == reason)
        })
        .await
    }

    /// Returns a provider API handle for the test account, talking to the simulator.
    pub fn provider(&self) -> Account {
        let config = ClientConfig {
            base_url: self.simulator.base_url().parse().unwrap(),
            ..ClientConfig::default()
        };
        ApiClient::new(config)
            .unwrap()
            .account(ApiKey::new(self.api_key.clone()))
    }

    /// Returns the reasons of the events recorded for resource `name`, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut list: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        list.sort_by_key(|event| event.metadata.creation_timestamp.clone().map(|t| t.0));
        list.into_iter().filter_map(|event| event.reason).collect()
    }

    /// Waits until an event with `reason` exists for resource `name`.
    pub async fn wait_event(&self, name: &str, reason: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let reasons = self.event_reasons(name).await;
            if reasons.iter().any(|r| r == reason) {
                return reasons;
            }
            assert!(
                Instant::now() < deadline,
                "no {reason} event for {name} within {timeout:?}; events: {reasons:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Returns the whole log of the running operator.
    pub fn operator_log(&self) -> String {
        self.operator
            .as_ref()
            .map(|operator| std::fs::read_to_string(&operator.log).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn operator_log_tail(&self) -> String {
        self.operator
            .as_ref()
            .map(|operator| operator.log_tail())
            .unwrap_or_default()
    }
}

/// Returns condition `type_` of a resource.
pub fn condition<'a>(
    vps: &'a IsHostingVps,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    vps.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Returns the walkthrough's order: plan 29_6m in Amsterdam with Debian, 4 extra IPs and 2 GB RAM.
pub fn walkthrough_spec(secret: &str) -> serde_json::Value {
    serde_json::json!({
        "plan": "29_6m",
        "location": "ams",
        "additions": [
            {"category": "os", "code": "linux/debian11#64"},
            {"category": "ip", "quantity": 4},
            {"category": "ram", "code": "2g"}
        ],
        "tags": ["e2e"],
        "credentialsSecretRef": {"name": secret}
    })
}

async fn client_for(path: &PathBuf) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read the test kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load the test kubeconfig");
    kube::Client::try_from(config).expect("build a Kubernetes client")
}

/// The operator binary running as a child process; killed when dropped.
pub struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn spawn(
        kubeconfig: &PathBuf,
        namespace: &str,
        api_url: &str,
        name: &str,
        metrics_listen: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> OperatorProcess {
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = log_dir.join(format!("{namespace}-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ishosting-operator"));
        command
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--namespace", namespace, "--api-url", api_url])
            .args(["--lease-namespace", namespace])
            .args(["--metrics-listen", metrics_listen]);
        // Short timings keep the tests fast; a flag in `args` replaces the default here,
        // since the command line takes each flag once.
        let defaults = [
            ("--request-timeout-seconds", "3"),
            ("--order-settle-seconds", "5"),
            ("--poll-seconds", "1"),
            ("--recheck-seconds", "2"),
            ("--resync-seconds", "2"),
        ];
        for (flag, value) in defaults {
            if !args.contains(&flag) {
                command.args([flag, value]);
            }
        }
        let child = command
            .args(args)
            .env("RUST_LOG", "info,ishosting_operator=debug")
            .env("POD_NAME", name)
            .env_remove("POD_NAMESPACE")
            .env_remove("ISHOSTING_TEST_PAUSE_AT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the operator binary");
        OperatorProcess { child, log }
    }

    /// Returns the whole log of the process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Returns the last 30 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        lines[start..].join("\n")
    }

    /// Kills the process with SIGKILL, as a node failure or OOM kill would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll the operator process") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Waits up to `timeout` for a log line containing `text`.
    pub async fn wait_log(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Reads the process's `/metrics` text; the address comes from its log.
    pub async fn metrics(&self) -> String {
        let log = self.log();
        let address = log
            .lines()
            .find(|line| line.contains("serving metrics and health"))
            .and_then(|line| line.split("address=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the metrics address in the operator log")
            .to_string();
        reqwest::get(format!("http://{address}/metrics"))
            .await
            .expect("read /metrics")
            .text()
            .await
            .expect("read the /metrics body")
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the simulator saw of one test's account: money moved, requests and the busiest
/// rate-limit windows.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Tally {
    /// Orders placed, over all identities.
    pub orders: u32,
    /// Successful payments, over all identities.
    pub payments: u32,
    /// Pay calls the provider rejected.
    pub failed_payments: u32,
    /// Invoices still unpaid.
    pub unpaid_invoices: usize,
    /// Provider API requests received.
    pub requests: u64,
    /// Maximum requests with one key in any 10 s.
    pub max_per_10s: u32,
    /// Maximum requests with one key in any 60 s.
    pub max_per_60s: u32,
    /// Requests rejected by the provider's own rate limits (block or challenge).
    pub rate_limit_refusals: u32,
}

impl Tally {
    pub fn of(stats: &Stats) -> Tally {
        Tally {
            orders: stats.orders_by_identity.values().sum(),
            payments: stats.payments_by_identity.values().sum(),
            failed_payments: stats.failed_payments,
            unpaid_invoices: stats
                .invoices
                .iter()
                .filter(|invoice| invoice.status == "STATUS_UNPAID")
                .count(),
            requests: stats.requests_total,
            max_per_10s: stats
                .max_requests_per_10s
                .values()
                .copied()
                .max()
                .unwrap_or(0),
            max_per_60s: stats
                .max_requests_per_60s
                .values()
                .copied()
                .max()
                .unwrap_or(0),
            rate_limit_refusals: stats.rate_limit_refusals,
        }
    }
}

/// The operator's default request budgets per key (`--budget-per-10s`,
/// `--budget-per-minute`), which the harness leaves in place.
pub const BUDGET_PER_10S: u32 = 100;
pub const BUDGET_PER_MINUTE: u32 = 250;

/// Asserts that a run stayed within the operator's request budgets and that the provider
/// rejected nothing for rate limits.
pub fn assert_within_budget(what: &str, tally: &Tally, per_10s: u32, per_minute: u32) {
    assert!(
        tally.max_per_10s <= per_10s,
        "{what}: {} requests in 10 s, budget {per_10s}; {tally:?}",
        tally.max_per_10s
    );
    assert!(
        tally.max_per_60s <= per_minute,
        "{what}: {} requests in 60 s, budget {per_minute}; {tally:?}",
        tally.max_per_60s
    );
    assert_eq!(
        tally.rate_limit_refusals, 0,
        "{what}: provider refusals; {tally:?}"
    );
}

/// Appends one JSON row to the file named by `ISHOSTING_RELIABILITY_REPORT`, if set;
/// `hack/reliability-report.sh` renders the rows into `docs/reliability.md`.
pub fn report_row(row: serde_json::Value) {
    use std::io::Write as _;
    let Ok(path) = std::env::var("ISHOSTING_RELIABILITY_REPORT") else {
        return;
    };
    if path.is_empty() {
        return;
    }
    let mut line = row.to_string();
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the report file {path}: {e}"));
    // One write per row, so rows of tests running at once do not interleave.
    file.write_all(line.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write the report file {path}: {e}"));
}

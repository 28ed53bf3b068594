//! Crash matrix: the operator binary is killed with SIGKILL at each boundary of the money
//! flow and started again. Every run must end with the server running, one order and one
//! successful payment at the provider, and no unpaid invoice left.
//!
//! The kill points are reached deterministically. Points inside the operator use its
//! test-only pause hook (`ISHOSTING_TEST_PAUSE_AT`): the pass logs `paused at <point>` and
//! waits there until the test kills it. Points where a request is in flight use the
//! simulator: it commits the order or payment and then keeps back the response far past
//! the test, and the test kills the operator once the admin stats show the commit.
//!
//! With `ISHOSTING_RELIABILITY_REPORT=FILE` each run appends a JSON row to FILE for
//! `hack/reliability-report.sh`.

mod support;

use std::time::Duration;

use ishosting_operator::controller::reconcile::TEST_PAUSE_VAR;
use ishosting_operator::crd::Phase;
use ishosting_operator::simulator::Faults;
use rust_decimal_macros::dec;
use support::{BUDGET_PER_10S, BUDGET_PER_MINUTE, Tally, TestEnv, walkthrough_spec};

const SECRET: &str = "ishosting-credentials";
const NAME: &str = "crash";
/// Runs per kill point, each on a fresh resource in its own namespace, simulator and
/// operator; they run at once to keep the suite short.
const RUNS: usize = 3;
const REACH_TIMEOUT: Duration = Duration::from_secs(60);
const RUNNING_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the simulator keeps back a response it committed, in milliseconds. It is far
/// longer than a run, so the operator is killed while it still waits.
const HOLD_MS: u64 = 60_000;

/// How the operator is brought to a kill point.
#[derive(Clone, Copy)]
enum Reach {
    /// The operator's pause hook at this point.
    Pause(&'static str),
    /// The simulator commits this operation (`order` or `pay`) and keeps back its response.
    HoldAnswer(&'static str),
}

#[derive(Clone, Copy)]
struct KillPoint {
    /// Sort key and short name in the report.
    id: &'static str,
    /// What had happened when the process died.
    scenario: &'static str,
    reach: Reach,
}

/// Runs one crash run: start, reach the point, SIGKILL, restart, wait for Running, and
/// check the money at the provider. Returns `None` when no control plane is configured.
async fn crash_run(point: KillPoint, run: usize) -> Option<Tally> {
    let mut env = TestEnv::start(&format!("crash-{}-{run}", point.id), dec!(500)).await?;
    env.create_secret(SECRET, &env.api_key.clone()).await;
    match point.reach {
        Reach::Pause(at) => env.start_operator_with(&[(TEST_PAUSE_VAR, at)], &[]),
        Reach::HoldAnswer(operation) => {
            let mut faults = Faults {
                hold_answers_ms: HOLD_MS,
                ..Faults::default()
            };
            faults.drop_answers.insert(operation.into(), 1);
            env.admin.set_faults(&faults).await.unwrap();
            env.start_operator();
        }
    }
    env.create_vps(NAME, walkthrough_spec(SECRET)).await;

    match point.reach {
        Reach::Pause(at) => {
            env.wait_operator_log(&format!("paused at {at}"), REACH_TIMEOUT)
                .await
        }
        Reach::HoldAnswer("order") => {
            env.wait_stats("a committed order", REACH_TIMEOUT, |stats| {
                stats.orders_by_identity.values().sum::<u32>() >= 1
            })
            .await;
        }
        Reach::HoldAnswer(_) => {
            env.wait_stats("a committed payment", REACH_TIMEOUT, |stats| {
                stats.payments_by_identity.values().sum::<u32>() >= 1
            })
            .await;
        }
    }
    env.kill_operator();

    // The provider's records and the status show that the process died at the intended point.
    let before = Tally::of(&env.admin.stats().await.unwrap());
    let status = env
        .vps_api()
        .get(NAME)
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    let what = format!("{} run {run} at the kill", point.id);
    assert!(status.order_identity.is_some(), "{what}: {status:?}");
    let (orders, payments, invoice_recorded, paid_recorded) = match point.id {
        "1-order-recorded" => (0, 0, false, false),
        "2-order-in-flight" | "3-order-answered" => (1, 0, false, false),
        "4-pay-in-flight" | "5-pay-answered" => (1, 1, true, false),
        _ => (1, 1, true, true),
    };
    assert_eq!(before.orders, orders, "{what}: {before:?}");
    assert_eq!(before.payments, payments, "{what}: {before:?}");
    assert_eq!(
        status.invoice_id.is_some(),
        invoice_recorded,
        "{what}: {status:?}"
    );
    assert_eq!(
        status.invoice_status.as_deref() == Some("Paid"),
        paid_recorded,
        "{what}: {status:?}"
    );
    let status_at_kill = match (&status.invoice_id, status.invoice_status.as_deref()) {
        (None, _) => "identity, no invoice".to_string(),
        (Some(_), Some(invoice)) => format!("invoice {invoice}"),
        (Some(_), None) => "invoice".to_string(),
    };

    env.start_operator();
    let vps = env.wait_phase(NAME, Phase::Running, RUNNING_TIMEOUT).await;
    let stats = env.admin.stats().await.unwrap();
    let tally = Tally::of(&stats);
    let what = format!("{} run {run}", point.id);
    assert_eq!(tally.orders, 1, "{what}: orders; {stats:?}");
    assert_eq!(tally.payments, 1, "{what}: payments; {stats:?}");
    assert_eq!(
        tally.unpaid_invoices, 0,
        "{what}: unpaid invoices; {stats:?}"
    );
    // The payment's outcome is read from the invoice, so no pay call is even rejected.
    assert_eq!(
        tally.failed_payments, 0,
        "{what}: rejected payments; {stats:?}"
    );
    let status = vps.status.as_ref().unwrap();
    assert_eq!(status.invoice_status.as_deref(), Some("Paid"), "{what}");
    support::assert_within_budget(&what, &tally, BUDGET_PER_10S, BUDGET_PER_MINUTE);

    support::report_row(serde_json::json!({
        "table": "crash",
        "id": point.id,
        "scenario": point.scenario,
        "run": run,
        "status_at_kill": status_at_kill,
        "provider_at_kill": {"orders": before.orders, "payments": before.payments},
        "final_phase": Phase::Running.as_str(),
        "tally": tally,
    }));
    Some(tally)
}

/// Runs [`RUNS`] crash runs at once; each checks its own outcome.
async fn crash_matrix_row(point: KillPoint) {
    let runs = (1..=RUNS).map(|run| crash_run(point, run));
    futures::future::join_all(runs).await;
}

#[tokio::test]
async fn crash_after_order_identity_recorded() {
    crash_matrix_row(KillPoint {
        id: "1-order-recorded",
        scenario: "order identity recorded in status, order not sent",
        reach: Reach::Pause("order-recorded"),
    })
    .await;
}

#[tokio::test]
async fn crash_while_order_request_in_flight() {
    crash_matrix_row(KillPoint {
        id: "2-order-in-flight",
        scenario: "order sent and committed, answer not received",
        reach: Reach::HoldAnswer("order"),
    })
    .await;
}

#[tokio::test]
async fn crash_after_order_answer() {
    crash_matrix_row(KillPoint {
        id: "3-order-answered",
        scenario: "order answer received, invoice id not in status",
        reach: Reach::Pause("order-answered"),
    })
    .await;
}

#[tokio::test]
async fn crash_while_payment_request_in_flight() {
    crash_matrix_row(KillPoint {
        id: "4-pay-in-flight",
        scenario: "payment sent and committed, answer not received",
        reach: Reach::HoldAnswer("pay"),
    })
    .await;
}

#[tokio::test]
async fn crash_after_payment_answer() {
    crash_matrix_row(KillPoint {
        id: "5-pay-answered",
        scenario: "payment answer received, not in status",
        reach: Reach::Pause("pay-answered"),
    })
    .await;
}

#[tokio::test]
async fn crash_while_provisioning_polled() {
    crash_matrix_row(KillPoint {
        id: "6-provisioning",
        scenario: "paid, server provisioning and being polled",
        reach: Reach::Pause("provisioning"),
    })
    .await;
}

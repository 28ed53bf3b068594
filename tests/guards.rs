//! End-to-end tests of the spending guards: `spec.maxTotal`, `spec.orderPolicy`, the
//! operator's per-account limits and the insufficient-balance report, on a real
//! kube-apiserver with the simulator standing in for the provider.

mod support;

use std::time::Duration;

use ishosting_operator::controller::order::{due_date_text, format_money};
use ishosting_operator::crd::Phase;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use rust_decimal_macros::dec;
use support::{TestEnv, condition, walkthrough_spec};

const SECRET: &str = "ishosting-credentials";
const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);
const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);

fn with(mut spec: serde_json::Value, field: &str, value: serde_json::Value) -> serde_json::Value {
    spec[field] = value;
    spec
}

async fn patch_spec(env: &TestEnv, name: &str, spec: serde_json::Value) {
    env.vps_api()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("patch the spec");
}

/// Returns how many orders the simulator accepted for the resource.
async fn orders_of(env: &TestEnv, name: &str) -> u32 {
    let vps = env.vps_api().get(name).await.unwrap();
    let identity = format!("isvps-{}", vps.uid().unwrap());
    let stats = env.admin.stats().await.unwrap();
    stats
        .orders_by_identity
        .get(&identity)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn max_total_blocks_then_raise_orders_once() {
    let Some(mut env) = TestEnv::start("max-total", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    let spec = with(
        walkthrough_spec(SECRET),
        "maxTotal",
        serde_json::json!({"amount": "1.00", "currency": "USD"}),
    );
    env.create_vps("web-1", spec).await;

    let vps = env
        .wait_condition("web-1", "Stalled", "QuoteAboveMaxTotal", CONDITION_TIMEOUT)
        .await;
    let status = vps.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Quoted));
    let quote = status.quote.clone().expect("the quote is shown");
    let stalled = condition(&vps, "Stalled").unwrap();
    assert_eq!(stalled.status, "True");
    let quoted = format!("{} {}", quote.total, quote.currency);
    assert!(stalled.message.contains(&quoted), "{}", stalled.message);
    assert!(stalled.message.contains("1.00 USD"), "{}", stalled.message);
    assert!(stalled.message.contains("maxTotal"), "{}", stalled.message);
    assert_eq!(condition(&vps, "Ordered").unwrap().status, "False");
    assert!(status.order_identity.is_none(), "{status:?}");
    env.wait_event("web-1", "QuoteAboveMaxTotal", CONDITION_TIMEOUT)
        .await;

    // Held passes must not order: give the operator a few rechecks.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(orders_of(&env, "web-1").await, 0);

    patch_spec(
        &env,
        "web-1",
        serde_json::json!({"maxTotal": {"amount": "1000.00", "currency": "USD"}}),
    )
    .await;
    env.wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(orders_of(&env, "web-1").await, 1);
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.orders_by_identity.values().sum::<u32>(), 1);
    assert_eq!(stats.payments_by_identity.values().sum::<u32>(), 1);
}

#[tokio::test]
async fn max_total_currency_mismatch_stalls() {
    let Some(mut env) = TestEnv::start("max-total-currency", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    let spec = with(
        walkthrough_spec(SECRET),
        "maxTotal",
        serde_json::json!({"amount": "5000", "currency": "EUR"}),
    );
    env.create_vps("web-1", spec).await;
    let vps = env
        .wait_condition(
            "web-1",
            "Stalled",
            "MaxTotalCurrencyMismatch",
            CONDITION_TIMEOUT,
        )
        .await;
    let message = &condition(&vps, "Stalled").unwrap().message;
    assert!(message.contains("5000 EUR"), "{message}");
    assert_eq!(orders_of(&env, "web-1").await, 0);
}

#[tokio::test]
async fn max_total_rejects_invalid_values() {
    let Some(env) = TestEnv::start("max-total-invalid", dec!(0)).await else {
        return;
    };
    let cases = [
        (
            serde_json::json!({"amount": "0.00", "currency": "USD"}),
            "greater than zero",
        ),
        (
            serde_json::json!({"amount": "-5", "currency": "USD"}),
            "decimal number",
        ),
        (
            serde_json::json!({"amount": "ten", "currency": "USD"}),
            "decimal number",
        ),
        (
            serde_json::json!({"amount": "10", "currency": "usd"}),
            "3-letter",
        ),
        (
            serde_json::json!({"amount": "10", "currency": "DOLLAR"}),
            "currency",
        ),
    ];
    for (index, (max_total, expected)) in cases.into_iter().enumerate() {
        let spec = with(walkthrough_spec(SECRET), "maxTotal", max_total.clone());
        let error = env
            .try_create_vps(&format!("bad-{index}"), spec)
            .await
            .expect_err("the API server rejects an invalid maxTotal");
        assert!(error.to_string().contains(expected), "{max_total}: {error}");
    }
}

#[tokio::test]
async fn quote_only_quotes_then_orders() {
    let Some(mut env) = TestEnv::start("quote-only", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    let spec = with(
        walkthrough_spec(SECRET),
        "orderPolicy",
        serde_json::json!("QuoteOnly"),
    );
    env.create_vps("web-1", spec).await;

    let vps = env
        .wait_condition("web-1", "Ordered", "QuoteOnly", CONDITION_TIMEOUT)
        .await;
    let status = vps.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Quoted));
    assert!(status.quote.is_some(), "{status:?}");
    let ordered = condition(&vps, "Ordered").unwrap();
    assert_eq!(ordered.status, "False");
    assert!(
        ordered.message.contains("orderPolicy"),
        "{}",
        ordered.message
    );
    assert!(ordered.message.contains("Order"), "{}", ordered.message);
    assert_eq!(condition(&vps, "Stalled").unwrap().status, "False");
    assert_eq!(condition(&vps, "Ready").unwrap().reason, "QuoteOnly");

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(orders_of(&env, "web-1").await, 0);
    assert!(env.admin.stats().await.unwrap().invoices.is_empty());

    patch_spec(&env, "web-1", serde_json::json!({"orderPolicy": "Order"})).await;
    env.wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    assert_eq!(orders_of(&env, "web-1").await, 1);
}

#[tokio::test]
async fn hourly_order_limit_blocks_next_order() {
    // The balance cannot pay the first order, so it is still being paid while the
    // second resource is blocked: paying an existing invoice is not limited.
    let Some(mut env) = TestEnv::start("order-limit", dec!(1)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    let other_key = format!("other-{}", env.namespace);
    env.admin
        .create_account(&other_key, dec!(500))
        .await
        .unwrap();
    env.create_secret("other-credentials", &other_key).await;
    env.start_operator_with(&[], &["--max-orders-per-hour", "1"]);

    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    env.wait_condition("web-1", "Paid", "InsufficientFunds", CONDITION_TIMEOUT)
        .await;

    let blocked_since = std::time::Instant::now();
    let lists_before = count_invoice_lists(&env).await;
    // web-1's order decision read the key's invoices once.
    assert_eq!(lists_before, 1);
    env.create_vps("web-2", walkthrough_spec(SECRET)).await;
    let vps = env
        .wait_condition("web-2", "Stalled", "AccountOrderLimit", CONDITION_TIMEOUT)
        .await;
    let message = &condition(&vps, "Stalled").unwrap().message;
    assert!(message.contains("1 order(s) in the last hour"), "{message}");
    assert!(message.contains("--max-orders-per-hour"), "{message}");
    assert_eq!(
        vps.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Quoted)
    );
    env.wait_event("web-2", "AccountOrderLimit", CONDITION_TIMEOUT)
        .await;
    let metrics = env.metrics_text().await;
    assert!(
        metrics
            .contains("ishosting_operator_spending_limit_blocks_total{limit=\"orders_per_hour\"}"),
        "{metrics}"
    );

    // Another account is not limited by this one's orders.
    env.create_vps("web-3", walkthrough_spec("other-credentials"))
        .await;
    env.wait_phase("web-3", Phase::Running, RUNNING_TIMEOUT)
        .await;

    // The first order is paid once the balance allows it; the second stays blocked.
    env.admin.top_up(&env.api_key, dec!(1000)).await.unwrap();
    env.wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let vps = env.vps_api().get("web-2").await.unwrap();
    assert_eq!(
        condition(&vps, "Stalled").unwrap().reason,
        "AccountOrderLimit"
    );
    assert_eq!(orders_of(&env, "web-1").await, 1);
    assert_eq!(orders_of(&env, "web-2").await, 0);
    assert_eq!(orders_of(&env, "web-3").await, 1);

    // web-2 is rechecked every 2 s here, but the key's invoice list is cached for 15 s.
    let lists = count_invoice_lists(&env).await - lists_before;
    let seconds = blocked_since.elapsed().as_secs();
    eprintln!("invoice list reads for the limited key over {seconds} s of web-2 blocked: {lists}");
    assert!(
        lists as u64 <= seconds / 15 + 2,
        "{lists} invoice list reads in {seconds} s"
    );
}

/// Returns how many `GET /billing/invoices` the simulator received with the test's key.
async fn count_invoice_lists(env: &TestEnv) -> usize {
    let fingerprint = env.provider().fingerprint();
    env.admin
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/billing/invoices"))
        .filter(|r| r.key_fingerprint.as_deref() == Some(fingerprint.as_str()))
        .count()
}

#[tokio::test]
async fn daily_spend_limit_blocks_order() {
    let Some(mut env) = TestEnv::start("spend-limit", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator_with(&[], &["--max-spend-per-day", "5"]);
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    let vps = env
        .wait_condition("web-1", "Stalled", "AccountSpendLimit", CONDITION_TIMEOUT)
        .await;
    let message = &condition(&vps, "Stalled").unwrap().message;
    assert!(message.contains("5.00 USD"), "{message}");
    assert_eq!(orders_of(&env, "web-1").await, 0);
    let metrics = env.metrics_text().await;
    assert!(
        metrics.contains("ishosting_operator_spending_limit_blocks_total{limit=\"spend_per_day\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn insufficient_balance_names_amount_and_due() {
    let Some(mut env) = TestEnv::start("insufficient", dec!(1)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    let vps = env
        .wait_condition("web-1", "Stalled", "InsufficientFunds", CONDITION_TIMEOUT)
        .await;
    let invoice_id = vps.status.clone().unwrap().invoice_id.unwrap();
    let invoice = env.provider().invoice(&invoice_id).await.unwrap();
    let total = invoice.total.as_ref().unwrap();
    let amount = format_money(total.amount, &total.currency);
    let due = due_date_text(invoice.due_to.as_deref().unwrap());
    assert!(due.ends_with('Z'), "due date {due} is RFC 3339");

    let message = &condition(&vps, "Stalled").unwrap().message;
    assert!(message.contains(&invoice_id), "{message}");
    assert!(message.contains(&amount), "{message}");
    assert!(message.contains(&due), "{message}");
    assert!(message.contains("every 2 s"), "{message}");
    assert_eq!(condition(&vps, "Paid").unwrap().message, *message);

    // The payment is retried on the recheck timer, never ordered again.
    let failed_before = env.admin.stats().await.unwrap().failed_payments;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = env.admin.stats().await.unwrap();
    assert!(stats.failed_payments > failed_before, "{stats:?}");
    assert!(
        stats.failed_payments - failed_before <= 4,
        "payment retried faster than the 2 s recheck: {stats:?}"
    );
    assert_eq!(stats.orders_by_identity.values().sum::<u32>(), 1);
}

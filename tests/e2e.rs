//! End-to-end tests: a real kube-apiserver and etcd (started by `make test`), the CRD and
//! RBAC from `deploy/`, the provider simulator over HTTP on loopback, and the operator
//! binary as a separate process.

mod support;

use std::time::Duration;

use ishosting_operator::crd::Phase;
use ishosting_operator::ishosting::ApiKey;
use kube::ResourceExt;
use rust_decimal_macros::dec;
use support::{TestEnv, condition, walkthrough_spec};

const SECRET: &str = "ishosting-credentials";
const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);
const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn walkthrough_vps_reaches_running() {
    let Some(mut env) = TestEnv::start("walkthrough", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;

    let vps = env
        .wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    let status = vps.status.clone().unwrap();
    let quote = status.quote.as_ref().expect("quote recorded");
    assert_eq!(quote.currency, "USD");
    assert!(quote.total.parse::<f64>().unwrap() > 0.0, "quote {quote:?}");
    assert!(status.invoice_id.is_some(), "invoice id recorded");
    assert_eq!(status.invoice_status.as_deref(), Some("Paid"));
    assert!(status.service_id.is_some(), "service id recorded");
    assert!(status.public_ip.is_some(), "public IP recorded");
    assert_eq!(status.observed_generation, vps.metadata.generation);
    assert_eq!(condition(&vps, "Ready").unwrap().status, "True");
    assert_eq!(condition(&vps, "Paid").unwrap().status, "True");
    assert_eq!(condition(&vps, "Stalled").unwrap().status, "False");

    let uid = vps.uid().unwrap();
    let identity = format!("isvps-{uid}");
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity.get(&identity),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(
        stats.payments_by_identity.get(&identity),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.orders_by_identity.values().sum::<u32>(), 1);

    let service = stats
        .services
        .iter()
        .find(|s| Some(&s.id) == status.service_id.as_ref())
        .expect("service at the simulator");
    assert!(
        service.tags.contains(&format!("k8s-uid:{uid}")),
        "{service:?}"
    );
    assert!(service.tags.contains(&"e2e".to_string()), "{service:?}");
    assert_eq!(service.name, format!("{}/web-1", env.namespace));

    let reasons = env.wait_event("web-1", "Running", CONDITION_TIMEOUT).await;
    let position = |reason: &str| reasons.iter().position(|r| r == reason);
    assert!(position("Quoted").is_some(), "{reasons:?}");
    assert!(position("Quoted") < position("Ordered"), "{reasons:?}");
    assert!(position("Ordered") < position("Paid"), "{reasons:?}");
    assert!(position("Paid") < position("Running"), "{reasons:?}");

    // A settled server is polled every 2 s here, but an unchanged status is not rewritten.
    let before = env.vps_api().get("web-1").await.unwrap().resource_version();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = env.vps_api().get("web-1").await.unwrap().resource_version();
    assert_eq!(before, after, "the status was rewritten without a change");
}

#[tokio::test]
async fn settled_server_follows_spec_and_provider() {
    let Some(mut env) = TestEnv::start("day-two", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    let vps = env
        .wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    let service_id = vps.status.clone().unwrap().service_id.unwrap();

    let patch = serde_json::json!({"spec": {"tags": ["e2e", "blue"], "autoRenew": false, "name": "web-1.example"}});
    let updated = env
        .vps_api()
        .patch(
            "web-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let generation = updated.metadata.generation;
    env.wait_for(
        "web-1",
        CONDITION_TIMEOUT,
        "the new generation applied",
        |vps| vps.status.as_ref().and_then(|s| s.configured_generation) == generation,
    )
    .await;
    let server = env.provider().vps(&service_id).await.unwrap();
    assert!(server.tags.contains(&"blue".to_string()), "{server:?}");
    assert!(
        server
            .tags
            .contains(&format!("k8s-uid:{}", vps.uid().unwrap())),
        "{server:?}"
    );
    assert_eq!(server.auto_renew, Some(false));
    assert_eq!(server.name, "web-1.example");

    env.provider()
        .vps_action(&service_id, ishosting_operator::ishosting::VpsAction::Stop)
        .await
        .unwrap();
    let vps = env
        .wait_phase("web-1", Phase::Stopped, CONDITION_TIMEOUT)
        .await;
    assert_eq!(condition(&vps, "Ready").unwrap().status, "False");
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.orders_by_identity.values().sum::<u32>(), 1);
}

#[tokio::test]
async fn unpaid_invoice_expiry_ends_in_cancelled() {
    let Some(mut env) = TestEnv::start("invoice-expiry", dec!(1)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    env.wait_condition("web-1", "Paid", "InsufficientFunds", CONDITION_TIMEOUT)
        .await;

    // The provider cancels an unpaid invoice after 3 days.
    env.admin.advance_clock(4.0 * 86_400.0).await.unwrap();
    let vps = env
        .wait_phase("web-1", Phase::Cancelled, CONDITION_TIMEOUT)
        .await;
    assert_eq!(condition(&vps, "Paid").unwrap().reason, "InvoiceCancelled");
    assert_eq!(
        condition(&vps, "Stalled").unwrap().reason,
        "InvoiceCancelled"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity.values().sum::<u32>(),
        1,
        "{stats:?}"
    );
    assert!(stats.payments_by_identity.is_empty(), "{stats:?}");
}

#[tokio::test]
async fn delete_keeps_paid_server() {
    let Some(mut env) = TestEnv::start("delete-paid", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    let vps = env
        .wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    let service_id = vps.status.unwrap().service_id.unwrap();

    env.vps_api()
        .delete("web-1", &Default::default())
        .await
        .unwrap();
    env.wait_event("web-1", "ServerRetained", CONDITION_TIMEOUT)
        .await;
    let deadline = std::time::Instant::now() + CONDITION_TIMEOUT;
    while env.vps_api().get_opt("web-1").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "web-1 was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let server = env.provider().vps(&service_id).await.unwrap();
    assert_eq!(
        server.status.code,
        ishosting_operator::ishosting::ServiceStatusCode::Running
    );
}

#[tokio::test]
async fn unknown_plan_orders_nothing() {
    let Some(mut env) = TestEnv::start("unknown-plan", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps(
        "bad-plan",
        serde_json::json!({"plan": "999_6m", "credentialsSecretRef": {"name": SECRET}}),
    )
    .await;

    let vps = env
        .wait_condition("bad-plan", "Stalled", "ValidationFailed", CONDITION_TIMEOUT)
        .await;
    let stalled = condition(&vps, "Stalled").unwrap();
    assert_eq!(stalled.status, "True");
    assert!(stalled.message.contains("999_6m"), "{}", stalled.message);
    assert_eq!(condition(&vps, "Quoted").unwrap().status, "False");
    assert_eq!(vps.status.as_ref().unwrap().phase, Some(Phase::Pending));
    // The status write that records the error does not start another pass at once.
    let requests = env.admin.stats().await.unwrap().requests_total;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.admin.stats().await.unwrap().requests_total, requests);

    // Give the operator time for a few more passes: still nothing ordered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = env.admin.stats().await.unwrap();
    assert!(stats.orders_by_identity.is_empty(), "{stats:?}");
    assert!(stats.invoices.is_empty(), "{stats:?}");
}

#[tokio::test]
async fn missing_secret_recovers_when_created() {
    let Some(mut env) = TestEnv::start("missing-secret", dec!(500)).await else {
        return;
    };
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;

    let vps = env
        .wait_condition("web-1", "Stalled", "SecretNotFound", CONDITION_TIMEOUT)
        .await;
    let stalled = condition(&vps, "Stalled").unwrap();
    assert_eq!(stalled.status, "True");
    assert!(stalled.message.contains(SECRET), "{}", stalled.message);
    assert!(env.admin.stats().await.unwrap().requests_total == 0);

    env.create_secret(SECRET, &env.api_key.clone()).await;
    let vps = env
        .wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    assert_eq!(condition(&vps, "Stalled").unwrap().status, "False");
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.orders_by_identity.values().sum::<u32>(), 1);
}

#[tokio::test]
async fn rejected_key_recovers_after_rotation() {
    let Some(mut env) = TestEnv::start("rejected-key", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, "not-a-key-of-this-account").await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;

    let vps = env
        .wait_condition("web-1", "Stalled", "CredentialsRejected", CONDITION_TIMEOUT)
        .await;
    let stalled = condition(&vps, "Stalled").unwrap();
    assert_eq!(stalled.status, "True");
    assert!(stalled.message.contains(SECRET), "{}", stalled.message);
    assert!(stalled.message.contains("70 days"), "{}", stalled.message);
    assert!(
        !stalled.message.contains("not-a-key-of-this-account"),
        "the key leaked into status"
    );
    let stats = env.admin.stats().await.unwrap();
    assert!(stats.orders_by_identity.is_empty(), "{stats:?}");
    env.wait_event("web-1", "CredentialsRejected", CONDITION_TIMEOUT)
        .await;

    // A rotated key in the same Secret is used without restarting the operator.
    env.create_secret(SECRET, &env.api_key.clone()).await;
    let vps = env
        .wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    assert_eq!(condition(&vps, "Stalled").unwrap().status, "False");
}

#[tokio::test]
async fn shared_rejected_key_stalls_all_resources() {
    let Some(mut env) = TestEnv::start("shared-rejected-key", dec!(500)).await else {
        return;
    };
    let bad_key = "expired-key-of-two-resources";
    env.create_secret(SECRET, bad_key).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    env.create_vps("web-2", walkthrough_spec(SECRET)).await;

    for name in ["web-1", "web-2"] {
        let vps = env
            .wait_condition(name, "Stalled", "CredentialsRejected", CONDITION_TIMEOUT)
            .await;
        let stalled = condition(&vps, "Stalled").unwrap();
        assert_eq!(stalled.status, "True");
        assert!(stalled.message.contains(SECRET), "{}", stalled.message);
        assert!(stalled.message.contains("70 days"), "{}", stalled.message);
        assert!(
            !stalled.message.contains(bad_key),
            "the key leaked into status"
        );
    }

    // The key in the Secret is replaced. Both resources use the new one without a restart.
    env.create_secret(SECRET, &env.api_key.clone()).await;
    for name in ["web-1", "web-2"] {
        env.wait_phase(name, Phase::Running, RUNNING_TIMEOUT).await;
    }

    let bad = ApiKey::new(bad_key.to_string()).fingerprint();
    let requests = env.admin.requests().await.unwrap();
    let with_bad_key: Vec<_> = requests
        .iter()
        .filter(|r| r.key_fingerprint.as_deref() == Some(bad.as_str()))
        .collect();
    assert!(!with_bad_key.is_empty(), "the bad key was never tried");
    let money: Vec<_> = with_bad_key
        .iter()
        .filter(|r| {
            r.method == "POST" && (r.path.ends_with("/billing/order") || r.path.ends_with("/pay"))
        })
        .collect();
    assert!(
        money.is_empty(),
        "order or pay sent with the rejected key: {money:?}"
    );
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity.values().sum::<u32>(),
        2,
        "{stats:?}"
    );
    assert!(
        stats.orders_by_identity.values().all(|n| *n == 1),
        "{stats:?}"
    );
    assert!(
        stats.payments_by_identity.values().all(|n| *n == 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn insufficient_balance_pays_after_top_up() {
    let Some(mut env) = TestEnv::start("low-balance", dec!(1)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;

    let vps = env
        .wait_condition("web-1", "Paid", "InsufficientFunds", CONDITION_TIMEOUT)
        .await;
    let status = vps.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Ordered));
    assert_eq!(status.invoice_status.as_deref(), Some("Unpaid"));
    assert_eq!(condition(&vps, "Stalled").unwrap().status, "True");
    let invoice_id = status.invoice_id.clone().expect("invoice recorded");
    // A rejected payment is retried every --recheck-seconds (2 s here), never at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(stats.failed_payments, 1, "{stats:?}");

    env.admin.top_up(&env.api_key, dec!(500)).await.unwrap();
    let vps = env
        .wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    assert_eq!(vps.status.as_ref().unwrap().invoice_id, Some(invoice_id));

    let identity = format!("isvps-{}", vps.uid().unwrap());
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity.get(&identity),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(
        stats.payments_by_identity.get(&identity),
        Some(&1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn delete_cancels_unpaid_invoice() {
    let Some(mut env) = TestEnv::start("delete-unpaid", dec!(1)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    let vps = env
        .wait_condition("web-1", "Paid", "InsufficientFunds", CONDITION_TIMEOUT)
        .await;
    let invoice_id = vps.status.unwrap().invoice_id.unwrap();

    env.vps_api()
        .delete("web-1", &Default::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + CONDITION_TIMEOUT;
    while env.vps_api().get_opt("web-1").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "web-1 was not deleted: {}",
            env.operator_log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = env.admin.stats().await.unwrap();
    let invoice = stats
        .invoices
        .iter()
        .find(|i| i.id.to_string() == invoice_id)
        .expect("invoice at the simulator");
    assert!(
        invoice.status.to_ascii_lowercase().contains("cancel"),
        "{invoice:?}"
    );
}

#[tokio::test]
async fn api_server_rejects_invalid_additions() {
    let Some(env) = TestEnv::start("invalid-additions", dec!(0)).await else {
        return;
    };
    let cases = [
        (
            serde_json::json!({"category": "ip", "code": "x", "quantity": 2}),
            "exactly one of code or quantity",
        ),
        (
            serde_json::json!({"category": "ip"}),
            "exactly one of code or quantity",
        ),
        (
            serde_json::json!({"category": "ip", "quantity": 0}),
            "quantity must be positive",
        ),
    ];
    for (index, (addition, expected)) in cases.into_iter().enumerate() {
        let spec = serde_json::json!({"plan": "29_6m", "additions": [addition]});
        let error = env
            .try_create_vps(&format!("invalid-{index}"), spec)
            .await
            .expect_err("the API server must reject the addition");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[tokio::test]
async fn api_server_keeps_plan_immutable() {
    let Some(env) = TestEnv::start("immutable-plan", dec!(0)).await else {
        return;
    };
    env.create_vps("web-1", serde_json::json!({"plan": "29_6m"}))
        .await;
    let patch = serde_json::json!({"spec": {"plan": "29_1y"}});
    let error = env
        .vps_api()
        .patch(
            "web-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect_err("the API server must reject a plan change");
    assert!(error.to_string().contains("plan is immutable"), "{error}");
}

#[tokio::test]
async fn kubectl_explain_shows_field_docs() {
    let Some(_env) = TestEnv::start("explain", dec!(0)).await else {
        return;
    };
    let kubeconfig = std::env::var("ISHOSTING_E2E_KUBECONFIG").unwrap();
    // The API server publishes a new CRD's OpenAPI schema a few seconds after it is
    // established, so the command is retried for a while.
    let mut last = String::new();
    for _ in 0..60 {
        let output = std::process::Command::new("kubectl")
            .args([
                "explain",
                "ishostingvps.spec.plan",
                "--kubeconfig",
                &kubeconfig,
            ])
            .output()
            .expect("run kubectl");
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() && last.contains("Tariff plan code") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("kubectl explain did not show the plan's doc: {last}");
}

/// Runs the walkthrough with the simulator dropping the first response to `operation`
/// after committing it, and returns the stats once the server runs.
async fn walkthrough_with_dropped_answer(
    test: &str,
    operation: &str,
) -> Option<ishosting_operator::simulator::Stats> {
    let mut env = TestEnv::start(test, dec!(500)).await?;
    let mut faults = ishosting_operator::simulator::Faults::default();
    faults.drop_answers.insert(operation.into(), 1);
    env.admin.set_faults(&faults).await.unwrap();
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;

    let vps = env
        .wait_phase("web-1", Phase::Running, RUNNING_TIMEOUT)
        .await;
    let identity = format!("isvps-{}", vps.uid().unwrap());
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity.get(&identity),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(
        stats.payments_by_identity.get(&identity),
        Some(&1),
        "{stats:?}"
    );
    Some(stats)
}

#[tokio::test]
async fn lost_order_answer_is_found_not_reordered() {
    // The provider commits the order, but the operator's connection drops. After the
    // settle window the operator finds the order by its identity instead of ordering again.
    let Some(stats) = walkthrough_with_dropped_answer("lost-order", "order").await else {
        return;
    };
    assert_eq!(stats.invoices.len(), 1, "{stats:?}");
}

#[tokio::test]
async fn lost_payment_answer_is_not_paid_twice() {
    let Some(stats) = walkthrough_with_dropped_answer("lost-payment", "pay").await else {
        return;
    };
    // The payment's outcome is read from the invoice, so no pay call is even rejected.
    assert_eq!(stats.failed_payments, 0, "{stats:?}");
}

#[tokio::test]
async fn rejected_key_blocks_changes_until_it_works() {
    let Some(mut env) = TestEnv::start("key-breaker", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    env.start_operator();
    env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    env.create_vps("web-2", walkthrough_spec(SECRET)).await;
    let mut services = Vec::new();
    for name in ["web-1", "web-2"] {
        let vps = env.wait_phase(name, Phase::Running, RUNNING_TIMEOUT).await;
        services.push(vps.status.unwrap().service_id.unwrap());
    }

    // The provider now rejects the key. A tag change on web-1 meets the rejection first and
    // opens the breaker; web-2's change must then not be sent at all.
    env.admin.set_expired(&env.api_key, true).await.unwrap();
    let seen_before = env.admin.requests().await.unwrap().len();
    let patch_tags = |tag: &'static str| serde_json::json!({"spec": {"tags": ["e2e", tag]}});
    for name in ["web-1", "web-2"] {
        env.vps_api()
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch_tags("blue")),
            )
            .await
            .unwrap();
        let vps = env
            .wait_condition(name, "Stalled", "CredentialsRejected", CONDITION_TIMEOUT)
            .await;
        let message = &condition(&vps, "Stalled").unwrap().message;
        assert!(message.contains(SECRET), "{message}");
        assert!(message.contains("70 days"), "{message}");
    }
    let requests = env.admin.requests().await.unwrap();
    let patches_for = |service: &str| {
        requests[seen_before..]
            .iter()
            .filter(|r| r.method == "PATCH" && r.path == format!("/vps/{service}"))
            .count()
    };
    assert_eq!(
        patches_for(&services[0]),
        1,
        "web-1 sends the change that is rejected"
    );
    assert_eq!(
        patches_for(&services[1]),
        0,
        "web-2's change is held by the breaker"
    );

    // The same key works again: the next pass reads once, the breaker closes, and both
    // changes reach the servers without an operator restart.
    env.admin.set_expired(&env.api_key, false).await.unwrap();
    for (name, service) in ["web-1", "web-2"].into_iter().zip(&services) {
        env.wait_for(name, RUNNING_TIMEOUT, "the tag change applied", |vps| {
            let status = vps.status.as_ref();
            status.and_then(|s| s.configured_generation) == vps.metadata.generation
        })
        .await;
        let server = env.provider().vps(service).await.unwrap();
        assert!(server.tags.contains(&"blue".to_string()), "{server:?}");
    }
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity.values().sum::<u32>(),
        2,
        "{stats:?}"
    );
}

//! The API client against the simulator over real HTTP on loopback: the client and the
//! simulator were each written from the provider's documentation, so these tests check
//! both against each other.

use std::time::Duration;

use ishosting_operator::ishosting::{
    Addition, ApiClient, ApiError, ApiKey, ClientConfig, ErrorClass, InvoiceFilter, InvoiceStatus,
    OrderItem, OrderLocation, OrderRequest, PayRequest, PlanFilter, ServiceStatusCode,
    TransactionStatus, VpsAction, VpsPatch,
};
use ishosting_operator::simulator::{Faults, Simulator, SimulatorConfig, SimulatorHandle};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const KEY: &str = "client-test-key";

async fn simulator(balance: Decimal) -> SimulatorHandle {
    let config = SimulatorConfig {
        speed: 1.0,
        provision: Duration::from_millis(200),
        accounts: vec![(KEY.to_string(), balance)],
    };
    Simulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("start the simulator")
}

fn client(sim: &SimulatorHandle) -> ApiClient {
    let config = ClientConfig {
        base_url: sim.base_url().parse().unwrap(),
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    ApiClient::new(config).unwrap()
}

fn walkthrough_order(identity: &str) -> OrderRequest {
    let mut item = OrderItem::new_vps("29_6m", identity);
    item.location = Some(OrderLocation { city: "ams".into() });
    item.additions = vec![
        Addition {
            category: "os".into(),
            code: Some("linux/debian11#64".into()),
            quantity: None,
        },
        Addition {
            category: "ip".into(),
            code: None,
            quantity: Some(4),
        },
        Addition {
            category: "ram".into(),
            code: Some("2g".into()),
            quantity: None,
        },
    ];
    item.comment = Some(format!("test uid:{identity}"));
    OrderRequest {
        items: vec![item],
        promos: Vec::new(),
    }
}

#[tokio::test]
async fn catalogue_lists_walkthrough_plan() {
    let sim = simulator(dec!(0)).await;
    let account = client(&sim).account(ApiKey::new(KEY.into()));

    let filter = PlanFilter {
        period: Some("6m".into()),
        ..PlanFilter::default()
    };
    let plans = account.plans(&filter).await.unwrap();
    assert!(plans.iter().any(|p| p.code == "29_6m"), "{plans:?}");

    let configs = account.plan_configs("29_6m").await.unwrap();
    for category in ["os", "ram", "ip"] {
        assert!(
            configs.additions.iter().any(|a| a.category == category),
            "no {category} in {:?}",
            configs.additions
        );
    }
    assert!(
        configs.locations.iter().any(|l| l.city == "ams"),
        "{:?}",
        configs.locations
    );
}

#[tokio::test]
async fn walkthrough_order_quote_pay_run() {
    let sim = simulator(dec!(500)).await;
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let order = walkthrough_order("id-walkthrough");

    let quote = account.validate(&order).await.unwrap();
    assert!(quote.total.amount > Decimal::ZERO, "{quote:?}");
    assert_eq!(quote.total.currency, "USD");

    let invoice = account.order(&order).await.unwrap();
    assert_eq!(invoice.status, InvoiceStatus::Unpaid);
    let service_id = invoice.services.first().expect("a service").id.clone();
    assert_eq!(
        account.invoice_status(&invoice.id).await.unwrap(),
        InvoiceStatus::Unpaid
    );
    let listed = account.invoices(&InvoiceFilter::default()).await.unwrap();
    assert!(listed.iter().any(|i| i.id == invoice.id), "{listed:?}");
    let full = account.invoice(&invoice.id).await.unwrap();
    assert!(
        full.services
            .iter()
            .any(|s| s.identity.as_deref() == Some("id-walkthrough")
                || s.comment
                    .as_deref()
                    .is_some_and(|c| c.contains("uid:id-walkthrough"))),
        "{full:?}"
    );

    let paid = account
        .pay(
            &invoice.id,
            &PayRequest {
                balance: true,
                renew: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(paid.status, TransactionStatus::Success);
    assert_eq!(
        account.invoice_status(&invoice.id).await.unwrap(),
        InvoiceStatus::Paid
    );
    let again = account
        .pay(
            &invoice.id,
            &PayRequest {
                balance: true,
                renew: true,
            },
        )
        .await
        .expect_err("a paid invoice cannot be paid again");
    assert_eq!(again.class(), ErrorClass::NeedsUser, "{again}");

    let mut running = None;
    for _ in 0..40 {
        let server = account.vps(&service_id).await.unwrap();
        if server.status.code == ServiceStatusCode::Running {
            running = Some(server);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = running.expect("the server reaches Running");
    assert!(
        server.public_ip.is_some() || !server.ipv4.is_empty(),
        "{server:?}"
    );

    let stats = sim.admin().stats().await.unwrap();
    assert_eq!(stats.orders_by_identity.get("id-walkthrough"), Some(&1));
    assert_eq!(stats.payments_by_identity.get("id-walkthrough"), Some(&1));
}

#[tokio::test]
async fn patch_and_actions_change_server() {
    let sim = simulator(dec!(500)).await;
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let invoice = account.order(&walkthrough_order("id-patch")).await.unwrap();
    let service_id = invoice.services[0].id.clone();
    account
        .pay(
            &invoice.id,
            &PayRequest {
                balance: true,
                renew: false,
            },
        )
        .await
        .unwrap();

    let patch = VpsPatch {
        name: Some("web-1".into()),
        tags: vec!["k8s-uid:abc".into()],
        auto_renew: Some(false),
    };
    account.vps_patch(&service_id, &patch).await.unwrap();
    let server = account.vps(&service_id).await.unwrap();
    assert_eq!(server.name, "web-1");
    assert_eq!(server.tags, vec!["k8s-uid:abc".to_string()]);
    assert_eq!(server.auto_renew, Some(false));

    let all = account.vps_list_all().await.unwrap();
    assert!(all.iter().any(|v| v.id == service_id));
    let services = account.services().await.unwrap();
    assert!(services.iter().any(|s| s.id == service_id), "{services:?}");

    for _ in 0..40 {
        if account.vps_status(&service_id).await.unwrap().code == ServiceStatusCode::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    account
        .vps_action(&service_id, VpsAction::Stop)
        .await
        .unwrap();
    let status = account.vps_status(&service_id).await.unwrap();
    assert!(
        matches!(
            status.code,
            ServiceStatusCode::Stopped | ServiceStatusCode::Stopping
        ),
        "{status:?}"
    );
}

#[tokio::test]
async fn unknown_key_is_rejected() {
    let sim = simulator(dec!(0)).await;
    let account = client(&sim).account(ApiKey::new("wrong".into()));
    let error = account.plans(&PlanFilter::default()).await.unwrap_err();
    assert_eq!(error.category(), "CredentialsRejected", "{error}");
    assert!(
        !error.to_string().contains("wrong"),
        "the key leaked: {error}"
    );
}

#[tokio::test]
async fn expired_key_is_rejected() {
    let sim = simulator(dec!(0)).await;
    sim.admin().set_expired(KEY, true).await.unwrap();
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let error = account.plan_configs("29_6m").await.unwrap_err();
    assert!(
        matches!(error, ApiError::Unauthorized { status: 401, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn unknown_plan_fails_validation() {
    let sim = simulator(dec!(0)).await;
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let order = OrderRequest {
        items: vec![OrderItem::new_vps("999_6m", "id-unknown")],
        promos: Vec::new(),
    };
    let error = account.validate(&order).await.unwrap_err();
    assert_eq!(error.category(), "ValidationFailed", "{error}");
    assert!(error.to_string().contains("999_6m"), "{error}");
    let error = account.order(&order).await.unwrap_err();
    assert_eq!(error.category(), "ValidationFailed", "{error}");
    assert!(sim.admin().stats().await.unwrap().invoices.is_empty());
}

#[tokio::test]
async fn insufficient_funds_then_top_up() {
    let sim = simulator(dec!(1)).await;
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let invoice = account.order(&walkthrough_order("id-funds")).await.unwrap();
    let pay = PayRequest {
        balance: true,
        renew: true,
    };
    let error = account.pay(&invoice.id, &pay).await.unwrap_err();
    let ApiError::Validation { message, fields } = &error else {
        panic!("expected a validation error, got {error}");
    };
    let text = format!("{message} {fields:?}").to_ascii_lowercase();
    assert!(text.contains("fund") || text.contains("balance"), "{text}");
    assert_eq!(
        account.invoice_status(&invoice.id).await.unwrap(),
        InvoiceStatus::Unpaid
    );

    sim.admin().top_up(KEY, dec!(500)).await.unwrap();
    let paid = account.pay(&invoice.id, &pay).await.unwrap();
    assert_eq!(paid.status, TransactionStatus::Success);
}

#[tokio::test]
async fn cancelled_invoice_reports_cancelled() {
    let sim = simulator(dec!(0)).await;
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let invoice = account
        .order(&walkthrough_order("id-cancel"))
        .await
        .unwrap();
    account.cancel_invoice(&invoice.id).await.unwrap();
    assert_eq!(
        account.invoice_status(&invoice.id).await.unwrap(),
        InvoiceStatus::Cancelled
    );
}

#[tokio::test]
async fn dropped_order_answer_is_outcome_unknown() {
    let sim = simulator(dec!(500)).await;
    let admin = sim.admin();
    let mut faults = Faults::default();
    faults.drop_answers.insert("order".into(), 1);
    admin.set_faults(&faults).await.unwrap();

    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let error = account
        .order(&walkthrough_order("id-dropped"))
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::OutcomeUnknown, "{error}");
    // The provider committed the order although the client received no response.
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats.orders_by_identity.get("id-dropped"), Some(&1));
    assert_eq!(account.requests_sent(), 1, "an order is never retried");
}

#[tokio::test]
async fn server_errors_retry_a_bounded_number_of_times() {
    let sim = simulator(dec!(0)).await;
    let admin = sim.admin();
    admin
        .set_faults(&Faults {
            error_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let error = account.plans(&PlanFilter::default()).await.unwrap_err();
    assert_eq!(error.category(), "ProviderError", "{error}");
    // Default get_retries is 3: one attempt plus three retries.
    assert_eq!(account.requests_sent(), 4);
}

#[tokio::test]
async fn challenge_page_is_rate_limited() {
    let sim = simulator(dec!(0)).await;
    sim.admin()
        .set_faults(&Faults {
            challenge_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let error = account.plans(&PlanFilter::default()).await.unwrap_err();
    assert_eq!(error.category(), "RateLimited", "{error}");
}

#[tokio::test]
async fn spending_guard_counts_orders_from_invoices() {
    use ishosting_operator::controller::decide::AccountLimits;
    use ishosting_operator::controller::limits::SpendingGuard;
    use ishosting_operator::crd::Quote;

    let sim = simulator(dec!(0)).await;
    let account = client(&sim).account(ApiKey::new(KEY.into()));
    let first = account.order(&walkthrough_order("a")).await.unwrap();
    let second = account.order(&walkthrough_order("b")).await.unwrap();
    account.cancel_invoice(&second.id).await.unwrap();
    let first_total = first.total.clone().unwrap().amount;

    let guard = SpendingGuard::new(AccountLimits {
        max_orders_per_hour: 10,
        max_spend_per_day: dec!(1000),
    });
    let usage = guard.usage(&account, "USD").await.unwrap();
    // The cancelled order still counts as an order, but not as spend.
    assert_eq!(usage.orders_last_hour, 2);
    assert_eq!(usage.spent_last_day, first_total);

    // Within the cache's lifetime no request is sent, and an order recorded by this
    // process counts at once.
    let sent = account.requests_sent();
    let quote = Quote {
        total: "12.50".into(),
        currency: "USD".into(),
    };
    guard.record_order(&account, None, Some(&quote));
    let usage = guard.usage(&account, "USD").await.unwrap();
    assert_eq!(account.requests_sent(), sent);
    assert_eq!(usage.orders_last_hour, 3);
    assert_eq!(usage.spent_last_day, first_total + dec!(12.50));
}

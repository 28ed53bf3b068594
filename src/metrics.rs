//! Prometheus metrics and the health endpoints `/livez`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::info;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Histogram,
    errors: Family<CategoryLabel, Counter>,
    orders: Family<ResultLabel, Counter>,
    payments: Family<ResultLabel, Counter>,
    leader: Gauge,
    limit_blocks: Family<LimitLabel, Counter>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ishosting_operator");
        let reconcile_duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile pass",
            prometheus_client::registry::Unit::Seconds,
            reconcile_duration.clone(),
        );
        let errors = Family::<CategoryLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile passes that ended in an error, by error category",
            errors.clone(),
        );
        let orders = Family::<ResultLabel, Counter>::default();
        registry.register(
            "orders",
            "Orders sent to the provider, by result (placed, rejected, unknown)",
            orders.clone(),
        );
        let payments = Family::<ResultLabel, Counter>::default();
        registry.register(
            "payments",
            "Payments sent to the provider, by result (paid, pending, rejected, unknown)",
            payments.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease and runs the controller, else 0",
            leader.clone(),
        );
        let limit_blocks = Family::<LimitLabel, Counter>::default();
        registry.register(
            "spending_limit_blocks",
            "Orders not sent because an account-wide limit was reached, by limit (orders_per_hour, spend_per_day)",
            limit_blocks.clone(),
        );
        Metrics {
            registry,
            reconcile_duration,
            errors,
            orders,
            payments,
            leader,
            limit_blocks,
            ready: AtomicBool::new(false),
        }
    }

    pub fn observe_reconcile(&self, duration: Duration) {
        self.reconcile_duration.observe(duration.as_secs_f64());
    }

    pub fn count_error(&self, category: &str) {
        self.errors
            .get_or_create(&CategoryLabel {
                category: category.to_string(),
            })
            .inc();
    }

    pub fn count_order(&self, result: &str) {
        self.orders
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn count_payment(&self, result: &str) {
        self.payments
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Records whether this replica leads (holds the lease and runs the controller).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn count_limit_block(&self, limit: &str) {
        self.limit_blocks
            .get_or_create(&LimitLabel {
                limit: limit.to_string(),
            })
            .inc();
    }

    /// Marks the operator ready once the controller has started.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing metrics to a String cannot fail");
        text
    }
}

/// Serves `/livez`, `/readyz` and `/metrics` until the process ends.
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(address = %listener.local_addr()?, "serving metrics and health");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_text() {
        let metrics = Metrics::new();
        metrics.count_order("placed");
        metrics.count_error("RateLimited");
        metrics.count_limit_block("orders_per_hour");
        let text = metrics.encode();
        assert!(text.contains(
            "ishosting_operator_spending_limit_blocks_total{limit=\"orders_per_hour\"} 1"
        ));
        assert!(text.contains("ishosting_operator_orders_total{result=\"placed\"} 1"));
        assert!(
            text.contains("ishosting_operator_reconcile_errors_total{category=\"RateLimited\"} 1")
        );
        assert!(text.contains("ishosting_operator_reconcile_duration_seconds"));
        assert!(text.contains("ishosting_operator_leader 0"));
        metrics.set_leader(true);
        assert!(metrics.encode().contains("ishosting_operator_leader 1"));
    }
}

//! The admin API under `/_admin/`: accounts, clock, faults, stats and the request
//! log. It needs no key, is not rate limited and is not logged.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::Simulator;
use super::model::{Faults, OPERATIONS};
use super::state::fingerprint;

pub(crate) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/_admin/accounts", post(create_account))
        .route("/_admin/accounts/{key}/top-up", post(top_up))
        .route("/_admin/accounts/{key}/expired", post(set_expired))
        .route("/_admin/stats", get(stats))
        .route("/_admin/requests", get(requests))
        .route(
            "/_admin/faults",
            get(get_faults).put(put_faults).delete(clear_faults),
        )
        .route("/_admin/clock/advance", post(advance_clock))
        .with_state(sim)
}

fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Money in admin bodies: a decimal string such as `"500"` or `"12.50"`, or a number.
#[derive(Deserialize)]
struct NewAccount {
    api_key: String,
    balance: Decimal,
}

async fn create_account(State(sim): State<Simulator>, Json(body): Json<NewAccount>) -> Response {
    if body.api_key.trim().is_empty() {
        return failure(StatusCode::BAD_REQUEST, "api_key must not be empty");
    }
    if body.balance.is_sign_negative() {
        return failure(StatusCode::BAD_REQUEST, "balance must not be negative");
    }
    if sim.state().add_account(&body.api_key, body.balance) {
        let fp = fingerprint(&body.api_key);
        (StatusCode::CREATED, Json(json!({"fingerprint": fp}))).into_response()
    } else {
        failure(StatusCode::CONFLICT, "an account with this key exists")
    }
}

#[derive(Deserialize)]
struct TopUp {
    amount: Decimal,
}

async fn top_up(
    State(sim): State<Simulator>,
    Path(key): Path<String>,
    Json(body): Json<TopUp>,
) -> Response {
    if body.amount <= Decimal::ZERO {
        return failure(StatusCode::BAD_REQUEST, "amount must be positive");
    }
    let mut state = sim.state();
    match state.accounts.get_mut(&key) {
        Some(account) => {
            account.balance += body.amount;
            Json(json!({"balance": account.balance.normalize().to_string()})).into_response()
        }
        None => failure(StatusCode::NOT_FOUND, "no account with this key"),
    }
}

#[derive(Deserialize)]
struct Expired {
    expired: bool,
}

async fn set_expired(
    State(sim): State<Simulator>,
    Path(key): Path<String>,
    Json(body): Json<Expired>,
) -> Response {
    if sim.state().set_expired(&key, body.expired) {
        Json(json!({"expired": body.expired})).into_response()
    } else {
        failure(StatusCode::NOT_FOUND, "no account with this key")
    }
}

async fn stats(State(sim): State<Simulator>) -> Response {
    Json(sim.state().stats()).into_response()
}

async fn requests(State(sim): State<Simulator>) -> Response {
    Json(sim.lock().requests()).into_response()
}

async fn get_faults(State(sim): State<Simulator>) -> Response {
    Json(sim.lock().faults.clone()).into_response()
}

async fn put_faults(State(sim): State<Simulator>, Json(faults): Json<Faults>) -> Response {
    let rates = [
        ("error_rate", faults.error_rate),
        ("reset_rate", faults.reset_rate),
        ("rate_limit_rate", faults.rate_limit_rate),
        ("challenge_rate", faults.challenge_rate),
    ];
    for (name, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            return failure(StatusCode::BAD_REQUEST, format!("{name} must be in 0..1"));
        }
    }
    if let Some(unknown) = faults
        .drop_answers
        .keys()
        .find(|op| !OPERATIONS.contains(&op.as_str()))
    {
        return failure(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown operation {unknown}; known: {}",
                OPERATIONS.join(", ")
            ),
        );
    }
    sim.lock().faults = faults.clone();
    Json(faults).into_response()
}

async fn clear_faults(State(sim): State<Simulator>) -> Response {
    sim.lock().faults = Faults::default();
    Json(Faults::default()).into_response()
}

#[derive(Deserialize)]
struct Advance {
    /// Simulated seconds to move the clock forward.
    seconds: f64,
}

async fn advance_clock(State(sim): State<Simulator>, Json(body): Json<Advance>) -> Response {
    if !body.seconds.is_finite() || body.seconds < 0.0 {
        return failure(
            StatusCode::BAD_REQUEST,
            "seconds must be a non-negative number",
        );
    }
    let mut state = sim.lock();
    state.clock.advance(body.seconds);
    state.tick();
    Json(json!({"now_ms": state.clock.now_ms()})).into_response()
}

//! The provider API: routes, the gate every call passes (request log, rate
//! limits, injected faults, authentication) and the JSON responses.
//!
//! Deliberate deviations from the OpenAPI description, as seen in real responses:
//! - Invoice ids are JSON numbers everywhere except in `GET /billing/invoices`,
//!   which lists them as strings.
//! - `GET /vps/list` spells status and state codes as plain words (`running`,
//!   `Active`); `GET /vps/{id}` and `GET /vps/{id}/status` use `STATUS_CODE_*` /
//!   `STATE_CODE_*`.
//! - Money is a string with a currency sign, except that free catalogue items
//!   and an invoice's `paid` before any payment are the bare number `0`.
//! - Invoice status codes spell `STATUS_CANCELLED`, service codes
//!   `STATUS_CODE_CANCELED`.

// Parsing helpers return the finished error response. It is built once per
// rejected call, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json};
use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::Simulator;
use super::catalogue::{
    Category, MAX_EXTRA_IPS, Period, PlanCode, Priced, Selection, additions_json, config_json,
    configs_json, money, money_or_zero, plan_json, service_plan_json,
};
use super::model::RequestRecord;
use super::state::{
    ActionError, Gate, Invoice, InvoiceStatus, LineAction, NewItem, PayError, Service,
    ServiceStatus, State as SimState, fingerprint,
};

/// How long an order keeps the account's cart busy, in real time. A second order
/// arriving meanwhile is refused with 409.
const ORDER_PROCESSING: Duration = Duration::from_millis(100);
/// Maximum items in one order, and maximum units of one item.
const MAX_ITEMS: usize = 10;
const MAX_QUANTITY: u64 = 10;
/// Maximum `limit` the paged lists accept.
const MAX_LIMIT: usize = 100;

/// The authenticated API key of the current call.
#[derive(Clone)]
struct Caller(String);

pub(crate) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/vps/plans", get(list_plans))
        .route("/services/vps/plans", get(list_plans))
        .route("/vps/plan/{code}", get(show_plan))
        .route("/services/vps/plan/{code}", get(show_plan))
        .route("/vps/configs/{code}", get(show_configs))
        .route("/services/vps/configs/{code}", get(show_configs))
        .route("/billing/order/validate", post(validate))
        .route("/billing/order", post(order))
        .route("/billing/invoices", get(list_invoices))
        .route("/billing/invoice/{id}", get(show_invoice))
        .route("/billing/invoice/{id}/status", get(invoice_status))
        .route("/billing/invoice/{id}/pay", post(pay))
        .route("/billing/invoice/{id}/cancel", patch(cancel_invoice))
        .route("/services/list", get(list_services))
        .route("/vps/list", get(list_vps))
        .route("/vps/{id}", get(show_vps).patch(patch_vps))
        .route("/vps/{id}/status", get(vps_status))
        .route("/vps/{id}/status/{action}", patch(vps_action))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(sim.clone(), gate))
        .with_state(sim)
}

// ---------------------------------------------------------------------------
// Responses shared by every call.

/// Builds the provider's error shape: `{"status": N, "message": "...", "data": {...}}`.
fn error(status: StatusCode, message: impl Into<String>, data: Value) -> Response {
    let body = json!({"status": status.as_u16(), "message": message.into(), "data": data});
    (status, Json(body)).into_response()
}

fn not_found_answer(message: &str) -> Response {
    error(StatusCode::NOT_FOUND, message, json!({}))
}

/// Builds a 400 validation error naming each invalid field.
fn invalid(fields: BTreeMap<String, String>) -> Response {
    let message = fields.values().cloned().collect::<Vec<_>>().join(", ");
    let data: Map<String, Value> = fields.into_iter().map(|(k, v)| (k, json!(v))).collect();
    error(StatusCode::BAD_REQUEST, message, Value::Object(data))
}

fn invalid_field(field: &str, message: &str) -> Response {
    invalid(BTreeMap::from([(field.to_owned(), message.to_owned())]))
}

async fn not_found() -> Response {
    not_found_answer("Not Found")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        json!({}),
    )
}

/// Builds the HTML page a Cloudflare managed challenge returns instead of JSON.
fn challenge_page() -> Response {
    const PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head>\n\
<title>Just a moment...</title>\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\">\n\
<meta name=\"robots\" content=\"noindex,nofollow\">\n</head>\n<body>\n\
<div class=\"main-wrapper\" role=\"main\">\n<div class=\"main-content\">\n\
<h1>api.ishosting.com</h1>\n<h2>Verifying you are human. This may take a few seconds.</h2>\n\
<noscript>Enable JavaScript and cookies to continue</noscript>\n\
<p>api.ishosting.com needs to review the security of your connection before proceeding.</p>\n\
</div>\n</div>\n</body>\n</html>\n";
    let mut response = (StatusCode::FORBIDDEN, PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    headers.insert("cf-mitigated", HeaderValue::from_static("challenge"));
    response
}

/// Builds the 429 for a blocked key. `simulated_ms` is how much longer the block lasts.
fn too_many_requests(simulated_ms: i64, real: Duration) -> Response {
    let seconds = (simulated_ms + 999) / 1000;
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "Too many requests: more than 150 requests in 10 seconds, the API key is blocked \
             for 1 hour ({seconds} s left)"
        ),
        json!({"retry_after": seconds}),
    );
    let retry_after = real.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Picks one of the 5xx responses a provider behind Cloudflare returns.
fn server_error() -> Response {
    match rand::rng().random_range(0..4) {
        0 => {
            let page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n\
<center><h1>502 Bad Gateway</h1></center>\n<hr><center>cloudflare</center>\n</body>\n</html>\n";
            let mut response = (StatusCode::BAD_GATEWAY, page).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            response
        }
        1 => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            json!({}),
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            json!({}),
        ),
    }
}

/// Builds a response whose body fails at once, so hyper closes the connection
/// without completing an HTTP response.
fn aborted_answer() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "answer dropped by fault injection",
        ))
    });
    Response::new(Body::from_stream(failing))
}

// ---------------------------------------------------------------------------
// The gate.

/// Returns the key a call presents: `X-Api-Token`, or `X-Authorization` as the
/// walkthrough once spells it.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    ["x-api-token", "x-authorization"]
        .into_iter()
        .filter_map(|name| headers.get(name))
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Names the operation of a call, as in [`super::OPERATIONS`].
fn operation(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let segments = match segments.as_slice() {
        ["services", "vps", rest @ ..] if !rest.is_empty() => {
            let mut s = vec!["vps"];
            s.extend_from_slice(rest);
            s
        }
        _ => segments,
    };
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["vps", "plans"]) => "plans",
        ("GET", ["vps", "plan", _]) => "plan",
        ("GET", ["vps", "configs", _]) => "configs",
        ("POST", ["billing", "order", "validate"]) => "validate",
        ("POST", ["billing", "order"]) => "order",
        ("GET", ["billing", "invoices"]) => "invoices",
        ("GET", ["billing", "invoice", _]) => "invoice",
        ("GET", ["billing", "invoice", _, "status"]) => "invoice_status",
        ("POST", ["billing", "invoice", _, "pay"]) => "pay",
        ("PATCH", ["billing", "invoice", _, "cancel"]) => "cancel_invoice",
        ("GET", ["services", "list"]) => "services",
        ("GET", ["vps", "list"]) => "vps_list",
        ("GET", ["vps", _]) => "vps",
        ("PATCH", ["vps", _]) => "vps_patch",
        ("GET", ["vps", _, "status"]) => "vps_status",
        ("PATCH", ["vps", _, "status", _]) => "vps_action",
        _ => "other",
    }
}

/// Returns true with probability `rate` (0..1).
fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::rng().random::<f64>() < rate
}

/// Outcome of a provider call.
enum Outcome {
    Answer(Response),
    /// Close the connection without a response after holding it this long.
    Drop(Duration),
}

/// Every provider call passes here: it is counted and logged, delayed and
/// disturbed by the injected faults, held to the per-key budgets, and
/// authenticated before its handler runs.
async fn gate(State(sim): State<Simulator>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let operation = operation(&method, &path);
    let key = presented_key(request.headers());
    let key_fingerprint = key.as_deref().map(fingerprint);
    let (seq, at_ms, faults) = {
        let mut state = sim.state();
        let seq = state.begin_request();
        if let Some(fp) = &key_fingerprint {
            state.count_arrival(fp);
        }
        (seq, state.clock.now_ms(), state.faults.clone())
    };
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }

    let outcome = 'outcome: {
        if roll(faults.reset_rate) {
            break 'outcome Outcome::Drop(Duration::ZERO);
        }
        if roll(faults.challenge_rate) {
            break 'outcome Outcome::Answer(challenge_page());
        }
        if let Some(fp) = &key_fingerprint {
            let verdict = sim.state().rate_check(fp);
            match verdict {
                Gate::Pass => {}
                Gate::Challenge => break 'outcome Outcome::Answer(challenge_page()),
                Gate::Blocked(ms) => {
                    let real = sim.lock().clock.real_duration(ms);
                    break 'outcome Outcome::Answer(too_many_requests(ms, real));
                }
            }
        }
        if roll(faults.rate_limit_rate) {
            break 'outcome Outcome::Answer(too_many_requests(1000, Duration::from_secs(1)));
        }
        if roll(faults.error_rate) {
            break 'outcome Outcome::Answer(server_error());
        }
        let caller = match authenticate(&sim, key.as_deref()) {
            Ok(caller) => caller,
            Err(answer) => break 'outcome Outcome::Answer(answer),
        };
        request.extensions_mut().insert(caller);
        let answer = next.run(request).await;
        let dropped = sim.lock().take_drop(operation);
        if dropped {
            Outcome::Drop(Duration::from_millis(faults.hold_answers_ms))
        } else {
            Outcome::Answer(answer)
        }
    };

    let (status, response) = match outcome {
        Outcome::Answer(mut response) => {
            let headers = response.headers_mut();
            headers.insert(header::SERVER, HeaderValue::from_static("cloudflare"));
            let ray = format!("{:016x}-AMS", rand::rng().random::<u64>());
            if let Ok(value) = HeaderValue::from_str(&ray) {
                headers.insert("cf-ray", value);
            }
            (response.status().as_u16(), response)
        }
        Outcome::Drop(hold) => {
            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
            (0, aborted_answer())
        }
    };
    let key_label = key_fingerprint.as_deref().unwrap_or("-");
    if (200..400).contains(&status) {
        tracing::debug!(seq, %method, path, status, key = key_label, "provider call");
    } else {
        // Rejected, failed or dropped calls; status 0 means no response was sent.
        tracing::info!(seq, %method, path, operation, status, key = key_label, "provider call not served");
    }
    sim.lock().log_request(RequestRecord {
        seq,
        method: method.to_string(),
        path,
        status,
        key_fingerprint,
        at_ms: at_ms.max(0) as u64,
    });
    response
}

fn authenticate(sim: &Simulator, key: Option<&str>) -> Result<Caller, Response> {
    let unauthorized = |message: &str| error(StatusCode::UNAUTHORIZED, message, json!({}));
    let Some(key) = key else {
        return Err(unauthorized("Unauthorized"));
    };
    let state = sim.state();
    let now = state.clock.now_s();
    match state.accounts.get(key) {
        None => Err(unauthorized("Unauthorized")),
        Some(account) if account.is_expired(now) => Err(unauthorized(
            "Unauthorized: the API key has expired, generate a new one in the Client Area",
        )),
        Some(_) => Ok(Caller(key.to_owned())),
    }
}

// ---------------------------------------------------------------------------
// Request parsing.

/// Query parameters in the provider's PHP style, where a list is sent as
/// `name[]=a&name[]=b` or `name[0]=a` (plain `name=a,b` is accepted too).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<String>) -> Query {
        let raw = raw.unwrap_or_default();
        Query(
            url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| {
                k == name
                    || k.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('['))
                        .and_then(|rest| rest.strip_suffix(']'))
                        .is_some_and(|index| index.bytes().all(|b| b.is_ascii_digit()))
            })
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Reads `limit` (required, 1..=100) and `offset` (default 0).
    fn paging(&self) -> Result<(usize, usize), Response> {
        let limit = match self.one("limit") {
            None => return Err(invalid_field("limit", "The limit field is required.")),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(invalid_field(
                        "limit",
                        "The limit must be an integer between 1 and 100.",
                    ));
                }
            },
        };
        let offset = match self.one("offset") {
            None => 0,
            Some(text) => text.parse::<usize>().map_err(|_| {
                invalid_field("offset", "The offset must be a non-negative integer.")
            })?,
        };
        Ok((limit, offset))
    }
}

/// Parses the JSON body of a call. An empty body counts as `{}`.
fn json_body(body: &Bytes) -> Result<Value, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "Bad Request: the body is not valid JSON",
            json!({"body": e.to_string()}),
        )
    })
}

/// Reads a flag sent as `true`, `"true"`, `1` or `"1"` (the walkthrough quotes them).
fn flag(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Reads a non-negative integer sent as a number or a string of digits.
fn count(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads an optional string field. Anything but absent, null or a string of at
/// most `max` characters is recorded in `errors`.
fn optional_text(
    item: &Map<String, Value>,
    field: &str,
    prefix: &str,
    max: usize,
    errors: &mut BTreeMap<String, String>,
) -> Option<String> {
    match item.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= max => Some(s.clone()),
        Some(Value::String(_)) => {
            errors.insert(
                format!("{prefix}.{field}"),
                format!("The {field} may not be longer than {max} characters."),
            );
            None
        }
        Some(_) => {
            errors.insert(
                format!("{prefix}.{field}"),
                format!("The {field} must be a string."),
            );
            None
        }
    }
}

/// Checks an order body (validate and order take the same one). Errors are keyed
/// by field path, such as `items.0.plan`.
fn check_order(body: &Value) -> Result<Vec<NewItem>, BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let mut items = Vec::new();
    let required = |field: &str| format!("The {field} field is required.");

    let promos = body.get("promos").or_else(|| body.get("promo"));
    match promos {
        None | Some(Value::Null) => {}
        Some(Value::Array(codes)) => {
            for (k, code) in codes.iter().enumerate() {
                let code = code.as_str().unwrap_or_default();
                errors.insert(
                    format!("promos.{k}"),
                    format!("Promo code {code} not found."),
                );
            }
        }
        Some(_) => {
            errors.insert("promos".into(), "The promos must be an array.".into());
        }
    }

    let list = match body.get("items") {
        Some(Value::Array(list)) if list.is_empty() => {
            errors.insert("items".into(), "At least one item is required.".into());
            return Err(errors);
        }
        Some(Value::Array(list)) if list.len() > MAX_ITEMS => {
            errors.insert(
                "items".into(),
                format!("At most {MAX_ITEMS} items per order."),
            );
            return Err(errors);
        }
        Some(Value::Array(list)) => list,
        _ => {
            errors.insert("items".into(), required("items"));
            return Err(errors);
        }
    };

    for (i, item) in list.iter().enumerate() {
        let p = format!("items.{i}");
        let Some(item) = item.as_object() else {
            errors.insert(p, "Each item must be an object.".into());
            continue;
        };
        match item.get("action").and_then(Value::as_str) {
            Some(a) if a.eq_ignore_ascii_case("new") => {}
            // NOTE: renewing or restoring an existing service by order is not modelled.
            Some(a) => {
                errors.insert(
                    format!("{p}.action"),
                    format!("The action {a} is not available; use new."),
                );
            }
            None => {
                errors.insert(format!("{p}.action"), required("action"));
            }
        }
        match item.get("type").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("vps") => {}
            // NOTE: only VPS can be ordered here; other service types are refused.
            Some(t) => {
                errors.insert(
                    format!("{p}.type"),
                    format!("The service type {t} is not available."),
                );
            }
            None => {
                errors.insert(format!("{p}.type"), required("type"));
            }
        }
        let code = match item.get("plan").and_then(Value::as_str) {
            Some(text) => {
                let code = PlanCode::parse(text);
                if code.is_none() {
                    errors.insert(format!("{p}.plan"), format!("Plan {text} not found."));
                }
                code
            }
            None => {
                errors.insert(format!("{p}.plan"), required("plan"));
                None
            }
        };
        let city = match (item.get("location"), code) {
            (None | Some(Value::Null), Some(code)) => Some(&code.plan.location.cities[0]),
            (None | Some(Value::Null), None) => None,
            (Some(location), code) => match location.get("city").and_then(Value::as_str) {
                None => {
                    errors.insert(format!("{p}.location.city"), required("location city"));
                    None
                }
                Some(city) => code.and_then(|code| {
                    let found = code.plan.city(city);
                    if found.is_none() {
                        errors.insert(
                            format!("{p}.location.city"),
                            format!(
                                "The location city {city} is not available for plan {}.",
                                code.code()
                            ),
                        );
                    }
                    found
                }),
            },
        };
        let quantity = match item.get("quantity") {
            None | Some(Value::Null) => 1,
            Some(value) => match count(value) {
                Some(n) if (1..=MAX_QUANTITY).contains(&n) => n as u32,
                _ => {
                    errors.insert(
                        format!("{p}.quantity"),
                        format!("The quantity must be an integer between 1 and {MAX_QUANTITY}."),
                    );
                    1
                }
            },
        };
        let identity = optional_text(item, "identity", &p, 255, &mut errors);
        let comment = optional_text(item, "comment", &p, 1000, &mut errors);
        let options = match item.get("options") {
            None | Some(Value::Null) => json!({}),
            Some(Value::Object(o)) => Value::Object(o.clone()),
            Some(_) => {
                errors.insert(
                    format!("{p}.options"),
                    "The options must be an object.".into(),
                );
                json!({})
            }
        };
        let mut selection = code.map(|c| Selection::defaults(&c.plan));
        match item.get("additions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(additions)) => {
                let mut seen = Vec::new();
                for (j, addition) in additions.iter().enumerate() {
                    let q = format!("{p}.additions.{j}");
                    let Some(addition) = addition.as_object() else {
                        errors.insert(q, "Each addition must be an object.".into());
                        continue;
                    };
                    let Some(name) = addition.get("category").and_then(Value::as_str) else {
                        errors.insert(format!("{q}.category"), required("category"));
                        continue;
                    };
                    let Some(category) = Category::parse(name) else {
                        errors.insert(
                            format!("{q}.category"),
                            format!("The addition category {name} does not exist."),
                        );
                        continue;
                    };
                    if seen.contains(&category) {
                        errors.insert(
                            format!("{q}.category"),
                            format!("The addition category {name} is given twice."),
                        );
                        continue;
                    }
                    seen.push(category);
                    if category == Category::Ip {
                        match addition.get("quantity").and_then(count) {
                            Some(n) if n <= u64::from(MAX_EXTRA_IPS) => {
                                if let Some(selection) = selection.as_mut() {
                                    selection.extra_ips = n as u32;
                                }
                            }
                            _ => {
                                errors.insert(
                                    format!("{q}.quantity"),
                                    format!(
                                        "The ip quantity must be an integer between 0 and \
                                         {MAX_EXTRA_IPS}."
                                    ),
                                );
                            }
                        }
                        continue;
                    }
                    let Some(option_code) = addition.get("code").and_then(Value::as_str) else {
                        errors.insert(format!("{q}.code"), required("code"));
                        continue;
                    };
                    let (Some(code), Some(selection)) = (code, selection.as_mut()) else {
                        continue;
                    };
                    match code.plan.find_option(category, option_code) {
                        Some(option) => selection.set(option),
                        None => {
                            errors.insert(
                                format!("{q}.code"),
                                format!(
                                    "The addition {option_code} is not available in category \
                                     {name} for plan {}.",
                                    code.code()
                                ),
                            );
                        }
                    }
                }
            }
            Some(_) => {
                errors.insert(
                    format!("{p}.additions"),
                    "The additions must be an array.".into(),
                );
            }
        }
        if let (Some(code), Some(city), Some(selection)) = (code, city, selection) {
            items.push(NewItem {
                identity,
                comment,
                code,
                city,
                selection,
                quantity,
                options,
            });
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------
// JSON of services and invoices.

fn location_json(service: &Service) -> Value {
    let location = service.code.plan.location;
    json!({
        "name": location.name,
        "code": location.country,
        "variant": {"name": service.city.name, "code": service.city.code},
    })
}

fn uptime_text(seconds: i64) -> String {
    let s = seconds.max(0);
    format!(
        "Uptime: {} Days, {:02}:{:02}:{:02}",
        s / 86_400,
        s % 86_400 / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Renders the `status` of a VPS. `plain_words` gives codes as words (`running`, `Active`).
fn status_json(service: &Service, now: i64, plain_words: bool) -> Value {
    let status = service.status;
    let running = status == ServiceStatus::Running;
    let uptime = service
        .running_since
        .filter(|_| running)
        .map_or(0, |since| now - since);
    let message = match status {
        ServiceStatus::Pending if service.paid_until.is_some() => "Preparing".to_owned(),
        ServiceStatus::Pending => "Waiting for payment".to_owned(),
        ServiceStatus::Installing => "Installing the operating system".to_owned(),
        ServiceStatus::Running => uptime_text(uptime),
        ServiceStatus::Suspended => "Suspended: the renewal invoice is not paid".to_owned(),
        _ => String::new(),
    };
    let gauge = |value: &str| json!({"value": value, "message": null});
    let (cpu, ram, network) = if running {
        ("0.3%", "21%", "~0,2 Mb/s")
    } else {
        ("0%", "0%", "0 Mb/s")
    };
    let (code, state_code) = if plain_words {
        (
            status.name().to_ascii_lowercase(),
            status.state_name().to_owned(),
        )
    } else {
        (status.code().to_owned(), status.state_code().to_owned())
    };
    json!({
        "name": status.name(),
        "code": code,
        "message": message,
        "uptime": uptime,
        "cpu": gauge(cpu),
        "ram": gauge(ram),
        "drive": gauge("2 Gb"),
        "network": gauge(network),
        "state": {"name": status.state_name(), "code": state_code, "message": null},
    })
}

fn enabled(options: &Value, name: &str) -> bool {
    flag(options.get(name).and_then(|o| o.get("is_enabled"))).unwrap_or(false)
}

/// Renders the full VPS record of `GET /vps/{id}`, secrets included.
fn vps_json(service: &Service, now: i64) -> Value {
    let main_ip = service.ips.first().map(ToString::to_string);
    let ipv4: Vec<Value> = service
        .ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let [a, b, c, d] = ip.octets();
            json!({
                "address": ip.to_string(),
                "mask": "255.255.255.0",
                "gateway": format!("{a}.{b}.{c}.1"),
                "rdns": format!("{a}-{b}-{c}-{d}.static.example.net"),
                "is_main": i == 0,
            })
        })
        .collect();
    let keys: Vec<Value> = service
        .options
        .get("ssh")
        .and_then(|ssh| ssh.get("keys"))
        .and_then(Value::as_array)
        .map(|keys| keys.iter().map(|k| json!({"id": k})).collect())
        .unwrap_or_default();
    let mut plan = service_plan_json(&service.code, &service.selection);
    plan["next_charge"] = json!(service.paid_until);
    plan["charge_deferment"] = json!(service.paid_until);
    plan["auto_renew"] = json!(service.auto_renew);
    let s = &service.selection;
    json!({
        "id": service.id,
        "name": service.name,
        "tags": service.tags,
        "location": location_json(service),
        "plan": plan,
        "platform": {
            "name": service.code.plan.platform.name(),
            "code": service.code.plan.platform.code(),
            "config": config_json(s),
        },
        "network": {
            "public_ip": main_ip,
            "protocols": {"ipv4": ipv4, "ipv6": []},
            "port": "1 Gbit",
            "bandwidth": "Unlimited",
        },
        "access": {
            "vnc": {
                "host": main_ip.as_ref().map(|ip| format!("{ip}:5900")),
                "password": service.vnc_password,
                "is_enabled": enabled(&service.options, "vnc"),
            },
            "ssh": {
                "users": [{
                    "username": "root",
                    "password": service.root_password,
                    "is_enabled": true,
                }],
                "keys": keys,
            },
        },
        "security": {
            "backup": {"name": s.backup.name, "code": s.backup.code},
            "ddos": {"name": s.ddos.name, "code": s.ddos.code},
        },
        "tools": {
            "panel": {"name": s.panel.name, "code": s.panel.code, "url": null},
            "admin": {"name": "None", "code": "none"},
            "virtualization": "KVM",
        },
        "status": status_json(service, now, false),
        "created_at": service.created_at,
        "updated_at": service.updated_at,
    })
}

/// Renders a VPS as `GET /vps/list` lists it, with plain-word status codes.
fn vps_summary_json(service: &Service, now: i64) -> Value {
    let location = service.code.plan.location;
    json!({
        "id": service.id,
        "name": service.name,
        "tags": service.tags,
        "location": {"name": location.name, "code": location.country},
        "plan": {"name": service.code.plan.name(), "code": service.code.code()},
        "platform": {
            "name": service.code.plan.platform.name(),
            "code": service.code.plan.platform.code(),
        },
        "status": status_json(service, now, true),
        "created_at": service.created_at,
        "updated_at": service.updated_at,
    })
}

/// Renders the ordered service as validate and invoices describe it.
fn ordered_service_json(
    code: &PlanCode,
    city_name: &str,
    city_code: &str,
    selection: &Selection,
) -> Value {
    let location = code.plan.location;
    json!({
        "plan": service_plan_json(code, selection),
        "location": {
            "name": location.name,
            "code": location.country,
            "variant": {"city": {"name": city_name, "code": city_code}},
        },
        "platform": {
            "name": code.plan.platform.name(),
            "code": code.plan.platform.code(),
            "config": config_json(selection),
        },
        "network": {
            "protocols": {"ipv4": 1 + selection.extra_ips, "ipv6": 0},
            "port": "1 Gbit",
            "bandwidth": "Unlimited",
        },
        "access": {"vnc": true, "ssh": true},
        "security": {
            "backup": {"name": selection.backup.name, "code": selection.backup.code},
            "ddos": {"name": selection.ddos.name, "code": selection.ddos.code},
        },
        "tools": {
            "panel": {"name": selection.panel.name, "code": selection.panel.code},
            "admin": {"name": "None", "code": "none"},
            "virtualization": "KVM",
        },
    })
}

fn priced_fields(target: &mut Value, priced: Priced, units: u32) {
    let units = Decimal::from(units);
    target["price"] = json!(money(priced.price * units));
    target["once"] = json!(money(priced.once * units));
    target["discount"] = json!(money(priced.discount * units));
    target["total"] = json!(money(priced.total * units));
}

fn invoice_status_block(invoice: &Invoice) -> Value {
    json!({
        "name": invoice.status.name(),
        "code": invoice.status.code(),
        "message": invoice.status_message,
    })
}

fn transactions_json(invoice: &Invoice) -> Vec<Value> {
    invoice
        .transactions
        .iter()
        .map(|t| {
            json!({
                "type": "balance",
                "description": t.description,
                "total": money(t.total),
                "status": if t.success { "TRANSACTION_SUCCESS" } else { "TRANSACTION_FAILED" },
            })
        })
        .collect()
}

fn paid_amount(invoice: &Invoice) -> Value {
    if invoice.status == InvoiceStatus::Paid {
        money_or_zero(invoice.total)
    } else {
        json!(0)
    }
}

fn line_period(period: Option<(i64, i64)>) -> Value {
    match period {
        Some((start, finish)) => json!({"start_at": start, "finish_at": finish}),
        None => json!({"start_at": null, "finish_at": null}),
    }
}

/// Renders the invoice of `POST /billing/order`, `GET /billing/invoice/{id}` and cancel.
fn invoice_json(state: &SimState, invoice: &Invoice) -> Value {
    let services: Vec<Value> = invoice
        .lines
        .iter()
        .filter_map(|line| {
            let service = state.services.iter().find(|s| s.id == line.service_id)?;
            let mut described = ordered_service_json(
                &service.code,
                service.city.name,
                service.city.code,
                &service.selection,
            );
            described["id"] = json!(service.id);
            described["name"] = json!(service.name);
            described["network"]["public_ip"] = json!(service.ips.first().map(|ip| ip.to_string()));
            let mut entry = json!({
                "action": line.action.as_str(),
                "type": "vps",
                "quantity": 1,
                "identity": line.identity,
                "period": line_period(line.period),
                "service": described,
                "options": service.options,
                "additions": additions_json(&service.code, &service.selection),
                "promos": [],
                "comment": line.comment,
            });
            priced_fields(&mut entry, line.priced, 1);
            Some(entry)
        })
        .collect();
    let items: Vec<Value> = invoice
        .lines
        .iter()
        .map(|line| {
            let plan = state
                .services
                .iter()
                .find(|s| s.id == line.service_id)
                .map(|s| format!("{} ({})", s.code.plan.description(), s.code.period.name()))
                .unwrap_or_default();
            let verb = match line.action {
                LineAction::New => "New VPS",
                LineAction::Renew => "Renewal of VPS",
            };
            json!({
                "description": format!("{verb} {}: {plan}", line.service_id),
                "price": money(line.priced.total),
                "quantity": 1,
            })
        })
        .collect();
    json!({
        "id": invoice.id,
        "invoiced_at": invoice.invoiced_at,
        "paid_at": invoice.paid_at,
        "due_to": invoice.due_to,
        "total": money(invoice.total),
        "paid": paid_amount(invoice),
        "description": format!("Invoice #{}", invoice.id),
        "status": invoice_status_block(invoice),
        "payer": ["Simulated customer", "Example Street 1", "Amsterdam", "Netherlands"],
        "recipient": ["is*hosting (simulated)", "Example Road 2", "Tallinn", "Estonia"],
        "services": services,
        "items": items,
        "transactions": transactions_json(invoice),
    })
}

/// Renders an invoice as `GET /billing/invoices` lists it, with the id as a string.
fn invoice_summary_json(state: &SimState, invoice: &Invoice) -> Value {
    let services: Vec<Value> = invoice
        .lines
        .iter()
        .filter_map(|line| {
            let service = state.services.iter().find(|s| s.id == line.service_id)?;
            Some(json!({
                "action": line.action.as_str(),
                "type": "vps",
                "quantity": 1,
                "period": line_period(line.period),
                "service": {
                    "id": service.id,
                    "plan": {
                        "name": service.code.plan.name(),
                        "code": service.code.code(),
                        "period": {
                            "name": service.code.period.name(),
                            "code": service.code.period.code(),
                        },
                    },
                    "network": {"public_ip": service.ips.first().map(|ip| ip.to_string())},
                },
            }))
        })
        .collect();
    json!({
        "id": invoice.id.to_string(),
        "invoiced_at": invoice.invoiced_at,
        "paid_at": invoice.paid_at,
        "due_to": invoice.due_to,
        "total": money(invoice.total),
        "status": invoice_status_block(invoice),
        "services": services,
    })
}

// ---------------------------------------------------------------------------
// Catalogue.

/// `GET /vps/plans`: without a `period` filter only monthly plans are listed,
/// as the filter defaults to `1m`.
async fn list_plans(RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw);
    let period = match query.one("period") {
        None => Period::Month,
        Some(text) => match Period::parse(text) {
            Some(period) => period,
            None => {
                return invalid_field("period", "The period must be one of 1m, 3m, 6m, 1y.");
            }
        },
    };
    let locations = query.list("locations");
    let platforms = query.list("platforms");
    let top = query.one("top").and_then(|t| flag(Some(&json!(t))));
    let plans: Vec<Value> = PlanCode::all()
        .filter(|code| code.period == period)
        .filter(|code| {
            locations.is_empty()
                || locations
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(code.plan.location.country))
        })
        .filter(|code| {
            platforms.is_empty() || platforms.iter().any(|p| code.plan.platform.matches(p))
        })
        .filter(|code| top.is_none_or(|top| code.plan.is_top() == top))
        .map(|code| plan_json(&code, false))
        .collect();
    Json(plans).into_response()
}

async fn show_plan(Path(code): Path<String>) -> Response {
    match PlanCode::parse(&code) {
        Some(code) => Json(plan_json(&code, true)).into_response(),
        None => not_found_answer("Plan not found"),
    }
}

async fn show_configs(Path(code): Path<String>) -> Response {
    match PlanCode::parse(&code) {
        Some(code) => Json(configs_json(&code)).into_response(),
        None => not_found_answer("Plan not found"),
    }
}

// ---------------------------------------------------------------------------
// Ordering and billing.

async fn validate(body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let items = match check_order(&body) {
        Ok(items) => items,
        Err(errors) => return invalid(errors),
    };
    let items: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut entry = json!({
                "action": "new",
                "identity": item.identity,
                "type": "vps",
                "quantity": item.quantity,
                "service": ordered_service_json(
                    &item.code,
                    item.city.name,
                    item.city.code,
                    &item.selection,
                ),
                "options": item.options,
                "additions": additions_json(&item.code, &item.selection),
                "promos": [],
                "comment": item.comment,
            });
            priced_fields(
                &mut entry,
                Priced::new_order(&item.code, &item.selection),
                item.quantity,
            );
            entry
        })
        .collect();
    Json(json!({"items": items, "promos": []})).into_response()
}

/// Frees the account's cart when the order call ends, however it ends.
struct CartGuard {
    sim: Simulator,
    key: String,
}

impl Drop for CartGuard {
    fn drop(&mut self) {
        if let Some(account) = self.sim.lock().accounts.get_mut(&self.key) {
            account.order_busy = false;
        }
    }
}

async fn order(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    body: Bytes,
) -> Response {
    let body = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let items = match check_order(&body) {
        Ok(items) => items,
        Err(errors) => return invalid(errors),
    };
    let busy = {
        let mut state = sim.state();
        match state.accounts.get_mut(&key) {
            Some(account) if account.order_busy => true,
            Some(account) => {
                account.order_busy = true;
                false
            }
            None => return not_found_answer("Account not found"),
        }
    };
    if busy {
        return error(
            StatusCode::CONFLICT,
            "Another order is being processed for this account; try again when it is done",
            json!({}),
        );
    }
    let _cart = CartGuard {
        sim: sim.clone(),
        key: key.clone(),
    };
    tokio::time::sleep(ORDER_PROCESSING).await;
    let mut state = sim.state();
    let id = state.place_order(&key, &items);
    let invoice = &state.invoices[&id];
    Json(invoice_json(&state, invoice)).into_response()
}

fn invoice_id(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

async fn list_invoices(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = Query::parse(raw);
    let (limit, offset) = match query.paging() {
        Ok(paging) => paging,
        Err(answer) => return answer,
    };
    let status = match query.one("status") {
        None => None,
        Some(text) => match InvoiceStatus::parse(text) {
            Some(status) => Some(status),
            None => {
                return invalid_field(
                    "status",
                    "The status must be one of STATUS_UNPAID, STATUS_PAID, STATUS_CANCELLED.",
                );
            }
        },
    };
    let service = query.one("service").or_else(|| query.one("service_id"));
    let mut bounds = [None, None];
    for (slot, name) in bounds.iter_mut().zip(["period[from]", "period[to]"]) {
        if let Some(text) = query.one(name) {
            match text.parse::<i64>() {
                Ok(t) => *slot = Some(t),
                Err(_) => return invalid_field(name, "The period bounds must be Unix seconds."),
            }
        }
    }
    let [from, to] = bounds;
    let state = sim.state();
    let list: Vec<Value> = state
        .invoices
        .values()
        .rev()
        .filter(|i| i.account == key)
        .filter(|i| status.is_none_or(|s| i.status == s))
        .filter(|i| {
            service.is_none_or(|id| {
                i.lines
                    .iter()
                    .any(|l| l.service_id.eq_ignore_ascii_case(id))
            })
        })
        .filter(|i| from.is_none_or(|from| i.invoiced_at >= from))
        .filter(|i| to.is_none_or(|to| i.invoiced_at <= to))
        .skip(offset)
        .take(limit)
        .map(|i| invoice_summary_json(&state, i))
        .collect();
    Json(list).into_response()
}

async fn show_invoice(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let state = sim.state();
    match invoice_id(&id).and_then(|id| state.invoice(&key, id)) {
        Some(invoice) => Json(invoice_json(&state, invoice)).into_response(),
        None => not_found_answer("Invoice not found"),
    }
}

async fn invoice_status(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let state = sim.state();
    let Some(invoice) = invoice_id(&id).and_then(|id| state.invoice(&key, id)) else {
        return not_found_answer("Invoice not found");
    };
    Json(json!({
        "id": invoice.id,
        "invoiced_at": invoice.invoiced_at,
        "paid_at": invoice.paid_at,
        "due_to": invoice.due_to,
        "total": money(invoice.total),
        "paid": paid_amount(invoice),
        "status": invoice_status_block(invoice),
        "transactions": transactions_json(invoice),
    }))
    .into_response()
}

async fn pay(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let Some(id) = invoice_id(&id) else {
        return not_found_answer("Invoice not found");
    };
    let mut state = sim.state();
    if state.invoice(&key, id).is_none() {
        return not_found_answer("Invoice not found");
    }
    // NOTE: external payment methods (a redirect to a payment page) are not
    // modelled; only payment from the account balance is.
    if flag(body.get("balance")) != Some(true) {
        state.failed_payments += 1;
        return invalid_field(
            "balance",
            "Only payment from the account balance is available: send balance true.",
        );
    }
    let renew = flag(body.get("renew"));
    match state.pay(&key, id, renew) {
        Ok(total) => Json(json!({
            "transaction": {
                "type": "balance",
                "description": "Paid from client balance",
                "total": money(total),
                "status": "TRANSACTION_SUCCESS",
            },
            "redirect": null,
        }))
        .into_response(),
        Err(PayError::NotFound) => not_found_answer("Invoice not found"),
        Err(PayError::AlreadyPaid) => error(
            StatusCode::BAD_REQUEST,
            format!("Invoice {id} is already paid"),
            json!({"invoice": "The invoice is already paid."}),
        ),
        Err(PayError::Cancelled) => error(
            StatusCode::BAD_REQUEST,
            format!("Invoice {id} is cancelled and cannot be paid"),
            json!({"invoice": "The invoice is cancelled."}),
        ),
        Err(PayError::InsufficientFunds { balance, total }) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "Insufficient funds: the balance is {}, the invoice total is {}",
                money(balance),
                money(total)
            ),
            json!({
                "balance": format!(
                    "The balance {} is less than the invoice total {}.",
                    money(balance),
                    money(total)
                ),
            }),
        ),
    }
}

async fn cancel_invoice(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let mut state = sim.state();
    let Some(invoice) = invoice_id(&id).and_then(|id| state.invoice(&key, id)) else {
        return not_found_answer("Invoice not found");
    };
    if invoice.status != InvoiceStatus::Unpaid {
        return error(
            StatusCode::BAD_REQUEST,
            "Only unpaid invoices can be cancelled",
            json!({"status": invoice.status.code()}),
        );
    }
    let id = invoice.id;
    state.cancel_invoice_now(id, "Cancelled by the client");
    Json(invoice_json(&state, &state.invoices[&id])).into_response()
}

// ---------------------------------------------------------------------------
// Services.

async fn list_services(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
) -> Response {
    let state = sim.state();
    let list: Vec<Value> = state
        .services
        .iter()
        .filter(|s| s.account == key)
        .map(|s| json!({"type": "vps", "name": s.name, "id": s.id}))
        .collect();
    Json(list).into_response()
}

/// Compares a status filter with a status code, ignoring case, the prefix and
/// the spelling of cancelled.
fn same_code(filter: &str, code: &str, prefix: &str) -> bool {
    let bare = |text: &str| {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix(prefix).unwrap_or(&upper).to_owned();
        if bare == "CANCELLED" {
            "CANCELED".to_owned()
        } else {
            bare
        }
    };
    bare(filter) == bare(code)
}

async fn list_vps(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = Query::parse(raw);
    let (limit, offset) = match query.paging() {
        Ok(paging) => paging,
        Err(answer) => return answer,
    };
    let text = query.one("query").map(str::to_ascii_lowercase);
    let locations = query.list("locations");
    let plans = query.list("plans");
    let platforms = query.list("platforms");
    let statuses = query.list("statuses");
    let states = query.list("states");

    let state = sim.state();
    let now = state.clock.now_s();
    let list: Vec<Value> = state
        .services
        .iter()
        .filter(|s| s.account == key)
        .filter(|s| {
            text.as_ref().is_none_or(|t| {
                s.name.to_ascii_lowercase().contains(t) || s.id.to_ascii_lowercase().contains(t)
            })
        })
        .filter(|s| {
            locations.is_empty()
                || locations
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(s.code.plan.location.country))
        })
        .filter(|s| {
            plans.is_empty() || plans.iter().any(|p| p.eq_ignore_ascii_case(&s.code.code()))
        })
        .filter(|s| {
            platforms.is_empty() || platforms.iter().any(|p| s.code.plan.platform.matches(p))
        })
        .filter(|s| {
            statuses.is_empty()
                || statuses
                    .iter()
                    .any(|f| same_code(f, s.status.code(), "STATUS_CODE_"))
        })
        .filter(|s| {
            states.is_empty()
                || states
                    .iter()
                    .any(|f| same_code(f, s.status.state_code(), "STATE_CODE_"))
        })
        .skip(offset)
        .take(limit)
        .map(|s| vps_summary_json(s, now))
        .collect();
    Json(list).into_response()
}

async fn show_vps(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let state = sim.state();
    let now = state.clock.now_s();
    match state.service(&key, &id) {
        Some(service) => Json(vps_json(service, now)).into_response(),
        None => not_found_answer("VPS not found"),
    }
}

async fn vps_status(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let state = sim.state();
    let now = state.clock.now_s();
    match state.service(&key, &id) {
        Some(service) => Json(status_json(service, now, false)).into_response(),
        None => not_found_answer("VPS not found"),
    }
}

/// `PATCH /vps/{id}`: `tags` must come with every call (an empty list clears them).
async fn patch_vps(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let mut state = sim.state();
    if state.service(&key, &id).is_none() {
        return not_found_answer("VPS not found");
    }

    let mut errors = BTreeMap::new();
    let tags = match body.get("tags") {
        None | Some(Value::Null) => {
            errors.insert("tags".to_owned(), "The tags field is required.".to_owned());
            None
        }
        Some(Value::Array(list)) => {
            let tags: Option<Vec<String>> =
                list.iter().map(|t| t.as_str().map(str::to_owned)).collect();
            if tags.is_none() {
                errors.insert("tags".to_owned(), "Each tag must be a string.".to_owned());
            }
            tags
        }
        Some(_) => {
            errors.insert("tags".to_owned(), "The tags must be an array.".to_owned());
            None
        }
    };

    let name = match body.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if !name.trim().is_empty() && name.chars().count() <= 255 => {
            Some(name.clone())
        }
        Some(_) => {
            errors.insert(
                "name".to_owned(),
                "The name must be a non-empty string of at most 255 characters.".to_owned(),
            );
            None
        }
    };

    let auto_renew = match body.get("plan") {
        None | Some(Value::Null) => None,
        Some(plan) => match plan.get("auto_renew") {
            None => None,
            Some(value) => {
                let parsed = flag(Some(value));
                if parsed.is_none() {
                    errors.insert(
                        "plan.auto_renew".to_owned(),
                        "The auto renew field must be true or false.".to_owned(),
                    );
                }
                parsed
            }
        },
    };
    if !errors.is_empty() {
        return invalid(errors);
    }

    let now = state.clock.now_s();
    let Some(service) = state.service_mut(&key, &id) else {
        return not_found_answer("VPS not found");
    };
    if let Some(tags) = tags {
        service.tags = tags;
    }
    if let Some(name) = name {
        service.name = name;
    }
    if let Some(auto_renew) = auto_renew {
        service.auto_renew = auto_renew;
    }
    service.updated_at = now;
    Json(json!({
        "id": service.id,
        "name": service.name,
        "tags": service.tags,
        "plan": {"auto_renew": service.auto_renew},
    }))
    .into_response()
}

async fn vps_action(
    State(sim): State<Simulator>,
    Extension(Caller(key)): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let mut state = sim.state();
    match state.vps_action(&key, &id, &action) {
        Ok(_) => {
            let now = state.clock.now_s();
            let service = state.service(&key, &id).expect("the action found it");
            Json(status_json(service, now, false)).into_response()
        }
        Err(ActionError::NotFound) => not_found_answer("VPS not found"),
        Err(ActionError::UnknownAction) => invalid_field(
            "action",
            "The action must be one of start, stop, reboot, force, cancel.",
        ),
        Err(ActionError::NotAllowed(status)) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "The action {action} is not available while the VPS is {}",
                status.name().to_ascii_lowercase()
            ),
            json!({"action": format!("Not available in status {}.", status.code())}),
        ),
    }
}

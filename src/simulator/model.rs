//! Types of the simulator's admin API, shared by its server side and [`AdminClient`].
//!
//! [`AdminClient`]: super::AdminClient

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Names of provider API operations, as keys of [`Faults::drop_answers`] and in
/// the request log's terms:
///
/// | name | call |
/// | --- | --- |
/// | `plans` | `GET /vps/plans` |
/// | `plan` | `GET /vps/plan/{code}` |
/// | `configs` | `GET /vps/configs/{code}` |
/// | `validate` | `POST /billing/order/validate` |
/// | `order` | `POST /billing/order` |
/// | `invoices` | `GET /billing/invoices` |
/// | `invoice` | `GET /billing/invoice/{id}` |
/// | `invoice_status` | `GET /billing/invoice/{id}/status` |
/// | `pay` | `POST /billing/invoice/{id}/pay` |
/// | `cancel_invoice` | `PATCH /billing/invoice/{id}/cancel` |
/// | `services` | `GET /services/list` |
/// | `vps_list` | `GET /vps/list` |
/// | `vps` | `GET /vps/{id}` |
/// | `vps_patch` | `PATCH /vps/{id}` |
/// | `vps_status` | `GET /vps/{id}/status` |
/// | `vps_action` | `PATCH /vps/{id}/status/{action}` |
/// | `other` | anything else (responds 404 or 405) |
pub const OPERATIONS: &[&str] = &[
    "plans",
    "plan",
    "configs",
    "validate",
    "order",
    "invoices",
    "invoice",
    "invoice_status",
    "pay",
    "cancel_invoice",
    "services",
    "vps_list",
    "vps",
    "vps_patch",
    "vps_status",
    "vps_action",
    "other",
];

/// Faults injected into provider API calls (never into the admin API).
/// `Default` turns every fault off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Delay before each provider call is handled, in milliseconds.
    pub latency_ms: u64,
    /// Share of provider calls (0..1) that get a 5xx before they are handled.
    pub error_rate: f64,
    /// Per operation name (see [`OPERATIONS`]), how many of its next responses to
    /// drop. The call is handled and its change committed, then the connection is
    /// closed without a valid HTTP response.
    pub drop_answers: BTreeMap<String, u32>,
    /// How long a dropped response keeps the connection open before closing it, in
    /// milliseconds.
    pub hold_answers_ms: u64,
    /// Share of provider calls (0..1) whose connection is closed before they are
    /// handled (nothing committed).
    pub reset_rate: f64,
    /// Share of provider calls (0..1) that get a 429 before they are handled,
    /// without blocking the key.
    pub rate_limit_rate: f64,
    /// Share of provider calls (0..1) that get the HTML challenge page.
    pub challenge_rate: f64,
}

/// Summary of one invoice in [`Stats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceSummary {
    pub id: u64,
    /// `identity` of the invoice's first order item, `""` without one.
    pub identity: String,
    /// `comment` of the invoice's first order item, `""` without one.
    pub comment: String,
    /// Status code, such as `STATUS_UNPAID`.
    pub status: String,
    /// Total in dollars, as a decimal string.
    pub total: String,
}

/// Summary of one service in [`Stats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub id: String,
    /// `identity` of the order item that created it, `""` without one.
    pub identity: String,
    /// Status code, such as `STATUS_CODE_RUNNING`.
    pub status: String,
    /// State code, such as `STATE_CODE_ACTIVE`.
    pub state: String,
    pub name: String,
    pub tags: Vec<String>,
}

/// Counters and contents of the simulator, the JSON of `GET /_admin/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Orders placed (`POST /billing/order` returned 200), one per order item,
    /// keyed by the item's `identity` (`""` for items without one).
    pub orders_by_identity: BTreeMap<String, u32>,
    /// Successful payments, keyed by each distinct `identity` among the paid
    /// invoice's items. Automatic renewals paid from the balance count too.
    pub payments_by_identity: BTreeMap<String, u32>,
    /// Pay calls rejected for an existing invoice: insufficient funds, already
    /// paid, cancelled, or a payment method other than the balance.
    pub failed_payments: u32,
    /// Every invoice, oldest first.
    pub invoices: Vec<InvoiceSummary>,
    /// Every service, oldest first.
    pub services: Vec<ServiceSummary>,
    /// Balance in dollars (decimal string) per key fingerprint: the first 12 hex
    /// digits of the SHA-256 of the API key.
    pub balances: BTreeMap<String, String>,
    /// Provider API requests received, including rejected and dropped ones.
    pub requests_total: u64,
    /// Per key fingerprint, the maximum number of requests that arrived with that key within any
    /// 10 simulated seconds (the window of the provider's block), every request counted.
    pub max_requests_per_10s: BTreeMap<String, u32>,
    /// Per key fingerprint, the maximum number of requests that arrived with that key within any
    /// 60 simulated seconds (the window of the provider's challenge).
    pub max_requests_per_60s: BTreeMap<String, u32>,
    /// Requests rejected by the provider's own rate limits: a key blocked for exceeding 150
    /// requests in 10 s, or challenged for exceeding 300 in 60 s. Injected 429s and
    /// challenge pages are not counted.
    pub rate_limit_refusals: u32,
}

/// One provider API request in the admin request log. It never contains the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Order of arrival, from 1.
    pub seq: u64,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Status of the response, or 0 when the connection was closed without one
    /// (a dropped response or a reset).
    pub status: u16,
    /// First 12 hex digits of the SHA-256 of the presented key, if any.
    pub key_fingerprint: Option<String>,
    /// Simulated time of arrival, in Unix milliseconds.
    pub at_ms: u64,
}

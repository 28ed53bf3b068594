//! The HTTP client: configuration, API keys, per-key budgets and the calls themselves.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::header::{ACCEPT, ACCEPT_LANGUAGE, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::error::{
    ApiError, MAX_RETRY_AFTER, ResponseParts, error_from_response, parse_retry_after,
};
use super::ratelimit::{Budget, RateLimiter};
use super::status::{InvoiceStatus, ServiceStatus};
use super::types::{
    Invoice, InvoiceFilter, ListResponse, OrderRequest, PayRequest, Plan, PlanConfigs, PlanFilter,
    Quote, ServiceRef, Transaction, Vps, VpsAction, VpsPage, VpsPatch, invoice_status_from_value,
};

/// First retry waits up to this long; each further retry doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Maximum backoff before a retry.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Page size that [`Account::vps_list_all`] requests.
const VPS_PAGE_SIZE: u32 = 100;
/// Maximum number of pages [`Account::vps_list_all`] reads before it fails.
const VPS_MAX_PAGES: usize = 1000;

/// Settings of an [`ApiClient`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// API root; paths such as `/vps/list` are appended to it. Default `https://api.ishosting.com`.
    pub base_url: url::Url,
    /// Header that carries the API key. Default `X-Api-Token`.
    pub token_header: String,
    /// Language of the provider's names and messages, `en` or `ru`. Default `en`.
    pub accept_language: String,
    /// Default `ishosting-operator/<crate version>`.
    pub user_agent: String,
    /// Time allowed to open a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, response included. Default 30 s.
    pub request_timeout: Duration,
    /// Requests allowed per API key.
    pub budget: Budget,
    /// Retries of a failed read-only request, so at most `get_retries + 1` attempts. Default 3.
    pub get_retries: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: url::Url::parse("https://api.ishosting.com").expect("static URL is valid"),
            token_header: "X-Api-Token".into(),
            accept_language: "en".into(),
            user_agent: format!("ishosting-operator/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            budget: Budget::default(),
            get_retries: 3,
        }
    }
}

/// An is*hosting API key. `Debug` and `Display` print `ApiKey(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key, trimming surrounding whitespace (keys read from files often end in a
    /// newline).
    pub fn new(key: String) -> Self {
        ApiKey(Arc::from(key.trim()))
    }

    /// Returns the first 12 hex digits of the key's SHA-256, safe for logs and metrics.
    pub fn fingerprint(&self) -> String {
        let mut hex = self.digest_hex();
        hex.truncate(12);
        hex
    }

    fn digest_hex(&self) -> String {
        Sha256::digest(self.0.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn header_value(&self) -> Result<HeaderValue, ApiError> {
        if self.0.is_empty() {
            return Err(ApiError::InvalidInput {
                detail: "the API key is empty".into(),
            });
        }
        let mut value = HeaderValue::from_str(&self.0).map_err(|_| ApiError::InvalidInput {
            detail: "the API key contains characters that cannot be sent in an HTTP header".into(),
        })?;
        // Keeps the key out of reqwest's and hyper's debug output.
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// State shared by every [`Account`] handle of one API key.
#[derive(Debug)]
struct KeyState {
    limiter: RateLimiter,
    order_lock: Arc<tokio::sync::Mutex<()>>,
    requests_sent: AtomicU64,
    /// The credentials breaker: the rejection (status, provider message) that opened it,
    /// `None` while closed. While open, calls that change the account fail without a
    /// request. The first read-only call that succeeds closes it.
    rejected: Mutex<Option<(u16, String)>>,
}

impl KeyState {
    /// Returns the error for a state-changing call while the breaker is open.
    fn breaker_error(&self) -> Option<ApiError> {
        let rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        rejected
            .as_ref()
            .map(|(status, message)| ApiError::Unauthorized {
                status: *status,
                message: format!(
                    "{message}; credentials breaker open for this key: no order, payment or change is sent with it until a read-only call with it succeeds"
                ),
            })
    }

    /// Opens the breaker after the provider rejected the key, or closes it after a
    /// read-only call succeeded.
    fn set_rejected(&self, rejection: Option<(u16, String)>) {
        let mut rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        *rejected = rejection;
    }
}

struct Inner {
    http: reqwest::Client,
    base_url: url::Url,
    token_header: HeaderName,
    accept_language: HeaderValue,
    budget: Budget,
    get_retries: u32,
    /// Keyed by the full SHA-256 hex of the API key, never the key itself.
    // NOTE: entries are never removed; one per key ever used, which is a handful per process.
    keys: Mutex<HashMap<String, Arc<KeyState>>>,
}

/// The process-wide client. Cheap to clone; clones share connections and key budgets.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.inner.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// Builds the client; fails on a base URL that is not http(s), an invalid header name or
    /// value, or an empty budget.
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        let invalid = |detail: String| ApiError::InvalidInput { detail };
        if !matches!(config.base_url.scheme(), "http" | "https")
            || config.base_url.cannot_be_a_base()
        {
            return Err(invalid(format!(
                "base URL {} is not an http or https URL",
                config.base_url
            )));
        }
        let token_header =
            HeaderName::from_bytes(config.token_header.as_bytes()).map_err(|_| {
                invalid(format!(
                    "{:?} is not a valid header name",
                    config.token_header
                ))
            })?;
        let accept_language = HeaderValue::from_str(&config.accept_language).map_err(|_| {
            invalid(format!(
                "{:?} is not a valid Accept-Language value",
                config.accept_language
            ))
        })?;
        config.budget.validate().map_err(invalid)?;
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirect could repeat a POST that moves money, so none is followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                http,
                base_url: config.base_url,
                token_header,
                accept_language,
                budget: config.budget,
                get_retries: config.get_retries,
                keys: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Returns a handle bound to one API key. Handles for the same key share that key's
    /// request budget and order lock.
    pub fn account(&self, key: ApiKey) -> Account {
        let digest = key.digest_hex();
        let state = {
            let mut keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.entry(digest)
                .or_insert_with(|| {
                    Arc::new(KeyState {
                        limiter: RateLimiter::new(self.inner.budget.clone()),
                        order_lock: Arc::new(tokio::sync::Mutex::new(())),
                        requests_sent: AtomicU64::new(0),
                        rejected: Mutex::new(None),
                    })
                })
                .clone()
        };
        Account {
            fingerprint: key.fingerprint(),
            client: self.clone(),
            key,
            state,
            retries: None,
        }
    }
}

/// The retry policy of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Read-only: retried on transport errors, 5xx and short 429 waits.
    Safe,
    /// Changes state: retried only when the connection could not be opened, so nothing was
    /// sent.
    ConnectFailures,
    /// Moves money: never retried, and any failure after sending is `OutcomeUnknown`.
    Never(&'static str),
}

/// A received HTTP response.
struct RawResponse {
    status: StatusCode,
    retry_after: Option<Duration>,
    content_type: Option<String>,
    cf_challenge: bool,
    body: Vec<u8>,
}

impl RawResponse {
    fn view(&self) -> ResponseParts<'_> {
        ResponseParts {
            status: self.status.as_u16(),
            retry_after: self.retry_after,
            content_type: self.content_type.as_deref(),
            cf_challenge: self.cf_challenge,
            body: &self.body,
        }
    }
}

/// A handle to the API bound to one key. Cheap to clone.
#[derive(Clone)]
pub struct Account {
    client: ApiClient,
    key: ApiKey,
    fingerprint: String,
    state: Arc<KeyState>,
    /// Replaces [`ClientConfig::get_retries`] for this handle when set.
    retries: Option<u32>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Returns a handle for the same key that sends each request once, without the
    /// retries of [`ClientConfig::get_retries`]. A caller that backs off on its own uses it
    /// so that repeated failures cost one request each, not `get_retries + 1`.
    pub fn without_retries(&self) -> Account {
        Account {
            retries: Some(0),
            ..self.clone()
        }
    }

    /// Returns the key's fingerprint (first 12 hex digits of its SHA-256).
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Returns how many HTTP requests have been sent with this key, retries included, by
    /// every handle for it.
    pub fn requests_sent(&self) -> u64 {
        self.state.requests_sent.load(Ordering::Relaxed)
    }

    /// Returns the total time calls with this key have waited for the request budget.
    pub fn budget_wait_total(&self) -> Duration {
        self.state.limiter.waited_total()
    }

    /// Serialises order placement and payment per API key, because the provider keeps one
    /// shared cart per account. Hold the guard from before [`order`](Self::order) until the
    /// invoice id is stored.
    pub async fn order_lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.state.order_lock.clone().lock_owned().await
    }

    /// Lists VPS plans (`GET /vps/plans`).
    pub async fn plans(&self, filter: &PlanFilter) -> Result<Vec<Plan>, ApiError> {
        let list: ListResponse<Plan> = self
            .call(
                Method::GET,
                &["vps", "plans"],
                &filter.query_pairs(),
                None,
                Repeat::Safe,
            )
            .await?;
        Ok(list.items)
    }

    /// Fetches one plan (`GET /vps/plan/{code}`).
    pub async fn plan(&self, code: &str) -> Result<Plan, ApiError> {
        self.call(Method::GET, &["vps", "plan", code], &[], None, Repeat::Safe)
            .await
    }

    /// Fetches the periods, cities and extras of a plan (`GET /vps/configs/{code}`).
    pub async fn plan_configs(&self, code: &str) -> Result<PlanConfigs, ApiError> {
        let value: Value = self
            .call(
                Method::GET,
                &["vps", "configs", code],
                &[],
                None,
                Repeat::Safe,
            )
            .await?;
        PlanConfigs::from_value(code, &value).map_err(|detail| ApiError::Decode { detail })
    }

    /// Prices an order without placing it (`POST /billing/order/validate`).
    ///
    /// It changes nothing at the provider, so it is retried like a read.
    pub async fn validate(&self, order: &OrderRequest) -> Result<Quote, ApiError> {
        check_order(order)?;
        let body = to_body(order)?;
        self.call(
            Method::POST,
            &["billing", "order", "validate"],
            &[],
            Some(body),
            Repeat::Safe,
        )
        .await
    }

    /// Places an order and returns its invoice (`POST /billing/order`). Never retried.
    ///
    /// [`ApiError::OutcomeUnknown`] means the order may exist: look for its invoice (for
    /// example by the item comment) before ordering again. Dropping the returned future after
    /// the request was sent leaves the outcome unknown in the same way. Hold
    /// [`order_lock`](Self::order_lock) around this call.
    pub async fn order(&self, order: &OrderRequest) -> Result<Invoice, ApiError> {
        check_order(order)?;
        let body = to_body(order)?;
        self.call(
            Method::POST,
            &["billing", "order"],
            &[],
            Some(body),
            Repeat::Never("order"),
        )
        .await
    }

    /// Pays an invoice (`POST /billing/invoice/{id}/pay`). Never retried.
    ///
    /// [`ApiError::OutcomeUnknown`] means the payment may have happened: read the invoice
    /// status before paying again.
    pub async fn pay(&self, invoice_id: &str, pay: &PayRequest) -> Result<Transaction, ApiError> {
        let body = to_body(pay)?;
        self.call(
            Method::POST,
            &["billing", "invoice", invoice_id, "pay"],
            &[],
            Some(body),
            Repeat::Never("pay"),
        )
        .await
    }

    /// Fetches an invoice (`GET /billing/invoice/{id}`).
    pub async fn invoice(&self, id: &str) -> Result<Invoice, ApiError> {
        self.call(
            Method::GET,
            &["billing", "invoice", id],
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    /// Fetches the payment status of an invoice (`GET /billing/invoice/{id}/status`).
    pub async fn invoice_status(&self, id: &str) -> Result<InvoiceStatus, ApiError> {
        let value: Value = self
            .call(
                Method::GET,
                &["billing", "invoice", id, "status"],
                &[],
                None,
                Repeat::Safe,
            )
            .await?;
        invoice_status_from_value(&value).map_err(|detail| ApiError::Decode { detail })
    }

    /// Lists invoices (`GET /billing/invoices`): one page, as the filter's `limit` and
    /// `offset` select.
    pub async fn invoices(&self, filter: &InvoiceFilter) -> Result<Vec<Invoice>, ApiError> {
        let list: ListResponse<Invoice> = self
            .call(
                Method::GET,
                &["billing", "invoices"],
                &filter.query_pairs(),
                None,
                Repeat::Safe,
            )
            .await?;
        Ok(list.items)
    }

    /// Cancels an unpaid invoice (`PATCH /billing/invoice/{id}/cancel`).
    pub async fn cancel_invoice(&self, id: &str) -> Result<(), ApiError> {
        self.call_unit(
            Method::PATCH,
            &["billing", "invoice", id, "cancel"],
            &[],
            None,
        )
        .await
    }

    /// Lists one page of VPS (`GET /vps/list?limit=&offset=`).
    pub async fn vps_list(&self, limit: u32, offset: u32) -> Result<VpsPage, ApiError> {
        let query = [
            ("limit".to_string(), limit.to_string()),
            ("offset".to_string(), offset.to_string()),
        ];
        self.call(Method::GET, &["vps", "list"], &query, None, Repeat::Safe)
            .await
    }

    /// Lists every VPS of the account, page by page.
    ///
    /// It reads until a page is empty, brings no new id, or the stated total is reached. A
    /// short page alone does not end the listing, because the provider may cap the page size
    /// below the requested one. A missed VPS could lead a caller to order it again.
    pub async fn vps_list_all(&self) -> Result<Vec<Vps>, ApiError> {
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        let mut offset: u32 = 0;
        for _ in 0..VPS_MAX_PAGES {
            let page = self.vps_list(VPS_PAGE_SIZE, offset).await?;
            let received = page.items.len();
            let mut new_items = 0usize;
            for vps in page.items {
                if seen.insert(vps.id.clone()) {
                    all.push(vps);
                    new_items += 1;
                }
            }
            let total_reached = page.total.is_some_and(|total| all.len() >= total as usize);
            if received == 0 || new_items == 0 || total_reached {
                return Ok(all);
            }
            offset = offset.saturating_add(u32::try_from(received).unwrap_or(u32::MAX));
        }
        Err(ApiError::Decode {
            detail: format!("the VPS list did not end after {VPS_MAX_PAGES} pages"),
        })
    }

    /// Fetches one VPS (`GET /vps/{id}`). Its access passwords are not read.
    pub async fn vps(&self, id: &str) -> Result<Vps, ApiError> {
        self.call(Method::GET, &["vps", id], &[], None, Repeat::Safe)
            .await
    }

    /// Fetches the status of a VPS (`GET /vps/{id}/status`).
    pub async fn vps_status(&self, id: &str) -> Result<ServiceStatus, ApiError> {
        self.call(Method::GET, &["vps", id, "status"], &[], None, Repeat::Safe)
            .await
    }

    /// Starts, stops, reboots or cancels a VPS (`PATCH /vps/{id}/status/{action}`).
    pub async fn vps_action(&self, id: &str, action: VpsAction) -> Result<(), ApiError> {
        self.call_unit(
            Method::PATCH,
            &["vps", id, "status", action.as_str()],
            &[],
            None,
        )
        .await
    }

    /// Changes the name, tags or auto-renewal of a VPS (`PATCH /vps/{id}`).
    pub async fn vps_patch(&self, id: &str, patch: &VpsPatch) -> Result<(), ApiError> {
        let body = to_body(patch)?;
        self.call_unit(Method::PATCH, &["vps", id], &[], Some(body))
            .await
    }

    /// Lists every service of the account (`GET /services/list`).
    pub async fn services(&self) -> Result<Vec<ServiceRef>, ApiError> {
        let list: ListResponse<ServiceRef> = self
            .call(Method::GET, &["services", "list"], &[], None, Repeat::Safe)
            .await?;
        Ok(list.items)
    }

    // -----------------------------------------------------------------------------------
    // Plumbing
    // -----------------------------------------------------------------------------------

    /// Sends a request and decodes its JSON response.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        repeat: Repeat,
    ) -> Result<T, ApiError> {
        let raw = self.send(method, segments, query, body, repeat).await?;
        decode(&raw, repeat)
    }

    /// Sends a state-changing request whose response body is not needed.
    async fn call_unit(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(), ApiError> {
        let raw = self
            .send(method, segments, query, body, Repeat::ConnectFailures)
            .await?;
        let view = raw.view();
        if view.is_non_json_page() {
            return Err(error_from_response(&view));
        }
        Ok(())
    }

    /// Reports whether the credentials breaker of this key is open: the provider rejected
    /// the key and no read-only call has succeeded since.
    pub fn breaker_open(&self) -> bool {
        self.state.breaker_error().is_some()
    }

    /// Sends a request, minding the key's credentials breaker: a state-changing call fails
    /// at once while it is open, a rejected key opens it, a successful read closes it.
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        repeat: Repeat,
    ) -> Result<RawResponse, ApiError> {
        if repeat != Repeat::Safe
            && let Some(error) = self.state.breaker_error()
        {
            tracing::debug!(method = %method, key = %self.fingerprint, "credentials breaker open, so the request was not sent");
            return Err(error);
        }
        let result = self
            .send_unguarded(method, segments, query, body, repeat)
            .await;
        match &result {
            Ok(_) if repeat == Repeat::Safe => self.state.set_rejected(None),
            // Only a JSON 401/403 maps to Unauthorized; a challenge page is RateLimited.
            Err(ApiError::Unauthorized { status, message }) => {
                if !self.breaker_open() {
                    tracing::warn!(key = %self.fingerprint, status, "is*hosting rejected the API key, so calls that change the account are held back until a read-only call with it succeeds");
                }
                self.state.set_rejected(Some((*status, message.clone())));
            }
            _ => {}
        }
        result
    }

    /// Sends a request with retries as `repeat` allows, and returns a 2xx response or the error.
    async fn send_unguarded(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        repeat: Repeat,
    ) -> Result<RawResponse, ApiError> {
        let url = self.url(segments, query)?;
        let headers = self.headers(body.is_some())?;
        let inner = &self.client.inner;
        let max_attempts = match repeat {
            Repeat::Never(_) => 1,
            Repeat::Safe | Repeat::ConnectFailures => {
                self.retries.unwrap_or(inner.get_retries).saturating_add(1)
            }
        };
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let span = tracing::debug_span!(
                "ishosting_request",
                method = %method,
                path = %url.path(),
                key = %self.fingerprint,
                attempt,
                status = tracing::field::Empty,
            );
            let result = self
                .attempt(&method, &url, &headers, body.clone(), repeat)
                .instrument(span)
                .await;
            let (error, wait) = match result {
                Ok(raw) => return Ok(raw),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retryable { error, wait }) => (error, wait),
            };
            if attempt >= max_attempts {
                return Err(error);
            }
            let wait = wait.unwrap_or_else(|| backoff(attempt - 1));
            tracing::warn!(
                method = %method,
                path = %url.path(),
                key = %self.fingerprint,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "retrying is*hosting request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one attempt and classifies its failure.
    async fn attempt(
        &self,
        method: &Method,
        url: &url::Url,
        headers: &HeaderMap,
        body: Option<Vec<u8>>,
        repeat: Repeat,
    ) -> Result<RawResponse, Failure> {
        // Held until the response body has been read: see the module docs of ratelimit.
        let _permit = self.state.limiter.acquire().await;
        self.state.requests_sent.fetch_add(1, Ordering::Relaxed);

        let mut request = self
            .client
            .inner
            .http
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(body) = body {
            request = request.body(body);
        }
        let started = tokio::time::Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(transport_failure(&error, repeat)),
        };
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        let headers = response.headers();
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, chrono::Utc::now()));
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let cf_challenge = headers
            .get("cf-mitigated")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("challenge"));
        let body = match response.bytes().await {
            Ok(bytes) => bytes.to_vec(),
            Err(error) => return Err(transport_failure(&error, repeat)),
        };
        tracing::debug!(
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "is*hosting responded"
        );
        let raw = RawResponse {
            status,
            retry_after,
            content_type,
            cf_challenge,
            body,
        };
        if status.is_success() {
            return Ok(raw);
        }
        let view = raw.view();
        let error = error_from_response(&view);
        Err(classify_status_error(error, &view, repeat))
    }

    fn url(&self, segments: &[&str], query: &[(String, String)]) -> Result<url::Url, ApiError> {
        if let Some(empty) = segments
            .iter()
            .position(|segment| segment.trim().is_empty())
        {
            return Err(ApiError::InvalidInput {
                detail: format!("path segment {empty} is empty (an id or code was not given)"),
            });
        }
        // The url crate drops "." and ".." segments instead of encoding them, which would
        // send the request to another path.
        if let Some(dots) = segments
            .iter()
            .find(|segment| matches!(**segment, "." | ".."))
        {
            return Err(ApiError::InvalidInput {
                detail: format!("{dots:?} is not a valid id or code"),
            });
        }
        let mut url = self.client.inner.base_url.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| ApiError::InvalidInput {
                    detail: "the base URL cannot take a path".into(),
                })?;
            path.pop_if_empty();
            // Each segment is percent-encoded, so an id cannot add path levels or a query.
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn headers(&self, has_body: bool) -> Result<HeaderMap, ApiError> {
        let inner = &self.client.inner;
        let mut headers = HeaderMap::new();
        headers.insert(inner.token_header.clone(), self.key.header_value()?);
        headers.insert(ACCEPT_LANGUAGE, inner.accept_language.clone());
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(headers)
    }
}

/// A failed attempt.
enum Failure {
    /// Return this error now.
    Final(ApiError),
    /// Another attempt may succeed, after `wait` (or the backoff when `None`).
    Retryable {
        error: ApiError,
        wait: Option<Duration>,
    },
}

/// Classifies a request that failed before a whole response arrived.
fn transport_failure(error: &reqwest::Error, repeat: Repeat) -> Failure {
    let detail = describe(error);
    // A connect error (refused, DNS, TLS handshake, connect timeout) means the request was
    // never written, so even a money-moving call can be repeated safely.
    let nothing_sent = error.is_connect();
    match repeat {
        Repeat::Never(operation) if !nothing_sent => {
            Failure::Final(ApiError::OutcomeUnknown { operation, detail })
        }
        Repeat::Never(_) => Failure::Final(ApiError::Transport { detail }),
        Repeat::ConnectFailures if !nothing_sent => Failure::Final(ApiError::Transport { detail }),
        Repeat::Safe | Repeat::ConnectFailures => Failure::Retryable {
            error: ApiError::Transport { detail },
            wait: None,
        },
    }
}

/// Describes a reqwest error by its kind and causes. The URL is left out: the method and
/// path are in the tracing span already, and the key is never part of either.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else if error.is_body() || error.is_decode() {
        "could not read the response".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Decides whether an HTTP error response may be retried, and turns a 5xx on a money-moving
/// call into `OutcomeUnknown`.
fn classify_status_error(error: ApiError, parts: &ResponseParts<'_>, repeat: Repeat) -> Failure {
    let status = parts.status;
    if let Repeat::Never(operation) = repeat {
        // A 5xx may come after the provider acted, or from a proxy in front of it. Only a
        // challenge page proves that the request was stopped before the provider.
        let challenged = parts.is_non_json_page() && parts.looks_like_challenge();
        if status >= 500 && !challenged {
            return Failure::Final(ApiError::OutcomeUnknown {
                operation,
                detail: error.to_string(),
            });
        }
        return Failure::Final(error);
    }
    if repeat != Repeat::Safe {
        return Failure::Final(error);
    }
    match &error {
        ApiError::RateLimited { .. } if status == 429 && !parts.is_non_json_page() => {
            match parts.retry_after {
                Some(wait) if wait > MAX_RETRY_AFTER => Failure::Final(error),
                wait => Failure::Retryable { error, wait },
            }
        }
        ApiError::Provider { .. } if status >= 500 => match parts.retry_after {
            Some(wait) if wait > MAX_RETRY_AFTER => Failure::Final(error),
            wait => Failure::Retryable { error, wait },
        },
        _ => Failure::Final(error),
    }
}

/// Returns a random wait in `[0, min(cap, base * 2^retry)]` ("full jitter").
fn backoff(retry: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(retry.min(16)))
        .min(BACKOFF_CAP);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// Decodes a 2xx response. An unreadable response to a money-moving call is `OutcomeUnknown`,
/// because the provider accepted the request.
///
/// The body is parsed straight into `T`, never through `serde_json::Value`, so fields that
/// `T` does not name (such as the access passwords in a VPS record) are skipped unread.
fn decode<T: DeserializeOwned>(raw: &RawResponse, repeat: Repeat) -> Result<T, ApiError> {
    let view = raw.view();
    let failed = |detail: String| match repeat {
        Repeat::Never(operation) => ApiError::OutcomeUnknown { operation, detail },
        _ => ApiError::Decode { detail },
    };
    if view.is_non_json_page() {
        let error = error_from_response(&view);
        // Only Cloudflare's own mark proves that a success-status page came from the
        // challenge and not from the provider after it acted.
        return match repeat {
            Repeat::Never(_) if !view.cf_challenge => Err(failed(format!(
                "HTTP {} with a non-JSON body: {error}",
                view.status
            ))),
            _ => Err(error),
        };
    }
    match serde_json::from_slice::<T>(&raw.body) {
        Ok(value) => Ok(value),
        Err(error) => match from_envelope::<T>(&raw.body) {
            Some(Ok(value)) => Ok(value),
            Some(Err(envelope_error)) => Err(failed(envelope_error.to_string())),
            None => Err(failed(error.to_string())),
        },
    }
}

/// Decodes the `data` member of a body shaped `{"data": ..., "status": ..., "message": ...}`.
/// Returns `None` when the body has another shape.
fn from_envelope<T: DeserializeOwned>(body: &[u8]) -> Option<Result<T, serde_json::Error>> {
    #[derive(serde::Deserialize)]
    struct Envelope<T> {
        data: T,
    }
    let keys: HashMap<String, IgnoredAny> = serde_json::from_slice(body).ok()?;
    let envelope_keys = keys
        .keys()
        .all(|key| matches!(key.as_str(), "data" | "status" | "message" | "success"));
    if !keys.contains_key("data") || !envelope_keys {
        return None;
    }
    Some(serde_json::from_slice::<Envelope<T>>(body).map(|envelope| envelope.data))
}

fn to_body<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::InvalidInput {
        detail: format!("cannot encode the request body: {e}"),
    })
}

fn check_order(order: &OrderRequest) -> Result<(), ApiError> {
    if order.items.is_empty() {
        return Err(ApiError::InvalidInput {
            detail: "an order needs at least one item".into(),
        });
    }
    if let Some(index) = order
        .items
        .iter()
        .position(|item| item.plan.trim().is_empty())
    {
        return Err(ApiError::InvalidInput {
            detail: format!("order item {index} has no plan code"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ishosting::types::OrderItem;
    use axum::Router;
    use axum::extract::{Path, Query};
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::response::IntoResponse;
    use axum::routing::{get, patch, post};
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncReadExt;

    const KEY: &str = "test-key-0123456789";

    /// Serves `router` on an ephemeral loopback port for the rest of the test.
    async fn serve(router: Router) -> url::Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        url::Url::parse(&format!("http://{address}/")).unwrap()
    }

    /// Serves a loopback port that reads the start of each request and closes the
    /// connection without responding. Returns the URL and the count of connections.
    async fn serve_hang_up() -> (url::Url, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 8192];
                let _ = socket.read(&mut buffer).await;
                drop(socket);
            }
        });
        (
            url::Url::parse(&format!("http://{address}/")).unwrap(),
            connections,
        )
    }

    /// Returns a loopback URL on which nothing listens.
    async fn closed_port() -> url::Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        url::Url::parse(&format!("http://{address}/")).unwrap()
    }

    fn account(base_url: url::Url) -> Account {
        let client = ApiClient::new(ClientConfig {
            base_url,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        })
        .unwrap();
        client.account(ApiKey::new(KEY.into()))
    }

    fn counter() -> Arc<AtomicUsize> {
        Arc::new(AtomicUsize::new(0))
    }

    fn vps_json(id: &str) -> Value {
        json!({"id": id, "name": id, "tags": [], "status": {"code": "STATUS_CODE_RUNNING",
               "state": {"code": "STATE_CODE_ACTIVE"}}})
    }

    fn invoice_json() -> Value {
        json!({"id": 5001, "status": {"code": "STATUS_UNPAID"}, "total": "27$",
               "services": [{"service": {"id": "NL_1"}, "comment": "web"}]})
    }

    fn order() -> OrderRequest {
        OrderRequest {
            items: vec![OrderItem::new_vps("29_6m", "web")],
            promos: Vec::new(),
        }
    }

    #[tokio::test]
    async fn request_carries_key_and_headers() {
        let seen: Arc<Mutex<Option<AxumHeaders>>> = Arc::new(Mutex::new(None));
        let store = seen.clone();
        let router = Router::new().route(
            "/api/vps/{id}",
            get(
                move |Path(id): Path<String>, headers: AxumHeaders| async move {
                    *store.lock().unwrap() = Some(headers);
                    axum::Json(vps_json(&id))
                },
            ),
        );
        let base = serve(router).await.join("api").unwrap();
        let vps = account(base).vps("NL_7").await.unwrap();
        assert_eq!(vps.id, "NL_7");
        let headers = seen.lock().unwrap().take().unwrap();
        assert_eq!(headers["x-api-token"], KEY);
        assert_eq!(headers["accept-language"], "en");
        assert_eq!(headers["accept"], "application/json");
        assert_eq!(
            headers["user-agent"].to_str().unwrap(),
            format!("ishosting-operator/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[tokio::test]
    async fn ids_are_sent_as_one_encoded_segment() {
        let router = Router::new().route(
            "/vps/{id}",
            get(|Path(id): Path<String>| async move { axum::Json(vps_json(&id)) }),
        );
        let vps = account(serve(router).await).vps("a/b?c=d").await.unwrap();
        assert_eq!(vps.id, "a/b?c=d");
    }

    #[tokio::test]
    async fn get_retries_server_errors_then_gives_up() {
        let hits = counter();
        let count = hits.clone();
        let router = Router::new().route(
            "/vps/{id}",
            get(move || async move {
                count.fetch_add(1, Ordering::SeqCst);
                (
                    AxumStatus::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({"status": 500, "message": "boom"})),
                )
            }),
        );
        let account = account(serve(router).await);
        let error = account.vps("NL_1").await.unwrap_err();
        assert_eq!(
            error,
            ApiError::Provider {
                status: 500,
                message: "boom".into()
            }
        );
        assert_eq!(hits.load(Ordering::SeqCst), 4);
        assert_eq!(account.requests_sent(), 4);
    }

    #[tokio::test]
    async fn get_recovers_after_transient_errors() {
        let hits = counter();
        let count = hits.clone();
        let router = Router::new().route(
            "/vps/{id}/status",
            get(move || async move {
                if count.fetch_add(1, Ordering::SeqCst) < 2 {
                    AxumStatus::BAD_GATEWAY.into_response()
                } else {
                    axum::Json(json!({"name": "Stopped", "code": "STATUS_CODE_STOPPED",
                                      "state": {"name": "Active", "code": "STATE_CODE_ACTIVE"}}))
                    .into_response()
                }
            }),
        );
        let status = account(serve(router).await)
            .vps_status("NL_1")
            .await
            .unwrap();
        assert_eq!(status.code, crate::ishosting::ServiceStatusCode::Stopped);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn order_server_error_is_outcome_unknown() {
        let hits = counter();
        let count = hits.clone();
        let router = Router::new().route(
            "/billing/order",
            post(move || async move {
                count.fetch_add(1, Ordering::SeqCst);
                AxumStatus::INTERNAL_SERVER_ERROR
            }),
        );
        let account = account(serve(router).await);
        let error = account.order(&order()).await.unwrap_err();
        assert!(
            matches!(
                error,
                ApiError::OutcomeUnknown {
                    operation: "order",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(account.requests_sent(), 1);
    }

    #[tokio::test]
    async fn order_and_pay_hang_ups_are_outcome_unknown() {
        let (base, connections) = serve_hang_up().await;
        let account = account(base);
        let error = account.order(&order()).await.unwrap_err();
        assert!(
            matches!(
                error,
                ApiError::OutcomeUnknown {
                    operation: "order",
                    ..
                }
            ),
            "{error:?}"
        );
        let pay = PayRequest {
            balance: true,
            renew: true,
        };
        let error = account.pay("5001", &pay).await.unwrap_err();
        assert!(
            matches!(
                error,
                ApiError::OutcomeUnknown {
                    operation: "pay",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        assert!(!error.to_string().contains(KEY));
    }

    #[tokio::test]
    async fn get_hang_ups_are_retried_as_transport_errors() {
        let (base, connections) = serve_hang_up().await;
        let error = account(base).invoice("5001").await.unwrap_err();
        assert!(matches!(error, ApiError::Transport { .. }), "{error:?}");
        assert_eq!(connections.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn state_changes_are_not_retried_after_sending() {
        let (base, connections) = serve_hang_up().await;
        let account = account(base);
        let error = account.cancel_invoice("5001").await.unwrap_err();
        assert!(matches!(error, ApiError::Transport { .. }), "{error:?}");
        let error = account
            .vps_action("NL_1", VpsAction::Reboot)
            .await
            .unwrap_err();
        assert!(matches!(error, ApiError::Transport { .. }), "{error:?}");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connect_failures_are_transport_errors() {
        let account = account(closed_port().await);
        let error = account.order(&order()).await.unwrap_err();
        assert!(matches!(error, ApiError::Transport { .. }), "{error:?}");
        assert_eq!(account.requests_sent(), 1, "order is never retried");
        let error = account
            .vps_patch("NL_1", &VpsPatch::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ApiError::Transport { .. }), "{error:?}");
        assert_eq!(account.requests_sent(), 5, "a connect failure is retried");
    }

    #[tokio::test]
    async fn order_timeout_is_outcome_unknown() {
        let router = Router::new().route(
            "/billing/order",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                axum::Json(invoice_json())
            }),
        );
        let client = ApiClient::new(ClientConfig {
            base_url: serve(router).await,
            request_timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        })
        .unwrap();
        let error = client
            .account(ApiKey::new(KEY.into()))
            .order(&order())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ApiError::OutcomeUnknown { detail, .. } if detail.contains("timed out")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn order_responses_decode_or_map() {
        let router = Router::new()
            .route(
                "/billing/order",
                post(|axum::Json(body): axum::Json<Value>| async move {
                    if body["items"][0]["plan"] == "29_6m" {
                        axum::Json(invoice_json()).into_response()
                    } else {
                        (
                            AxumStatus::BAD_REQUEST,
                            axum::Json(json!({"status": 400, "message": "Insufficient funds",
                                              "data": {"balance": "not enough money"}})),
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                "/billing/invoice/{id}/pay",
                post(|| async {
                    axum::Json(json!({"transaction": {"status": "TRANSACTION_SUCCESS",
                                                      "description": "Paid from balance"}}))
                }),
            );
        let account = account(serve(router).await);
        let invoice = account.order(&order()).await.unwrap();
        assert_eq!(invoice.id, "5001");
        assert_eq!(invoice.services[0].id, "NL_1");

        let mut rejected = order();
        rejected.items[0].plan = "99_1m".into();
        let error = account.order(&rejected).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "validation failed: Insufficient funds (balance: not enough money)"
        );

        let transaction = account
            .pay(
                "5001",
                &PayRequest {
                    balance: true,
                    renew: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            transaction.status,
            crate::ishosting::TransactionStatus::Success
        );
    }

    #[tokio::test]
    async fn unreadable_order_response_is_outcome_unknown() {
        let router = Router::new()
            .route(
                "/billing/order",
                post(|| async { axum::Json(json!({"no_id": true})) }),
            )
            .route(
                "/billing/invoice/{id}/pay",
                post(|| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/html")],
                        "<html>done</html>",
                    )
                }),
            );
        let account = account(serve(router).await);
        let error = account.order(&order()).await.unwrap_err();
        assert_eq!(error.category(), "OutcomeUnknown", "{error:?}");
        let pay = PayRequest {
            balance: true,
            renew: false,
        };
        let error = account.pay("1", &pay).await.unwrap_err();
        assert_eq!(error.category(), "OutcomeUnknown", "{error:?}");
    }

    fn retry_after_router(first_wait: &'static str, hits: Arc<AtomicUsize>) -> Router {
        Router::new().route(
            "/services/list",
            get(move || async move {
                if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                    let mut response = (
                        AxumStatus::TOO_MANY_REQUESTS,
                        axum::Json(json!({"status": 429, "message": "Too many requests"})),
                    )
                        .into_response();
                    response
                        .headers_mut()
                        .insert("retry-after", first_wait.parse().unwrap());
                    response
                } else {
                    axum::Json(json!([{"type": "vps", "name": "a", "id": 1}])).into_response()
                }
            }),
        )
    }

    #[tokio::test]
    async fn short_retry_after_is_awaited() {
        let hits = counter();
        let account = account(serve(retry_after_router("1", hits.clone())).await);
        let started = tokio::time::Instant::now();
        let services = account.services().await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(services[0].id, "1");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn without_retries_sends_once() {
        let hits = counter();
        let count = hits.clone();
        let router = Router::new().route(
            "/services/list",
            get(move || async move {
                count.fetch_add(1, Ordering::SeqCst);
                AxumStatus::SERVICE_UNAVAILABLE
            }),
        );
        let account = account(serve(router).await);
        let error = account.without_retries().services().await.unwrap_err();
        assert_eq!(error.category(), "ProviderError", "{error:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // The handle it came from still retries: 1 + 3 more attempts.
        account.services().await.unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn long_retry_after_is_returned() {
        let hits = counter();
        let account = account(serve(retry_after_router("3600", hits.clone())).await);
        let error = account.services().await.unwrap_err();
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn challenge_pages_are_rate_limited_and_not_retried() {
        let hits = counter();
        let count = hits.clone();
        let router = Router::new().route(
            "/vps/list",
            get(move || async move {
                count.fetch_add(1, Ordering::SeqCst);
                (
                    AxumStatus::FORBIDDEN,
                    [(axum::http::header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                    "<!DOCTYPE html><title>Just a moment...</title>",
                )
            }),
        );
        let error = account(serve(router).await)
            .vps_list(10, 0)
            .await
            .unwrap_err();
        assert_eq!(error.category(), "RateLimited");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn state_change_errors_are_not_retried() {
        let hits = counter();
        let count = hits.clone();
        let router = Router::new().route(
            "/billing/invoice/{id}/cancel",
            patch(move || async move {
                count.fetch_add(1, Ordering::SeqCst);
                AxumStatus::SERVICE_UNAVAILABLE
            }),
        );
        let error = account(serve(router).await)
            .cancel_invoice("7")
            .await
            .unwrap_err();
        assert_eq!(error.category(), "ProviderError");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn patch_sends_tags_and_ignores_body() {
        let seen: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
        let store = seen.clone();
        let router = Router::new().route(
            "/vps/{id}",
            patch(move |axum::Json(body): axum::Json<Value>| async move {
                *store.lock().unwrap() = Some(body);
                axum::Json(json!({"id": "NL_1", "tags": []}))
            }),
        );
        let patch = VpsPatch {
            name: None,
            tags: Vec::new(),
            auto_renew: Some(false),
        };
        account(serve(router).await)
            .vps_patch("NL_1", &patch)
            .await
            .unwrap();
        assert_eq!(
            seen.lock().unwrap().take().unwrap(),
            json!({"tags": [], "plan": {"auto_renew": false}})
        );
    }

    #[tokio::test]
    async fn list_all_reads_past_capped_pages() {
        // The server caps pages at 30 and states no total.
        let router = Router::new().route(
            "/vps/list",
            get(|Query(query): Query<HashMap<String, u32>>| async move {
                let offset = query["offset"] as usize;
                let limit = query["limit"].min(30) as usize;
                let items: Vec<Value> = (offset..(offset + limit).min(75))
                    .map(|n| vps_json(&format!("NL_{n}")))
                    .collect();
                axum::Json(Value::Array(items))
            }),
        );
        let account = account(serve(router).await);
        let all = account.vps_list_all().await.unwrap();
        assert_eq!(all.len(), 75);
        assert_eq!(all[74].id, "NL_74");
        assert_eq!(account.requests_sent(), 4, "30 + 30 + 15 + an empty page");
    }

    #[tokio::test]
    async fn list_all_stops_on_repeats_or_total() {
        let router = Router::new()
            .route(
                "/vps/list",
                get(|| async { axum::Json(json!({"items": [vps_json("A"), vps_json("B")]})) }),
            )
            .route(
                "/other/vps/list",
                get(|| async {
                    axum::Json(json!({"items": [vps_json("A"), vps_json("B")], "total": 2}))
                }),
            );
        let base = serve(router).await;
        let ignoring = account(base.clone());
        assert_eq!(ignoring.vps_list_all().await.unwrap().len(), 2);
        assert_eq!(ignoring.requests_sent(), 2);
        let with_total = account(base.join("other").unwrap());
        assert_eq!(with_total.vps_list_all().await.unwrap().len(), 2);
        assert_eq!(with_total.requests_sent(), 1);
    }

    #[tokio::test]
    async fn empty_ids_and_orders_are_rejected_before_sending() {
        let account = account(closed_port().await);
        for error in [
            account.vps("").await.unwrap_err(),
            account.invoice(" ").await.unwrap_err(),
            account.order(&OrderRequest::default()).await.unwrap_err(),
            account
                .vps_action("..", VpsAction::Cancel)
                .await
                .unwrap_err(),
            account.plan(".").await.unwrap_err(),
        ] {
            assert_eq!(error.category(), "InvalidInput", "{error:?}");
        }
        assert_eq!(account.requests_sent(), 0);
    }

    #[tokio::test]
    async fn same_key_handles_share_state() {
        let client = ApiClient::new(ClientConfig {
            base_url: closed_port().await,
            get_retries: 0,
            ..ClientConfig::default()
        })
        .unwrap();
        let first = client.account(ApiKey::new(KEY.into()));
        let second = client.account(ApiKey::new(format!("  {KEY}\n")));
        let other = client.account(ApiKey::new("another-key".into()));
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.fingerprint().len(), 12);
        assert_ne!(first.fingerprint(), other.fingerprint());

        let _ = first.services().await;
        let _ = second.services().await;
        assert_eq!(first.requests_sent(), 2);
        assert_eq!(other.requests_sent(), 0);

        let guard = first.order_lock().await;
        let blocked = tokio::time::timeout(Duration::from_millis(100), second.order_lock()).await;
        assert!(blocked.is_err(), "the second handle must wait");
        let free = tokio::time::timeout(Duration::from_millis(100), other.order_lock()).await;
        assert!(free.is_ok(), "another key has its own lock");
        drop(guard);
        let _relocked = tokio::time::timeout(Duration::from_secs(1), second.order_lock())
            .await
            .unwrap();
    }

    #[test]
    fn api_key_is_redacted() {
        let key = ApiKey::new(KEY.into());
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(key.to_string(), "ApiKey(<redacted>)");
        let client = ApiClient::new(ClientConfig::default()).unwrap();
        let account = client.account(key);
        assert!(!format!("{account:?}").contains(KEY));
    }

    #[test]
    fn bad_configs_are_rejected() {
        let bad = [
            ClientConfig {
                token_header: "bad header".into(),
                ..ClientConfig::default()
            },
            ClientConfig {
                base_url: url::Url::parse("ftp://example.invalid/").unwrap(),
                ..ClientConfig::default()
            },
            ClientConfig {
                budget: Budget {
                    long_requests: 0,
                    ..Budget::default()
                },
                ..ClientConfig::default()
            },
        ];
        for config in bad {
            let error = ApiClient::new(config).unwrap_err();
            assert_eq!(error.category(), "InvalidInput");
        }
    }

    #[test]
    fn backoff_stays_within_its_ceiling() {
        for retry in 0..40 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(2u32.saturating_pow(retry.min(16)))
                .min(BACKOFF_CAP);
            assert!(backoff(retry) <= ceiling);
        }
        assert!(backoff(30) <= BACKOFF_CAP);
    }

    #[test]
    fn envelopes_unwrap_only_when_unambiguous() {
        let unwrapped = from_envelope::<Value>(br#"{"data": {"id": 1}, "status": 200}"#);
        assert_eq!(unwrapped.unwrap().unwrap(), json!({"id": 1}));
        assert!(from_envelope::<Value>(br#"{"data": [1], "total": 3}"#).is_none());
        assert!(from_envelope::<Value>(br#"{"id": 1, "data": {"x": 1}}"#).is_none());
        assert!(from_envelope::<Value>(b"[1]").is_none());
    }

    /// Serves reads that return 401 until `accept` is set, and counts every state-changing
    /// request.
    fn breaker_router(
        accept: Arc<std::sync::atomic::AtomicBool>,
        changes: Arc<AtomicUsize>,
    ) -> Router {
        let read = move || {
            let accept = accept.clone();
            async move {
                if accept.load(Ordering::SeqCst) {
                    axum::Json(json!({"items": []})).into_response()
                } else {
                    (
                        AxumStatus::UNAUTHORIZED,
                        axum::Json(json!({"status": 401, "message": "Unauthorized"})),
                    )
                        .into_response()
                }
            }
        };
        let change = move || {
            let changes = changes.clone();
            async move {
                changes.fetch_add(1, Ordering::SeqCst);
                axum::Json(invoice_json())
            }
        };
        Router::new()
            .route("/services/list", get(read))
            .route("/billing/order", post(change.clone()))
            .route("/billing/invoice/{id}/pay", post(change.clone()))
            .route("/billing/invoice/{id}/cancel", patch(change.clone()))
            .route("/vps/{id}", patch(change.clone()))
            .route("/vps/{id}/status/{action}", patch(change))
    }

    /// Calls every state-changing operation and returns their errors.
    async fn change_everything(account: &Account) -> Vec<ApiError> {
        let pay = PayRequest {
            balance: true,
            renew: false,
        };
        let tags = VpsPatch {
            name: None,
            tags: vec!["web".into()],
            auto_renew: None,
        };
        vec![
            account.order(&order()).await.unwrap_err(),
            account.pay("5001", &pay).await.unwrap_err(),
            account.cancel_invoice("5001").await.unwrap_err(),
            account.vps_patch("NL_1", &tags).await.unwrap_err(),
            account
                .vps_action("NL_1", VpsAction::Stop)
                .await
                .unwrap_err(),
        ]
    }

    #[tokio::test]
    async fn rejected_key_opens_breaker_for_every_handle() {
        let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let changes = counter();
        let base = serve(breaker_router(accept, changes.clone())).await;
        let client = ApiClient::new(ClientConfig {
            base_url: base,
            ..ClientConfig::default()
        })
        .unwrap();
        let first = client.account(ApiKey::new(KEY.into()));
        let error = first.services().await.unwrap_err();
        assert_eq!(error.category(), "CredentialsRejected");
        assert!(first.breaker_open());

        // Another handle for the same key (another resource) is held back too.
        let second = client.account(ApiKey::new(KEY.into()));
        let sent_before = second.requests_sent();
        for error in change_everything(&second).await {
            assert_eq!(error.category(), "CredentialsRejected", "{error}");
            assert!(error.to_string().contains("breaker open"), "{error}");
        }
        assert_eq!(changes.load(Ordering::SeqCst), 0, "no change may be sent");
        assert_eq!(second.requests_sent(), sent_before);

        // A rotated key is another key: its calls go out at once.
        let rotated = client.account(ApiKey::new("rotated-key".into()));
        assert!(!rotated.breaker_open());
        rotated.order(&order()).await.unwrap();
        assert_eq!(changes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn successful_read_closes_breaker() {
        let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let changes = counter();
        let account = account(serve(breaker_router(accept.clone(), changes.clone())).await);
        account.services().await.unwrap_err();
        assert!(account.breaker_open());
        // Reads still go out while the breaker is open.
        account.services().await.unwrap_err();
        assert_eq!(account.requests_sent(), 2);

        accept.store(true, Ordering::SeqCst);
        account.services().await.unwrap();
        assert!(!account.breaker_open());
        account.order(&order()).await.unwrap();
        assert_eq!(changes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn challenge_page_does_not_open_breaker() {
        let changes = counter();
        let count = changes.clone();
        let router = Router::new()
            .route(
                "/services/list",
                get(|| async {
                    (
                        AxumStatus::FORBIDDEN,
                        [(axum::http::header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                        "<!DOCTYPE html><title>Just a moment...</title>",
                    )
                }),
            )
            .route(
                "/billing/order",
                post(move || async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    axum::Json(invoice_json())
                }),
            );
        let account = account(serve(router).await);
        let error = account.services().await.unwrap_err();
        assert_eq!(error.category(), "RateLimited");
        assert!(!account.breaker_open());
        account.order(&order()).await.unwrap();
        assert_eq!(changes.load(Ordering::SeqCst), 1);
    }
}

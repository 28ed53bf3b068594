//! One reconcile pass of an `IsHostingVps`: the effects (provider calls, status writes,
//! events) around the pure decisions in [`super::decide`].
//!
//! Money safety rests on three rules kept here:
//! 1. The order identity and send time are stored in status (and the write confirmed)
//!    before the order is sent.
//! 2. The provider is searched for an order with this resource's identity or UID before
//!    an order is placed again. An order whose outcome is unknown is searched for only
//!    after a settle window, so an order still being processed is not placed twice.
//! 3. An invoice's live status is read before it is paid, and payment is never retried
//!    blindly; the provider itself rejects paying a paid invoice.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::OwnedMutexGuard;
use tracing::{debug, info, warn};

use super::conditions::{self, ORDERED, PAID, QUOTED, READY, STALLED, Status};
use super::decide::{self, Gate, Hold, PassFacts, Step};
use super::error::Error;
use super::order;
use super::{Context, FIELD_MANAGER};
use crate::crd::{FINALIZER, IsHostingVps, IsHostingVpsStatus, Phase};
use crate::ishosting::{
    Account, ApiError, ApiKey, ErrorClass, InvoiceFilter, InvoiceStatus, PayRequest,
    ServiceStatusCode, StateCode, TransactionStatus, VpsPatch,
};

/// Maximum steps of one pass before it requeues. A full order takes about seven.
const MAX_STEPS: usize = 12;

/// Environment variable of the test-only crash points: see [`test_pause`].
pub const TEST_PAUSE_VAR: &str = "ISHOSTING_TEST_PAUSE_AT";

/// Test-only crash point, used by the end-to-end crash tests and nothing else. When the
/// environment variable [`TEST_PAUSE_VAR`] names `point`, the pass writes `paused at
/// <point>` to stderr and then waits forever, so that a test can kill the process exactly
/// there. Unset (as in production), it does nothing. The points are `order-recorded`
/// (identity stored, order not sent), `order-answered` (order response received, invoice not
/// recorded), `pay-answered` (payment response received, not recorded) and `provisioning`
/// (a server not yet running is about to be polled).
async fn test_pause(point: &str) {
    static PAUSE_AT: OnceLock<Option<String>> = OnceLock::new();
    let configured = PAUSE_AT.get_or_init(|| std::env::var(TEST_PAUSE_VAR).ok());
    if configured.as_deref() == Some(point) {
        eprintln!("paused at {point}");
        std::future::pending::<()>().await;
    }
}

/// Error returned to kube-runtime's error policy.
pub type ReconcileError = kube::runtime::finalizer::Error<Error>;

/// Reconciles one resource: adds the finalizer, then runs the money flow or the cleanup.
pub async fn reconcile(
    obj: Arc<IsHostingVps>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = obj.namespace().ok_or(ReconcileError::UnnamedObject)?;
    let api: Api<IsHostingVps> = Api::namespaced(ctx.kube.clone(), &namespace);
    let started = std::time::Instant::now();

    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(obj, ctx.clone()).await,
            FinalizerEvent::Cleanup(obj) => cleanup(obj, ctx.clone()).await,
        }
    })
    .await;

    ctx.metrics.observe_reconcile(started.elapsed());
    result
}

/// Decides how soon to retry after a pass failed, backing off per resource.
pub fn error_policy(obj: Arc<IsHostingVps>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let (category, class, wait) = match error {
        ReconcileError::ApplyFailed(e) | ReconcileError::CleanupFailed(e) => {
            if let Error::CleanupWaiting(wait) = e {
                return Action::requeue(*wait);
            }
            (e.category(), e.class(), None)
        }
        // The watch cache can lag behind a finalizer this operator added a moment ago; the
        // JSON patch's test then fails with 422 and a quick retry finds the finalizer.
        ReconcileError::AddFinalizer(kube::Error::Api(status)) if status.code == 422 => {
            debug!(resource = %obj.name_any(), "finalizer already added; retrying with a fresh copy");
            return Action::requeue(Duration::from_secs(1));
        }
        _ => ("KubernetesError", ErrorClass::Transient, None),
    };
    ctx.metrics.count_error(category);
    let delay = wait.unwrap_or_else(|| ctx.next_backoff(&obj, class));
    warn!(
        resource = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        category,
        error = %error,
        retry_in_seconds = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn apply(obj: Arc<IsHostingVps>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut pass = Pass::start(&obj, ctx.clone()).await?;
    let result = pass.run().await;

    let action = match result {
        Ok(action) => {
            pass.settle_conditions(None);
            pass.announce_hold().await;
            ctx.reset_backoff(&obj);
            action
        }
        Err(error) => {
            pass.settle_conditions(Some(&error));
            pass.warn_if_newly_stalled(&error).await;
            ctx.metrics.count_error(error.category());
            let delay = match &error {
                Error::CleanupWaiting(wait) => *wait,
                _ => ctx.next_backoff(&obj, error.class()),
            };
            warn!(
                resource = %pass.resource,
                category = error_reason(&error, pass.failed_step.as_ref()),
                error = %error,
                retry_in_seconds = delay.as_secs(),
                "reconcile step failed"
            );
            Action::requeue(delay)
        }
    };

    pass.write_status().await?;
    Ok(action)
}

/// State of one pass over one resource.
struct Pass {
    ctx: Arc<Context>,
    api: Api<IsHostingVps>,
    obj: Arc<IsHostingVps>,
    resource: String,
    namespace: String,
    name: String,
    uid: String,
    generation: i64,
    status: IsHostingVpsStatus,
    written: IsHostingVpsStatus,
    secret_label: Option<String>,
    /// The step that was running when an error ended the pass.
    failed_step: Option<Step>,
    order_guard: Option<OwnedMutexGuard<()>>,
    /// Guard that held the order back in this pass, if any.
    hold: Option<Hold>,
    /// Amount and due date of an invoice the balance could not pay, read in this pass.
    unpaid: Option<UnpaidInvoice>,
}

/// An invoice that the balance does not cover, as its error message names it.
struct UnpaidInvoice {
    /// For example `27.50 USD`.
    total: Option<String>,
    /// RFC 3339.
    due: Option<String>,
}

impl Pass {
    /// Reads the resource's current status from the API server rather than the watch cache,
    /// because a cached copy may lag behind the last status write.
    async fn start(obj: &Arc<IsHostingVps>, ctx: Arc<Context>) -> Result<Pass, Error> {
        let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let name = obj.name_any();
        let uid = obj.uid().ok_or(Error::MissingMetadata("uid"))?;
        let api: Api<IsHostingVps> = Api::namespaced(ctx.kube.clone(), &namespace);
        let fresh = api.get_status(&name).await?;
        if fresh.uid().as_deref() != Some(uid.as_str()) {
            // The name now belongs to a new resource; its own event starts its pass.
            return Err(Error::MissingMetadata(
                "matching uid (the resource was replaced)",
            ));
        }
        let status = fresh.status.clone().unwrap_or_default();
        Ok(Pass {
            resource: format!("{namespace}/{name}"),
            generation: fresh.metadata.generation.unwrap_or(0),
            ctx,
            api,
            obj: Arc::new(fresh),
            namespace,
            name,
            uid,
            written: status.clone(),
            status,
            secret_label: None,
            failed_step: None,
            order_guard: None,
            hold: None,
            unpaid: None,
        })
    }

    async fn run(&mut self) -> Result<Action, Error> {
        let account = self.account().await?;
        if account.breaker_open() {
            // Only a successful read closes the credentials breaker, and some steps send
            // no read before their change. One small read therefore comes first: it
            // closes the breaker if the key works again, or ends the pass with the
            // provider's rejection.
            account.vps_list(1, 0).await?;
        }
        let mut facts = PassFacts::default();

        for _ in 0..MAX_STEPS {
            let step = decide::next_step(
                &self.status,
                self.generation,
                facts,
                Utc::now(),
                self.ctx.config.order_settle,
            );
            self.failed_step = Some(step.clone());
            let early = match step {
                Step::Quote => {
                    facts.quoted = true;
                    self.quote(&account).await?
                }
                Step::FindOrder => {
                    if !self.find_order(&account).await? {
                        facts.order_search_found_nothing = true;
                    }
                    None
                }
                Step::PlaceOrder => match decide::gate_order(
                    self.obj.spec.order_policy,
                    self.obj.spec.max_total.as_ref(),
                    &self.status,
                    facts.quoted,
                ) {
                    Gate::Requote => {
                        facts.quoted = true;
                        self.quote(&account).await?
                    }
                    Gate::Hold(hold) => Some(self.hold(hold)),
                    Gate::Proceed => self.place_order(&account).await?,
                },
                Step::AwaitOrderSettle(wait) => Some(Action::requeue(wait)),
                Step::Pay => self.pay(&account).await?,
                Step::FindService => self.find_service(&account).await?,
                Step::Configure => self.configure(&account).await?,
                Step::Poll => {
                    self.poll(&account).await?;
                    facts.polled = true;
                    None
                }
                Step::Done => break,
            };
            self.failed_step = None;
            if let Some(action) = early {
                return Ok(action);
            }
        }

        let phase = self.phase();
        Ok(Action::requeue(decide::requeue_after(
            phase,
            self.ctx.config.fast_requeue,
            self.ctx.config.settled_requeue,
        )))
    }

    /// Reads the API key from the resource's Secret or the operator's default Secret.
    async fn account(&mut self) -> Result<Account, Error> {
        let (namespace, name, key) = match &self.obj.spec.credentials_secret_ref {
            Some(reference) => (
                self.namespace.clone(),
                reference.name.clone(),
                reference.key_or_default().to_string(),
            ),
            None => match &self.ctx.config.default_secret {
                Some(default) => (
                    default.namespace.clone(),
                    default.name.clone(),
                    default.key.clone(),
                ),
                None => return Err(Error::NoCredentials),
            },
        };
        self.secret_label = Some(format!("{namespace}/{name}"));
        let key = read_api_key(&self.ctx, &namespace, &name, &key).await?;
        let account = self.ctx.provider.account(key);
        // A resource that keeps failing already backs off between passes. Retrying each
        // read inside the pass as well would multiply its cost to the key's budget.
        if self.ctx.repeated_failures(&self.obj) {
            return Ok(account.without_retries());
        }
        Ok(account)
    }

    async fn quote(&mut self, account: &Account) -> Result<Option<Action>, Error> {
        let request = self.order_request();
        let quote = account.validate(&request).await?;
        let summary = order::quote_status(&quote.total);
        // A held order is priced again on every pass; only a new price is announced.
        if self.status.quote.as_ref() != Some(&summary) {
            info!(resource = %self.resource, total = %summary.total, currency = %summary.currency, "order quoted");
            self.event(
                EventType::Normal,
                "Quoted",
                "Quote",
                format!(
                    "plan {} costs {} {}",
                    self.obj.spec.plan, summary.total, summary.currency
                ),
            )
            .await;
        }
        self.status.quote = Some(summary);
        self.write_status().await?;
        Ok(None)
    }

    /// Searches the provider for this resource's order, placed at or after the recorded
    /// send time. Returns true when one was found and recorded.
    async fn find_order(&mut self, account: &Account) -> Result<bool, Error> {
        self.lock_orders(account).await;
        let identity = decide::order_identity(&self.uid);
        // Five minutes before the recorded send time absorbs clock skew with the provider.
        let since = self
            .status
            .order_sent_at
            .as_deref()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&Utc))
            .unwrap_or_else(Utc::now)
            - chrono::Duration::minutes(5);

        const PAGE: u32 = 100;
        let mut offset = 0;
        loop {
            let filter = InvoiceFilter {
                from: Some(since.timestamp().to_string()),
                limit: Some(PAGE),
                offset: Some(offset),
                ..Default::default()
            };
            let page = account.invoices(&filter).await?;
            let count = page.len() as u32;
            for summary in page {
                // The invoice list may leave out identities and comments; the full invoice
                // carries them. The window starts at this resource's own send time, so only
                // invoices created since then are read one by one.
                let invoice = if order::invoice_matches(&summary, &identity, &self.uid)
                    || !order::lacks_order_marks(&summary)
                {
                    summary
                } else {
                    account.invoice(&summary.id).await?
                };
                if order::invoice_matches(&invoice, &identity, &self.uid) {
                    info!(resource = %self.resource, invoice = %invoice.id, "found an earlier order at the provider");
                    self.status.order_identity.get_or_insert(identity);
                    let service = invoice.services.first().map(|s| s.id.clone());
                    self.record_invoice(&invoice.id, &invoice.status, service);
                    self.write_status().await?;
                    return Ok(true);
                }
            }
            if count < PAGE {
                break;
            }
            offset += PAGE;
        }

        // A server tagged for this resource is owned even if its invoice was not found.
        let tag = decide::ownership_tag(&self.uid);
        let servers = account.vps_list_all().await?;
        if let Some(server) = servers.into_iter().find(|vps| vps.tags.contains(&tag)) {
            let invoices = account
                .invoices(&InvoiceFilter {
                    service_id: Some(server.id.clone()),
                    ..Default::default()
                })
                .await?;
            if let Some(invoice) = invoices.first() {
                info!(resource = %self.resource, service = %server.id, invoice = %invoice.id, "found this resource's server at the provider");
                self.status.order_identity.get_or_insert(identity);
                self.record_invoice(&invoice.id, &invoice.status, Some(server.id.clone()));
                self.write_status().await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records why the order is held and returns when to look again. An account limit
    /// frees itself as time passes, so it is checked every `--recheck-seconds`. The
    /// resource's own guards wait for a spec change, which starts a pass at once, so they
    /// are only priced again on the slow resync.
    fn hold(&mut self, hold: Hold) -> Action {
        let wait = match hold.account_limit() {
            Some(limit) => {
                self.ctx.metrics.count_limit_block(limit);
                self.ctx.config.needs_user_requeue
            }
            None => self.ctx.config.settled_requeue,
        };
        debug!(resource = %self.resource, reason = hold.reason(), "order held");
        self.hold = Some(hold);
        Action::requeue(wait)
    }

    async fn place_order(&mut self, account: &Account) -> Result<Option<Action>, Error> {
        self.lock_orders(account).await;
        // Counted under the order lock, so orders of this process cannot slip in between.
        let limits = self.ctx.spending.limits();
        if limits.any() {
            let currency = self
                .status
                .quote
                .as_ref()
                .map_or("USD", |quote| quote.currency.as_str());
            let usage = self.ctx.spending.usage(account, currency).await?;
            if let Some(hold) =
                decide::check_account_limits(&usage, limits, self.status.quote.as_ref())
            {
                return Ok(Some(self.hold(hold)));
            }
        }
        let identity = decide::order_identity(&self.uid);
        self.status.order_identity = Some(identity.clone());
        self.status.order_sent_at =
            Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        // The identity must be stored before the order leaves: a failed write stops here.
        self.write_status().await?;
        test_pause("order-recorded").await;

        let request = self.order_request();
        info!(resource = %self.resource, identity = %identity, plan = %self.obj.spec.plan, "placing order");
        let result = account.order(&request).await;
        self.ctx.metrics.count_order(match &result {
            Ok(_) => "placed",
            Err(e) if e.class() == ErrorClass::OutcomeUnknown => "unknown",
            Err(_) => "rejected",
        });
        match &result {
            Ok(invoice) => self.ctx.spending.record_order(account, Some(invoice), None),
            Err(e) if e.class() == ErrorClass::OutcomeUnknown => {
                self.ctx
                    .spending
                    .record_order(account, None, self.status.quote.as_ref())
            }
            Err(_) => {}
        }
        let invoice = result?;
        test_pause("order-answered").await;

        let service = invoice.services.first().map(|s| s.id.clone());
        self.record_invoice(&invoice.id, &invoice.status, service);
        self.write_status().await?;
        let total = invoice
            .total
            .as_ref()
            .map(|money| order::format_money(money.amount, &money.currency))
            .unwrap_or_default();
        info!(resource = %self.resource, invoice = %invoice.id, "order placed");
        self.event(
            EventType::Normal,
            "Ordered",
            "Order",
            format!("invoice {} {total} created", invoice.id),
        )
        .await;
        Ok(None)
    }

    async fn pay(&mut self, account: &Account) -> Result<Option<Action>, Error> {
        self.lock_orders(account).await;
        let invoice_id = self.status.invoice_id.clone().unwrap_or_default();

        // The live status decides, so a payment whose response was lost shows up here as Paid.
        let current = account.invoice_status(&invoice_id).await?;
        self.status.invoice_status = Some(invoice_status_label(&current));
        match current {
            InvoiceStatus::Paid => {
                self.paid(&invoice_id).await?;
                return Ok(None);
            }
            InvoiceStatus::Cancelled | InvoiceStatus::Refunded => {
                self.write_status().await?;
                return Ok(None);
            }
            InvoiceStatus::Unknown(raw) => {
                // A status such as a pending payment must not be paid again, so an unknown
                // status stops the payment until it changes.
                self.write_status().await?;
                return Err(Error::Api(ApiError::Decode {
                    detail: format!(
                        "invoice {invoice_id} has status {raw:?}, which the operator does not know; it is not paid until the status is Unpaid"
                    ),
                }));
            }
            InvoiceStatus::Unpaid => {}
        }

        info!(resource = %self.resource, invoice = %invoice_id, "paying invoice from balance");
        let request = PayRequest {
            balance: true,
            renew: self.obj.spec.auto_renew,
        };
        let result = account.pay(&invoice_id, &request).await;
        self.ctx.metrics.count_payment(match &result {
            Ok(t) if t.status == TransactionStatus::Success => "paid",
            Ok(_) => "pending",
            Err(e) if e.class() == ErrorClass::OutcomeUnknown => "unknown",
            Err(_) => "rejected",
        });
        let transaction = match result {
            Ok(transaction) => transaction,
            Err(error) => {
                if is_insufficient_funds(&error) {
                    self.unpaid = Some(unpaid_invoice(account, &invoice_id).await);
                }
                return Err(error.into());
            }
        };
        test_pause("pay-answered").await;
        match transaction.status {
            TransactionStatus::Success => {
                self.paid(&invoice_id).await?;
                Ok(None)
            }
            TransactionStatus::Failed => {
                Err(Error::PaymentFailed(transaction.message.unwrap_or_else(
                    || "the provider reported the transaction as failed".into(),
                )))
            }
            TransactionStatus::Pending | TransactionStatus::Unknown(_) => {
                conditions::set(
                    &mut self.status.conditions,
                    PAID,
                    Status::Unknown,
                    "PaymentPending",
                    &format!("payment of invoice {invoice_id} is pending at the provider"),
                    self.generation,
                    Utc::now(),
                );
                self.write_status().await?;
                Ok(Some(Action::requeue(self.ctx.config.fast_requeue)))
            }
        }
    }

    async fn paid(&mut self, invoice_id: &str) -> Result<(), Error> {
        self.status.invoice_status = Some("Paid".into());
        self.write_status().await?;
        self.order_guard = None;
        info!(resource = %self.resource, invoice = %invoice_id, "invoice paid");
        self.event(
            EventType::Normal,
            "Paid",
            "Pay",
            format!("invoice {invoice_id} paid from the account balance"),
        )
        .await;
        Ok(())
    }

    async fn find_service(&mut self, account: &Account) -> Result<Option<Action>, Error> {
        let invoice_id = self.status.invoice_id.clone().unwrap_or_default();
        let invoice = account.invoice(&invoice_id).await?;
        match invoice.services.first() {
            Some(service) => {
                self.status.service_id = Some(service.id.clone());
                self.write_status().await?;
                Ok(None)
            }
            None => Err(Error::Api(ApiError::Decode {
                detail: format!("invoice {invoice_id} lists no service"),
            })),
        }
    }

    async fn configure(&mut self, account: &Account) -> Result<Option<Action>, Error> {
        let service_id = self.status.service_id.clone().unwrap_or_default();
        let spec = &self.obj.spec;
        let mut tags: Vec<String> = spec.tags.iter().flatten().map(|t| t.0.clone()).collect();
        let ownership = decide::ownership_tag(&self.uid);
        if !tags.contains(&ownership) {
            tags.push(ownership);
        }
        let patch = VpsPatch {
            name: Some(spec.name.clone().unwrap_or_else(|| self.resource.clone())),
            tags,
            auto_renew: Some(spec.auto_renew),
        };
        account.vps_patch(&service_id, &patch).await?;
        self.status.configured_generation = Some(self.generation);
        self.write_status().await?;
        Ok(None)
    }

    async fn poll(&mut self, account: &Account) -> Result<(), Error> {
        if self.phase() != Phase::Running {
            test_pause("provisioning").await;
        }
        let service_id = self.status.service_id.clone().unwrap_or_default();
        let server = account.vps(&service_id).await?;
        let before = self.phase();
        self.status.service_status = Some(service_status_label(&server.status.code));
        self.status.service_state = Some(state_label(&server.status.state));
        self.status.public_ip = server
            .public_ip
            .clone()
            .or_else(|| server.ipv4.first().cloned());
        let after = self.phase();
        if before != after && after == Phase::Running {
            info!(resource = %self.resource, service = %service_id, ip = ?self.status.public_ip, "server running");
            self.event(
                EventType::Normal,
                "Running",
                "Provision",
                format!(
                    "server {service_id} is running at {}",
                    self.status
                        .public_ip
                        .as_deref()
                        .unwrap_or("an unknown address")
                ),
            )
            .await;
        }
        Ok(())
    }

    fn record_invoice(&mut self, id: &str, status: &InvoiceStatus, service: Option<String>) {
        self.status.invoice_id = Some(id.to_string());
        self.status.invoice_status = Some(invoice_status_label(status));
        if service.is_some() {
            self.status.service_id = service;
        }
    }

    fn order_request(&self) -> crate::ishosting::OrderRequest {
        let comment = decide::order_comment(&self.namespace, &self.name, &self.uid);
        order::order_request(&self.obj.spec, &decide::order_identity(&self.uid), &comment)
    }

    /// Takes the per-account order lock for the rest of the pass (or until payment).
    async fn lock_orders(&mut self, account: &Account) {
        if self.order_guard.is_none() {
            self.order_guard = Some(account.order_lock().await);
        }
    }

    fn phase(&self) -> Phase {
        let money = decide::phase_from_money(&self.status);
        if money != Phase::Paid {
            return money;
        }
        self.status
            .service_status
            .as_deref()
            .and_then(decide::phase_for_service_status)
            .unwrap_or(money)
    }

    /// Sets phase, observed generation and every condition from the recorded state, then
    /// lays the error of this pass, if any, over them.
    fn settle_conditions(&mut self, error: Option<&Error>) {
        let now = Utc::now();
        let generation = self.generation;
        let phase = self.phase();
        let progress = decide::progress_message(&self.status, phase);
        let status = &mut self.status;
        status.phase = Some(phase);
        status.observed_generation = Some(generation);
        let mut updates = conditions::Updater::new(&mut status.conditions, generation, now);

        if let Some(quote) = &status.quote {
            let message = format!(
                "{} {} for plan {}",
                quote.total, quote.currency, self.obj.spec.plan
            );
            updates.set(QUOTED, Status::True, "QuoteAccepted", &message);
        }
        match (&status.invoice_id, status.invoice_status.as_deref()) {
            (Some(invoice), invoice_status) => {
                let message = format!("invoice {invoice} created by the order");
                updates.set(ORDERED, Status::True, "OrderPlaced", &message);
                match invoice_status {
                    Some("Paid") => {
                        let message = format!("invoice {invoice} paid from the account balance");
                        updates.set(PAID, Status::True, "InvoicePaid", &message);
                    }
                    Some("Cancelled") | Some("Refunded") => {
                        let message = format!(
                            "invoice {invoice} was cancelled before it was paid; delete this resource and create a new one to order again"
                        );
                        updates.set(PAID, Status::False, "InvoiceCancelled", &message);
                    }
                    _ if error.is_none()
                        && updates
                            .find(PAID)
                            .is_none_or(|c| c.reason != "PaymentPending") =>
                    {
                        let message = format!("invoice {invoice} is unpaid");
                        updates.set(PAID, Status::False, "InvoiceUnpaid", &message);
                    }
                    _ => {}
                }
            }
            (None, _) if status.order_identity.is_some() && error.is_none() => {
                let message = "an order was sent; its outcome is being confirmed at the provider";
                updates.set(ORDERED, Status::Unknown, "OrderUnconfirmed", message);
            }
            _ => {}
        }

        let cancelled = matches!(
            status.invoice_status.as_deref(),
            Some("Cancelled") | Some("Refunded")
        );
        match error {
            None if phase == Phase::Running => {
                let message = format!(
                    "server {} is running at {}",
                    status.service_id.as_deref().unwrap_or_default(),
                    status.public_ip.as_deref().unwrap_or("an unknown address")
                );
                updates.set(READY, Status::True, "Running", &message);
                updates.set(STALLED, Status::False, "Progressing", "");
            }
            None => {
                let message = progress;
                updates.set(READY, Status::False, phase.as_str(), &message);
                if cancelled {
                    let message = format!(
                        "invoice {} was cancelled unpaid (it expired or was cancelled at the provider); nothing more is ordered for this resource. Delete it and create it again to order anew",
                        status.invoice_id.as_deref().unwrap_or("(unknown)")
                    );
                    updates.set(STALLED, Status::True, "InvoiceCancelled", &message);
                } else {
                    updates.set(STALLED, Status::False, "Progressing", "");
                }
            }
            Some(error) => {
                let context = ErrorContext {
                    step: self.failed_step.as_ref(),
                    secret: self.secret_label.as_deref(),
                    invoice: status.invoice_id.as_deref(),
                    recheck: self.ctx.config.needs_user_requeue,
                    unpaid: self.unpaid.as_ref(),
                };
                let reason = self::error_reason(error, self.failed_step.as_ref());
                let message = error_message(error, &context);
                updates.set(READY, Status::False, reason, &message);
                if error.class() == ErrorClass::NeedsUser {
                    updates.set(STALLED, Status::True, reason, &message);
                } else {
                    let retrying = format!("retrying after a temporary error: {message}");
                    updates.set(STALLED, Status::False, "Retrying", &retrying);
                }
                let step_condition = match self.failed_step {
                    Some(Step::Quote) => Some(QUOTED),
                    Some(Step::FindOrder) | Some(Step::PlaceOrder) => Some(ORDERED),
                    Some(Step::Pay) => Some(PAID),
                    _ => None,
                };
                if let Some(type_) = step_condition {
                    let value = if error.class() == ErrorClass::OutcomeUnknown {
                        Status::Unknown
                    } else {
                        Status::False
                    };
                    updates.set(type_, value, reason, &message);
                }
            }
        }

        if let (Some(hold), None) = (&self.hold, error) {
            let reason = hold.reason();
            let message = hold.message(self.ctx.config.needs_user_requeue);
            updates.set(ORDERED, Status::False, reason, &message);
            updates.set(READY, Status::False, reason, &message);
            let (stalled, stalled_message) = if hold.stalls() {
                (Status::True, message.as_str())
            } else {
                (Status::False, "")
            };
            updates.set(STALLED, stalled, reason, stalled_message);
        }
    }

    /// Publishes an event when a hold first appears or changes: a Warning when a person
    /// must act, a Normal one for `QuoteOnly`.
    async fn announce_hold(&self) {
        let Some(hold) = &self.hold else {
            return;
        };
        let now = conditions::find(&self.status.conditions, ORDERED);
        let before = conditions::find(&self.written.conditions, ORDERED);
        let changed = match (now, before) {
            (Some(now), Some(before)) => {
                now.reason != before.reason || now.message != before.message
            }
            (Some(_), None) => true,
            _ => false,
        };
        if let (true, Some(condition)) = (changed, now) {
            let type_ = if hold.stalls() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            self.event(type_, hold.reason(), "Order", condition.message.clone())
                .await;
        }
    }

    /// Writes the status by server-side apply when it differs from the last write.
    async fn write_status(&mut self) -> Result<(), Error> {
        if self.status == self.written {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": "ishosting.com/v1alpha1",
            "kind": "IsHostingVps",
            "status": self.status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api
            .patch_status(&self.name, &params, &Patch::Apply(&patch))
            .await?;
        self.written = self.status.clone();
        Ok(())
    }

    /// Publishes a Warning event when an error that needs a person first appears or
    /// changes, so repeated passes over the same problem do not flood the events API.
    async fn warn_if_newly_stalled(&self, error: &Error) {
        if error.class() != ErrorClass::NeedsUser {
            return;
        }
        let now = conditions::find(&self.status.conditions, STALLED);
        let before = conditions::find(&self.written.conditions, STALLED);
        let changed = match (now, before) {
            (Some(now), Some(before)) => {
                now.status != before.status
                    || now.reason != before.reason
                    || now.message != before.message
            }
            (Some(_), None) => true,
            _ => false,
        };
        if let (true, Some(condition)) = (changed, now) {
            let reason = condition.reason.clone();
            let note = condition.message.clone();
            self.event(EventType::Warning, &reason, "Reconcile", note)
                .await;
        }
    }

    async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        publish_event(&self.ctx, &self.obj, type_, reason, action, note).await;
    }
}

/// Releases the finalizer once no unpaid invoice of this resource is left to cancel. A paid
/// server is left running at the provider and reported in a Warning event.
async fn cleanup(obj: Arc<IsHostingVps>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut pass = Pass::start(&obj, ctx.clone()).await?;
    if pass.status.order_identity.is_none() && pass.status.invoice_id.is_none() {
        return Ok(Action::await_change());
    }

    let account = match pass.account().await {
        Ok(account) => account,
        Err(error) if error.class() == ErrorClass::NeedsUser => {
            // The provider cancels unpaid invoices after 3 days, so a missing key does not
            // block deletion. A paid server is reported in an event instead of forgotten.
            let note = format!(
                "deleted without checking the provider ({error}); an unpaid invoice {} expires by itself after 3 days, a paid server {} keeps running",
                pass.status.invoice_id.as_deref().unwrap_or("(unknown)"),
                pass.status.service_id.as_deref().unwrap_or("(unknown)")
            );
            warn!(resource = %pass.resource, %note, "cleanup without credentials");
            pass.event(EventType::Warning, "CleanupSkipped", "Delete", note)
                .await;
            return Ok(Action::await_change());
        }
        Err(error) => return Err(error),
    };

    if pass.status.invoice_id.is_none() {
        if let Some(wait) = decide::settle_remaining(
            pass.status.order_sent_at.as_deref(),
            Utc::now(),
            ctx.config.order_settle,
        ) {
            return Err(Error::CleanupWaiting(wait));
        }
        if !pass.find_order(&account).await? {
            return Ok(Action::await_change());
        }
    }

    let invoice_id = pass.status.invoice_id.clone().unwrap_or_default();
    let current = account.invoice_status(&invoice_id).await?;
    match current {
        InvoiceStatus::Unpaid => {
            match account.cancel_invoice(&invoice_id).await {
                Ok(()) | Err(ApiError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
            info!(resource = %pass.resource, invoice = %invoice_id, "unpaid invoice cancelled on delete");
            pass.event(
                EventType::Normal,
                "InvoiceCancelled",
                "Delete",
                format!("unpaid invoice {invoice_id} cancelled"),
            )
            .await;
        }
        InvoiceStatus::Paid => {
            let note = format!(
                "paid server {} (invoice {invoice_id}) keeps running at is*hosting; cancel it there if it is no longer needed",
                pass.status.service_id.as_deref().unwrap_or("(unknown)")
            );
            warn!(resource = %pass.resource, %note, "paid server retained on delete");
            pass.event(EventType::Warning, "ServerRetained", "Delete", note)
                .await;
        }
        InvoiceStatus::Cancelled | InvoiceStatus::Refunded | InvoiceStatus::Unknown(_) => {}
    }
    Ok(Action::await_change())
}

async fn read_api_key(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<ApiKey, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), namespace);
    let located = |_: ()| (namespace.to_string(), name.to_string(), key.to_string());
    let Some(secret) = secrets.get_opt(name).await? else {
        let (namespace, name, key) = located(());
        return Err(Error::SecretNotFound {
            namespace,
            name,
            key,
        });
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|bytes| bytes.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(key))
                .map(|text| text.clone().into_bytes())
        });
    let Some(value) = value else {
        let (namespace, name, key) = located(());
        return Err(Error::SecretKeyMissing {
            namespace,
            name,
            key,
        });
    };
    match String::from_utf8(value) {
        Ok(text) if !text.trim().is_empty() => Ok(ApiKey::new(text.trim().to_string())),
        _ => {
            let (namespace, name, key) = located(());
            Err(Error::SecretKeyInvalid {
                namespace,
                name,
                key,
            })
        }
    }
}

/// Publishes an event; a failure is logged, never fatal, because events are best effort.
async fn publish_event(
    ctx: &Context,
    obj: &IsHostingVps,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    // The events API caps a note at 1 kB.
    let mut note = note;
    if note.len() > 1024 {
        let mut end = 1024;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(%error, reason, "could not publish event");
    }
}

fn invoice_status_label(status: &InvoiceStatus) -> String {
    match status {
        InvoiceStatus::Unpaid => "Unpaid".into(),
        InvoiceStatus::Paid => "Paid".into(),
        InvoiceStatus::Cancelled => "Cancelled".into(),
        InvoiceStatus::Refunded => "Refunded".into(),
        InvoiceStatus::Unknown(raw) => raw.clone(),
    }
}

/// Returns true when the provider refused a payment because the balance is too low.
fn is_insufficient_funds(error: &ApiError) -> bool {
    match error {
        ApiError::Validation { message, fields } => {
            let text = format!(
                "{message} {}",
                fields.values().cloned().collect::<Vec<_>>().join(" ")
            );
            order::is_insufficient_funds(&text)
        }
        _ => false,
    }
}

/// Reads the amount and due date of an invoice for the insufficient-funds message. A
/// failed read leaves them out: the message then names the invoice alone.
async fn unpaid_invoice(account: &Account, invoice_id: &str) -> UnpaidInvoice {
    match account.invoice(invoice_id).await {
        Ok(invoice) => UnpaidInvoice {
            total: invoice
                .total
                .as_ref()
                .map(|money| order::format_money(money.amount, &money.currency)),
            due: invoice.due_to.as_deref().map(order::due_date_text),
        },
        Err(error) => {
            debug!(invoice = %invoice_id, %error, "could not read the unpaid invoice's amount");
            UnpaidInvoice {
                total: None,
                due: None,
            }
        }
    }
}

/// Returns the condition reason for an error, naming insufficient funds apart from other
/// rejected payments.
fn error_reason(error: &Error, step: Option<&Step>) -> &'static str {
    if let (Error::Api(api_error @ ApiError::Validation { .. }), Some(Step::Pay)) = (error, step) {
        if is_insufficient_funds(api_error) {
            return "InsufficientFunds";
        }
        return "PaymentRejected";
    }
    error.category()
}

/// Facts about the pass that an error message names.
struct ErrorContext<'a> {
    step: Option<&'a Step>,
    secret: Option<&'a str>,
    invoice: Option<&'a str>,
    recheck: Duration,
    unpaid: Option<&'a UnpaidInvoice>,
}

/// Returns the condition message for an error, with the next thing a person can do.
fn error_message(error: &Error, context: &ErrorContext) -> String {
    let invoice = context.invoice.unwrap_or("(unknown)");
    let recheck = context.recheck.as_secs();
    match (error, context.step) {
        (Error::Api(ApiError::Unauthorized { status, message }), _) => format!(
            "is*hosting rejected the API key from Secret {} (HTTP {status}: {message}). API keys expire after 70 days: create a new key in the is*hosting client area and update the Secret",
            context.secret.unwrap_or("(unknown)")
        ),
        (Error::Api(ApiError::Validation { .. }), Some(Step::Pay)) => {
            if error_reason(error, context.step) == "InsufficientFunds" {
                let amount = context
                    .unpaid
                    .and_then(|unpaid| unpaid.total.as_deref())
                    .unwrap_or("amount unknown");
                let due = context
                    .unpaid
                    .and_then(|unpaid| unpaid.due.as_deref())
                    .unwrap_or("unknown");
                format!(
                    "the account balance does not cover invoice {invoice} of {amount}, due {due} ({error}). Top up the balance in the is*hosting client area before then; the payment is retried every {recheck} s. An invoice left unpaid past its due date is cancelled by the provider and nothing is ordered again: delete and recreate this resource to order anew"
                )
            } else {
                format!(
                    "is*hosting rejected the payment of invoice {invoice} ({error}); it is retried every {recheck} s"
                )
            }
        }
        (Error::Api(ApiError::Validation { .. }), _) => format!(
            "is*hosting rejected the order ({error}). plan, location, additions and sshKeys cannot be changed, so correct the manifest, delete this IsHostingVps and create it again"
        ),
        _ => error.to_string(),
    }
}

fn service_status_label(code: &ServiceStatusCode) -> String {
    let label = match code {
        ServiceStatusCode::Pending => "Pending",
        ServiceStatusCode::Running => "Running",
        ServiceStatusCode::Paused => "Paused",
        ServiceStatusCode::Suspended => "Suspended",
        ServiceStatusCode::Stopped => "Stopped",
        ServiceStatusCode::Canceled => "Canceled",
        ServiceStatusCode::Terminated => "Terminated",
        ServiceStatusCode::Starting => "Starting",
        ServiceStatusCode::Stopping => "Stopping",
        ServiceStatusCode::Rebooting => "Rebooting",
        ServiceStatusCode::Activating => "Activating",
        ServiceStatusCode::Rejected => "Rejected",
        ServiceStatusCode::Installing => "Installing",
        ServiceStatusCode::Unknown(raw) => return raw.clone(),
    };
    label.to_string()
}

fn state_label(state: &StateCode) -> String {
    let label = match state {
        StateCode::Pending => "Pending",
        StateCode::Active => "Active",
        StateCode::Canceled => "Canceled",
        StateCode::Suspended => "Suspended",
        StateCode::Terminated => "Terminated",
        StateCode::Rejected => "Rejected",
        StateCode::Unknown(raw) => return raw.clone(),
    };
    label.to_string()
}

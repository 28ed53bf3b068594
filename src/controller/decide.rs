//! Pure decisions: given the spec, the recorded status and what this pass has already
//! learnt, which provider call comes next. No client is needed here, so every branch of
//! the money flow is unit-tested without a network.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::conditions::{self, ORDERED};
use crate::crd::{IsHostingVpsStatus, MaxTotal, OrderPolicy, Phase, Quote};

/// The next step for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Price the order with the provider's validation call.
    Quote,
    /// Search the provider for an order carrying this resource's identity before an
    /// order is placed again, because an earlier order's response may have been lost.
    FindOrder,
    /// Record the order identity and send time in status, then place the order.
    PlaceOrder,
    /// An order was sent recently and its outcome is unknown: wait before searching, so
    /// that an order the provider is still processing is not missed and placed again.
    AwaitOrderSettle(Duration),
    /// Read the invoice's status and pay it from the balance if it is still unpaid.
    Pay,
    /// Read the invoice to learn the service id it created.
    FindService,
    /// Apply name, tags and auto-renew to the server.
    Configure,
    /// Read the server's status.
    Poll,
    /// Nothing more to do: the unpaid invoice was cancelled before payment.
    Done,
}

/// Facts the current reconcile pass learnt beyond the stored status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassFacts {
    /// The provider was searched in this pass and has no order for this resource.
    pub order_search_found_nothing: bool,
    /// The server's status was read in this pass.
    pub polled: bool,
    /// The order was priced in this pass, so the quote in status is fresh.
    pub quoted: bool,
}

/// Returns the next step for a resource whose spec is at `generation`.
pub fn next_step(
    status: &IsHostingVpsStatus,
    generation: i64,
    facts: PassFacts,
    now: DateTime<Utc>,
    settle: Duration,
) -> Step {
    if status.invoice_id.is_none() {
        return next_order_step(status, facts, now, settle);
    }

    match status.invoice_status.as_deref() {
        Some("Paid") => {}
        Some("Cancelled") | Some("Refunded") => return Step::Done,
        _ => return Step::Pay,
    }

    if status.service_id.is_none() {
        return Step::FindService;
    }
    if status.configured_generation != Some(generation) {
        return Step::Configure;
    }
    if facts.polled {
        return Step::Done;
    }
    Step::Poll
}

fn next_order_step(
    status: &IsHostingVpsStatus,
    facts: PassFacts,
    now: DateTime<Utc>,
    settle: Duration,
) -> Step {
    if status.quote.is_none() && status.order_identity.is_none() {
        return Step::Quote;
    }
    // Without a recorded send time no order of this resource can exist: the time is
    // stored before every order leaves.
    if facts.order_search_found_nothing || status.order_sent_at.is_none() {
        return Step::PlaceOrder;
    }
    if let Some(wait) = settle_remaining(status.order_sent_at.as_deref(), now, settle) {
        return Step::AwaitOrderSettle(wait);
    }
    Step::FindOrder
}

/// Returns how long to wait before an order sent at `sent_at` may be searched for, or
/// `None` when the settle window has passed. An unreadable time counts as settled.
pub fn settle_remaining(
    sent_at: Option<&str>,
    now: DateTime<Utc>,
    settle: Duration,
) -> Option<Duration> {
    let sent_at = DateTime::parse_from_rfc3339(sent_at?).ok()?;
    let elapsed = now
        .signed_duration_since(sent_at)
        .to_std()
        .unwrap_or_default();
    settle.checked_sub(elapsed).filter(|rest| !rest.is_zero())
}

/// Reason an order is held back before it is sent. Each variant's
/// [`reason`](Hold::reason) is the reason of the `Ordered=False` condition meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// `spec.orderPolicy` is `QuoteOnly`.
    QuoteOnly { quote: String },
    /// The quote is above `spec.maxTotal`.
    QuoteAboveMaxTotal { quote: String, max: String },
    /// The quote is in another currency than `spec.maxTotal`, so they cannot be compared.
    MaxTotalCurrencyMismatch { quote: String, max: String },
    /// `spec.maxTotal.amount` is not a decimal number (only an object stored before the
    /// CRD validated it can carry one).
    MaxTotalInvalid { amount: String },
    /// The account already placed `orders` orders in the last hour, the operator's limit.
    AccountOrderLimit { orders: u32, limit: u32 },
    /// The account's orders of the last 24 hours plus this quote exceed the daily limit.
    AccountSpendLimit {
        spent: String,
        quote: String,
        limit: String,
    },
}

/// Condition reasons of every [`Hold`], used to tell that an earlier pass was held.
pub const HOLD_REASONS: [&str; 6] = [
    "QuoteOnly",
    "QuoteAboveMaxTotal",
    "MaxTotalCurrencyMismatch",
    "MaxTotalInvalid",
    "AccountOrderLimit",
    "AccountSpendLimit",
];

impl Hold {
    /// Returns the condition and event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Hold::QuoteOnly { .. } => HOLD_REASONS[0],
            Hold::QuoteAboveMaxTotal { .. } => HOLD_REASONS[1],
            Hold::MaxTotalCurrencyMismatch { .. } => HOLD_REASONS[2],
            Hold::MaxTotalInvalid { .. } => HOLD_REASONS[3],
            Hold::AccountOrderLimit { .. } => HOLD_REASONS[4],
            Hold::AccountSpendLimit { .. } => HOLD_REASONS[5],
        }
    }

    /// Returns true when a person must act. `QuoteOnly` is what the user asked for, so it
    /// does not mark the resource as stalled.
    pub fn stalls(&self) -> bool {
        !matches!(self, Hold::QuoteOnly { .. })
    }

    /// Returns the `limit` label of the blocks metric for an account-wide limit.
    pub fn account_limit(&self) -> Option<&'static str> {
        match self {
            Hold::AccountOrderLimit { .. } => Some("orders_per_hour"),
            Hold::AccountSpendLimit { .. } => Some("spend_per_day"),
            _ => None,
        }
    }

    /// Returns the condition message: which guard stops the order and what to do next.
    /// `recheck` is the interval at which an account limit is checked again.
    pub fn message(&self, recheck: Duration) -> String {
        let recheck = recheck.as_secs();
        match self {
            Hold::QuoteOnly { quote } => format!(
                "quoted at {quote}; nothing is ordered while spec.orderPolicy is QuoteOnly: set it to Order to place the order"
            ),
            Hold::QuoteAboveMaxTotal { quote, max } => format!(
                "the quote {quote} is above spec.maxTotal {max}; nothing is ordered. Raise spec.maxTotal to at least {quote} to place the order"
            ),
            Hold::MaxTotalCurrencyMismatch { quote, max } => format!(
                "the quote {quote} is in another currency than spec.maxTotal {max}; nothing is ordered. Set spec.maxTotal in the quote's currency"
            ),
            Hold::MaxTotalInvalid { amount } => format!(
                "spec.maxTotal.amount {amount:?} is not a decimal number; nothing is ordered. Set it to an amount such as \"50.00\""
            ),
            Hold::AccountOrderLimit { orders, limit } => format!(
                "the account placed {orders} order(s) in the last hour and the operator allows {limit} (--max-orders-per-hour); nothing more is ordered for this account until the oldest of them is an hour old. Checked again every {recheck} s; orders already placed are still paid"
            ),
            Hold::AccountSpendLimit {
                spent,
                quote,
                limit,
            } => format!(
                "the account ordered {spent} in the last 24 hours; this order of {quote} would pass the operator's limit (--max-spend-per-day {limit}), so nothing more is ordered for this account until older orders leave the 24-hour window or the limit is raised. Checked again every {recheck} s; orders already placed are still paid"
            ),
        }
    }
}

/// Decision about an order that is about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Send it.
    Proceed,
    /// Price it again first: an earlier pass held it, so the quote in status may be old.
    Requote,
    /// Do not send it.
    Hold(Hold),
}

/// Applies the resource's own guards, `spec.orderPolicy` and `spec.maxTotal`, to an order
/// about to be sent. `quoted_this_pass` is true when the quote in status is fresh.
pub fn gate_order(
    policy: OrderPolicy,
    max_total: Option<&MaxTotal>,
    status: &IsHostingVpsStatus,
    quoted_this_pass: bool,
) -> Gate {
    let guarded = policy == OrderPolicy::QuoteOnly || max_total.is_some();
    if !quoted_this_pass && ((guarded && status.quote.is_none()) || was_held(status)) {
        return Gate::Requote;
    }
    let quote_text = status
        .quote
        .as_ref()
        .map(|quote| format!("{} {}", quote.total, quote.currency))
        .unwrap_or_else(|| "(unknown)".to_string());
    if policy == OrderPolicy::QuoteOnly {
        return Gate::Hold(Hold::QuoteOnly { quote: quote_text });
    }
    if let (Some(max), Some(quote)) = (max_total, status.quote.as_ref())
        && let Err(hold) = check_max_total(quote, max)
    {
        return Gate::Hold(hold);
    }
    Gate::Proceed
}

/// Returns true when the last pass left the order held by a guard.
fn was_held(status: &IsHostingVpsStatus) -> bool {
    conditions::find(&status.conditions, ORDERED)
        .is_some_and(|c| c.status == "False" && HOLD_REASONS.contains(&c.reason.as_str()))
}

/// Compares a quote with `spec.maxTotal`: equal is allowed, above is held, and another
/// currency is held too, because amounts in different currencies cannot be compared.
pub fn check_max_total(quote: &Quote, max: &MaxTotal) -> Result<(), Hold> {
    let quote_text = format!("{} {}", quote.total, quote.currency);
    let max_text = format!("{} {}", max.amount, max.currency);
    let Ok(limit) = max.amount.trim().parse::<Decimal>() else {
        return Err(Hold::MaxTotalInvalid {
            amount: max.amount.clone(),
        });
    };
    if !quote.currency.eq_ignore_ascii_case(max.currency.trim()) {
        return Err(Hold::MaxTotalCurrencyMismatch {
            quote: quote_text,
            max: max_text,
        });
    }
    // The quote is written by the operator with two decimals; one that cannot be read
    // is not known to be within the limit.
    match quote.total.trim().parse::<Decimal>() {
        Ok(total) if total <= limit => Ok(()),
        _ => Err(Hold::QuoteAboveMaxTotal {
            quote: quote_text,
            max: max_text,
        }),
    }
}

/// Orders and spend of one account in the operator's windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountUsage {
    /// Orders placed in the last hour.
    pub orders_last_hour: u32,
    /// Total of the orders of the last 24 hours that are not cancelled, in the quote's
    /// currency.
    pub spent_last_day: Decimal,
}

/// Operator-wide limits per account; zero means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountLimits {
    pub max_orders_per_hour: u32,
    /// In the currency of the quote.
    pub max_spend_per_day: Decimal,
}

impl AccountLimits {
    /// Returns true when at least one limit is set.
    pub fn any(&self) -> bool {
        self.max_orders_per_hour > 0 || self.max_spend_per_day > Decimal::ZERO
    }
}

/// Returns the hold for one more order of `quote` on an account with `usage`, if a limit
/// would be passed. Reaching a limit exactly is allowed.
pub fn check_account_limits(
    usage: &AccountUsage,
    limits: &AccountLimits,
    quote: Option<&Quote>,
) -> Option<Hold> {
    if limits.max_orders_per_hour > 0 && usage.orders_last_hour >= limits.max_orders_per_hour {
        return Some(Hold::AccountOrderLimit {
            orders: usage.orders_last_hour,
            limit: limits.max_orders_per_hour,
        });
    }
    if limits.max_spend_per_day > Decimal::ZERO {
        let currency = quote.map(|q| q.currency.as_str()).unwrap_or("USD");
        let amount = quote
            .and_then(|q| q.total.trim().parse::<Decimal>().ok())
            .unwrap_or(Decimal::ZERO);
        if usage.spent_last_day + amount > limits.max_spend_per_day {
            let money = |value: Decimal| format!("{:.2} {currency}", value.round_dp(2));
            return Some(Hold::AccountSpendLimit {
                spent: money(usage.spent_last_day),
                quote: money(amount),
                limit: money(limits.max_spend_per_day),
            });
        }
    }
    None
}

/// Maps the provider's service status code (any spelling) to a phase. Returns `None`
/// for a code the operator does not know, so the caller keeps the previous phase.
pub fn phase_for_service_status(code: &str) -> Option<Phase> {
    let normalized = code
        .trim()
        .to_ascii_uppercase()
        .trim_start_matches("STATUS_CODE_")
        .to_string();
    let phase = match normalized.as_str() {
        "PENDING" => Phase::Paid,
        "INSTALLING" | "ACTIVATING" | "STARTING" => Phase::Provisioning,
        "RUNNING" | "REBOOTING" | "STOPPING" => Phase::Running,
        "STOPPED" | "PAUSED" => Phase::Stopped,
        "SUSPENDED" => Phase::Suspended,
        "CANCELED" | "CANCELLED" | "TERMINATED" => Phase::Cancelled,
        "REJECTED" => Phase::Failed,
        _ => return None,
    };
    Some(phase)
}

/// Returns the phase that the recorded money steps alone imply, used until the server's
/// status has been read.
pub fn phase_from_money(status: &IsHostingVpsStatus) -> Phase {
    match (status.invoice_id.as_ref(), status.invoice_status.as_deref()) {
        (Some(_), Some("Paid")) => Phase::Paid,
        (Some(_), Some("Cancelled")) | (Some(_), Some("Refunded")) => Phase::Cancelled,
        (Some(_), _) => Phase::Ordered,
        (None, _) if status.quote.is_some() => Phase::Quoted,
        (None, _) => Phase::Pending,
    }
}

/// Returns the `Ready` condition's message for a resource that is not running.
pub fn progress_message(status: &IsHostingVpsStatus, phase: Phase) -> String {
    let invoice = status.invoice_id.as_deref().unwrap_or("(unknown)");
    let service = status.service_id.as_deref().unwrap_or("(unknown)");
    let provider_status = status.service_status.as_deref().unwrap_or("unknown");
    match phase {
        Phase::Pending => "waiting for the provider's quote".to_string(),
        Phase::Quoted => "quoted; the order is being placed".to_string(),
        Phase::Ordered => format!("waiting for payment of invoice {invoice}"),
        Phase::Paid => format!(
            "invoice {invoice} is paid; waiting for the provider to install server {service}"
        ),
        Phase::Provisioning => {
            format!("the provider is preparing server {service} (status {provider_status})")
        }
        Phase::Running => format!("server {service} is running"),
        Phase::Stopped => format!("server {service} is stopped (status {provider_status})"),
        Phase::Suspended => format!("the provider suspended server {service}"),
        Phase::Cancelled if status.service_status.is_some() => {
            format!("server {service} was cancelled at the provider (status {provider_status})")
        }
        Phase::Cancelled => format!("invoice {invoice} was cancelled before it was paid"),
        Phase::Failed => format!(
            "the provider rejected or terminated server {service} (status {provider_status})"
        ),
    }
}

/// Returns how soon to look at a resource again once a pass ends without error.
pub fn requeue_after(phase: Phase, fast: Duration, settled: Duration) -> Duration {
    match phase {
        Phase::Pending | Phase::Quoted | Phase::Ordered | Phase::Paid | Phase::Provisioning => fast,
        Phase::Running | Phase::Stopped | Phase::Suspended | Phase::Cancelled | Phase::Failed => {
            settled
        }
    }
}

/// Returns the identity sent with this resource's order. It is derived from the UID, so
/// the same resource always searches for and sends the same identity, even if its status
/// was lost.
pub fn order_identity(uid: &str) -> String {
    format!("isvps-{uid}")
}

/// Returns the tag that marks a server as owned by the resource with this UID.
pub fn ownership_tag(uid: &str) -> String {
    format!("k8s-uid:{uid}")
}

/// Returns the order comment, which names the resource and carries its UID.
pub fn order_comment(namespace: &str, name: &str, uid: &str) -> String {
    format!("ishosting-operator {namespace}/{name} uid:{uid}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Quote;

    const SETTLE: Duration = Duration::from_secs(60);

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn quoted() -> IsHostingVpsStatus {
        IsHostingVpsStatus {
            quote: Some(Quote {
                total: "27.50".into(),
                currency: "USD".into(),
            }),
            ..Default::default()
        }
    }

    fn ordered() -> IsHostingVpsStatus {
        IsHostingVpsStatus {
            order_identity: Some("isvps-1".into()),
            order_sent_at: Some("2026-12-04T11:00:00Z".into()),
            invoice_id: Some("1001".into()),
            invoice_status: Some("Unpaid".into()),
            service_id: Some("NL_1_1".into()),
            ..quoted()
        }
    }

    fn step(status: &IsHostingVpsStatus, facts: PassFacts) -> Step {
        next_step(status, 1, facts, now(), SETTLE)
    }

    #[test]
    fn new_resource_is_quoted_first() {
        assert_eq!(
            step(&IsHostingVpsStatus::default(), PassFacts::default()),
            Step::Quote
        );
    }

    #[test]
    fn quoted_resource_without_send_orders() {
        assert_eq!(step(&quoted(), PassFacts::default()), Step::PlaceOrder);
    }

    #[test]
    fn sent_order_is_searched_before_ordering_again() {
        let status = IsHostingVpsStatus {
            order_identity: Some("isvps-1".into()),
            order_sent_at: Some("2026-12-04T11:00:00Z".into()),
            ..quoted()
        };
        assert_eq!(step(&status, PassFacts::default()), Step::FindOrder);
    }

    #[test]
    fn order_placed_only_after_empty_search() {
        let facts = PassFacts {
            order_search_found_nothing: true,
            ..Default::default()
        };
        let status = IsHostingVpsStatus {
            order_identity: Some("isvps-1".into()),
            order_sent_at: Some("2026-12-04T11:00:00Z".into()),
            ..quoted()
        };
        assert_eq!(step(&status, facts), Step::PlaceOrder);
    }

    #[test]
    fn recent_unanswered_order_waits_to_settle() {
        let status = IsHostingVpsStatus {
            order_identity: Some("isvps-1".into()),
            order_sent_at: Some("2026-12-04T11:59:30Z".into()),
            ..quoted()
        };
        assert_eq!(
            step(&status, PassFacts::default()),
            Step::AwaitOrderSettle(Duration::from_secs(30))
        );
    }

    #[test]
    fn old_unanswered_order_is_searched() {
        let status = IsHostingVpsStatus {
            order_identity: Some("isvps-1".into()),
            order_sent_at: Some("2026-12-04T11:58:00Z".into()),
            ..quoted()
        };
        assert_eq!(step(&status, PassFacts::default()), Step::FindOrder);
    }

    #[test]
    fn identity_without_quote_never_requotes() {
        let status = IsHostingVpsStatus {
            order_identity: Some("isvps-1".into()),
            order_sent_at: Some("2026-12-04T10:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(step(&status, PassFacts::default()), Step::FindOrder);
    }

    #[test]
    fn unreadable_send_time_counts_as_settled() {
        assert_eq!(settle_remaining(Some("yesterday"), now(), SETTLE), None);
    }

    #[test]
    fn unpaid_invoice_is_paid() {
        assert_eq!(step(&ordered(), PassFacts::default()), Step::Pay);
    }

    #[test]
    fn unknown_invoice_status_is_paid_after_check() {
        let status = IsHostingVpsStatus {
            invoice_status: None,
            ..ordered()
        };
        assert_eq!(step(&status, PassFacts::default()), Step::Pay);
    }

    #[test]
    fn cancelled_invoice_ends_the_flow() {
        let status = IsHostingVpsStatus {
            invoice_status: Some("Cancelled".into()),
            ..ordered()
        };
        assert_eq!(step(&status, PassFacts::default()), Step::Done);
    }

    #[test]
    fn paid_invoice_without_service_finds_it() {
        let status = IsHostingVpsStatus {
            invoice_status: Some("Paid".into()),
            service_id: None,
            ..ordered()
        };
        assert_eq!(step(&status, PassFacts::default()), Step::FindService);
    }

    #[test]
    fn paid_server_is_configured_once_per_generation() {
        let paid = IsHostingVpsStatus {
            invoice_status: Some("Paid".into()),
            ..ordered()
        };
        assert_eq!(step(&paid, PassFacts::default()), Step::Configure);

        let configured = IsHostingVpsStatus {
            configured_generation: Some(1),
            ..paid.clone()
        };
        assert_eq!(step(&configured, PassFacts::default()), Step::Poll);

        let newer_spec = next_step(&configured, 2, PassFacts::default(), now(), SETTLE);
        assert_eq!(newer_spec, Step::Configure);
    }

    #[test]
    fn poll_happens_once_per_pass() {
        let status = IsHostingVpsStatus {
            invoice_status: Some("Paid".into()),
            configured_generation: Some(1),
            ..ordered()
        };
        let facts = PassFacts {
            polled: true,
            ..Default::default()
        };
        assert_eq!(step(&status, facts), Step::Done);
    }

    #[test]
    fn service_codes_map_to_phases() {
        let cases = [
            ("STATUS_CODE_RUNNING", Some(Phase::Running)),
            ("running", Some(Phase::Running)),
            ("Installing", Some(Phase::Provisioning)),
            ("STATUS_CODE_PENDING", Some(Phase::Paid)),
            ("stopped", Some(Phase::Stopped)),
            ("STATUS_CODE_SUSPENDED", Some(Phase::Suspended)),
            ("cancelled", Some(Phase::Cancelled)),
            ("STATUS_CODE_TERMINATED", Some(Phase::Cancelled)),
            ("rejected", Some(Phase::Failed)),
            ("STATUS_CODE_MIGRATING", None),
        ];
        for (code, expected) in cases {
            assert_eq!(phase_for_service_status(code), expected, "code {code}");
        }
    }

    #[test]
    fn money_steps_imply_phase() {
        assert_eq!(
            phase_from_money(&IsHostingVpsStatus::default()),
            Phase::Pending
        );
        assert_eq!(phase_from_money(&quoted()), Phase::Quoted);
        assert_eq!(phase_from_money(&ordered()), Phase::Ordered);
        let paid = IsHostingVpsStatus {
            invoice_status: Some("Paid".into()),
            ..ordered()
        };
        assert_eq!(phase_from_money(&paid), Phase::Paid);
    }

    #[test]
    fn requeue_is_fast_only_while_in_flight() {
        let fast = Duration::from_secs(5);
        let settled = Duration::from_secs(300);
        assert_eq!(requeue_after(Phase::Ordered, fast, settled), fast);
        assert_eq!(requeue_after(Phase::Provisioning, fast, settled), fast);
        assert_eq!(requeue_after(Phase::Running, fast, settled), settled);
        assert_eq!(requeue_after(Phase::Failed, fast, settled), settled);
    }

    #[test]
    fn progress_message_names_invoice_and_server() {
        let waiting = progress_message(&ordered(), Phase::Ordered);
        assert!(waiting.contains("1001"), "{waiting}");
        let stopped = IsHostingVpsStatus {
            service_status: Some("Stopped".into()),
            ..ordered()
        };
        let message = progress_message(&stopped, Phase::Stopped);
        assert!(message.contains("NL_1_1"), "{message}");
        assert!(message.contains("Stopped"), "{message}");
    }

    fn max(amount: &str, currency: &str) -> MaxTotal {
        MaxTotal {
            amount: amount.into(),
            currency: currency.into(),
        }
    }

    fn quote(total: &str, currency: &str) -> Quote {
        Quote {
            total: total.into(),
            currency: currency.into(),
        }
    }

    #[test]
    fn quote_at_or_below_max_total_passes() {
        assert_eq!(
            check_max_total(&quote("27.50", "USD"), &max("50", "USD")),
            Ok(())
        );
        assert_eq!(
            check_max_total(&quote("27.50", "USD"), &max("27.5", "USD")),
            Ok(())
        );
        assert_eq!(
            check_max_total(&quote("27.50", "usd"), &max("27.50", "USD")),
            Ok(())
        );
    }

    #[test]
    fn max_total_holds_higher_quote() {
        let hold = check_max_total(&quote("27.51", "USD"), &max("27.50", "USD")).unwrap_err();
        assert_eq!(hold.reason(), "QuoteAboveMaxTotal");
        let message = hold.message(Duration::from_secs(120));
        assert!(message.contains("27.51 USD"), "{message}");
        assert!(message.contains("27.50 USD"), "{message}");
        assert!(message.contains("Raise spec.maxTotal"), "{message}");
        assert!(hold.stalls());
    }

    #[test]
    fn max_total_in_another_currency_is_held() {
        let hold = check_max_total(&quote("10.00", "USD"), &max("1000", "EUR")).unwrap_err();
        assert_eq!(hold.reason(), "MaxTotalCurrencyMismatch");
    }

    #[test]
    fn unreadable_amounts_are_held() {
        let hold = check_max_total(&quote("10.00", "USD"), &max("ten", "USD")).unwrap_err();
        assert_eq!(hold.reason(), "MaxTotalInvalid");
        let hold = check_max_total(&quote("n/a", "USD"), &max("10", "USD")).unwrap_err();
        assert_eq!(hold.reason(), "QuoteAboveMaxTotal");
    }

    #[test]
    fn gate_without_guards_proceeds_without_requote() {
        let gate = gate_order(OrderPolicy::Order, None, &quoted(), false);
        assert_eq!(gate, Gate::Proceed);
        let no_quote = gate_order(
            OrderPolicy::Order,
            None,
            &IsHostingVpsStatus::default(),
            false,
        );
        assert_eq!(no_quote, Gate::Proceed);
    }

    #[test]
    fn gate_holds_quote_only_and_high_quotes() {
        let gate = gate_order(OrderPolicy::QuoteOnly, None, &quoted(), true);
        assert!(
            matches!(gate, Gate::Hold(Hold::QuoteOnly { .. })),
            "{gate:?}"
        );
        let low = max("20.00", "USD");
        let gate = gate_order(OrderPolicy::Order, Some(&low), &quoted(), true);
        assert!(
            matches!(gate, Gate::Hold(Hold::QuoteAboveMaxTotal { .. })),
            "{gate:?}"
        );
        let high = max("30.00", "USD");
        let gate = gate_order(OrderPolicy::Order, Some(&high), &quoted(), true);
        assert_eq!(gate, Gate::Proceed);
    }

    #[test]
    fn held_order_is_priced_again_before_it_goes() {
        let mut status = quoted();
        crate::controller::conditions::set(
            &mut status.conditions,
            ORDERED,
            crate::controller::conditions::Status::False,
            "QuoteAboveMaxTotal",
            "held",
            1,
            now(),
        );
        let high = max("30.00", "USD");
        assert_eq!(
            gate_order(OrderPolicy::Order, Some(&high), &status, false),
            Gate::Requote
        );
        assert_eq!(
            gate_order(OrderPolicy::Order, Some(&high), &status, true),
            Gate::Proceed
        );
        let missing_quote = IsHostingVpsStatus::default();
        assert_eq!(
            gate_order(OrderPolicy::QuoteOnly, None, &missing_quote, false),
            Gate::Requote
        );
    }

    #[test]
    fn account_limits_allow_up_to_the_limit() {
        let limits = AccountLimits {
            max_orders_per_hour: 2,
            max_spend_per_day: Decimal::new(100, 0),
        };
        let usage = AccountUsage {
            orders_last_hour: 1,
            spent_last_day: Decimal::new(7250, 2),
        };
        assert_eq!(
            check_account_limits(&usage, &limits, Some(&quote("27.50", "USD"))),
            None
        );
        let hold = check_account_limits(&usage, &limits, Some(&quote("27.51", "USD"))).unwrap();
        assert_eq!(hold.reason(), "AccountSpendLimit");
        assert_eq!(hold.account_limit(), Some("spend_per_day"));
        let message = hold.message(Duration::from_secs(120));
        assert!(message.contains("72.50 USD"), "{message}");
        assert!(message.contains("100.00 USD"), "{message}");

        let busy = AccountUsage {
            orders_last_hour: 2,
            ..usage
        };
        let hold = check_account_limits(&busy, &limits, Some(&quote("1", "USD"))).unwrap();
        assert_eq!(hold.reason(), "AccountOrderLimit");
        assert_eq!(hold.account_limit(), Some("orders_per_hour"));
    }

    #[test]
    fn zero_limits_never_hold() {
        let limits = AccountLimits::default();
        assert!(!limits.any());
        let usage = AccountUsage {
            orders_last_hour: 1_000,
            spent_last_day: Decimal::new(1_000_000, 0),
        };
        assert_eq!(
            check_account_limits(&usage, &limits, Some(&quote("5", "USD"))),
            None
        );
    }

    #[test]
    fn identity_and_tag_carry_uid() {
        assert_eq!(order_identity("abc"), "isvps-abc");
        assert_eq!(ownership_tag("abc"), "k8s-uid:abc");
        assert!(order_comment("ns", "web", "abc").contains("uid:abc"));
    }
}

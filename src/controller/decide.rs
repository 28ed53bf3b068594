//! Pure decisions: given the spec, the recorded status and what this pass has already
//! learnt, which provider call comes next. No client is needed here, so every branch of
//! the money flow is unit-tested without a network.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::crd::{IsHostingVpsStatus, Phase};

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

    #[test]
    fn identity_and_tag_carry_uid() {
        assert_eq!(order_identity("abc"), "isvps-abc");
        assert_eq!(ownership_tag("abc"), "k8s-uid:abc");
        assert!(order_comment("ns", "web", "abc").contains("uid:abc"));
    }
}

//! Builds the provider's order and answers' summaries from a resource. Pure: no client.

use rust_decimal::Decimal;

use super::decide::AccountUsage;
use crate::crd::{IsHostingVpsSpec, Quote};
use crate::ishosting::{
    Addition, Invoice, InvoiceStatus, Money, OrderItem, OrderLocation, OrderOptions, OrderRequest,
    SshOption, VncOption,
};

/// Builds the order (also sent to the validation call) for a resource.
pub fn order_request(spec: &IsHostingVpsSpec, identity: &str, comment: &str) -> OrderRequest {
    let mut item = OrderItem::new_vps(&spec.plan, identity);
    item.location = spec
        .location
        .as_ref()
        .map(|city| OrderLocation { city: city.clone() });
    item.additions = spec
        .additions
        .iter()
        .flatten()
        .map(|addition| Addition {
            category: addition.category.clone(),
            code: addition.code.clone(),
            // The CRD rejects non-positive quantities; the conversion only guards old objects.
            quantity: addition.quantity.and_then(|q| u32::try_from(q).ok()),
        })
        .collect();
    let keys: Vec<String> = spec
        .ssh_keys
        .iter()
        .flatten()
        .map(|key| key.0.clone())
        .collect();
    if !keys.is_empty() {
        item.options = Some(OrderOptions {
            ssh: SshOption {
                is_enabled: true,
                keys,
            },
            vnc: VncOption { is_enabled: false },
        });
    }
    item.comment = Some(comment.to_string());
    OrderRequest {
        items: vec![item],
        promos: Vec::new(),
    }
}

/// Converts a validated price to the status's quote. A price without a currency sign is
/// taken to be in US dollars, the currency of the provider's price lists.
pub fn quote_status(total: &Money) -> Quote {
    let currency = if total.currency.is_empty() {
        "USD".to_string()
    } else {
        total.currency.clone()
    };
    Quote {
        total: format!("{:.2}", total.amount.round_dp(2)),
        currency,
    }
}

/// Returns true when the invoice belongs to the resource with this identity and UID:
/// one of its services carries the identity, or a comment carries the UID.
pub fn invoice_matches(invoice: &Invoice, identity: &str, uid: &str) -> bool {
    let uid_marker = format!("uid:{uid}");
    let comment_matches = |comment: &Option<String>| {
        comment
            .as_deref()
            .is_some_and(|text| text.contains(&uid_marker))
    };
    comment_matches(&invoice.comment)
        || invoice.services.iter().any(|service| {
            service.identity.as_deref() == Some(identity) || comment_matches(&service.comment)
        })
}

/// Returns true when an invoice from a list carries no identity and no comment, so only
/// the full invoice can tell whose order it is.
pub fn lacks_order_marks(invoice: &Invoice) -> bool {
    invoice.comment.is_none()
        && invoice
            .services
            .iter()
            .all(|service| service.identity.is_none() && service.comment.is_none())
}

/// Returns true when the provider's response means the balance cannot cover the invoice.
pub fn is_insufficient_funds(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    ["insufficient", "not enough", "funds", "balance"]
        .iter()
        .any(|word| lower.contains(word))
}

/// Returns true when an invoice bills a new order rather than a renewal or another
/// change of an existing service. A line without an action counts as an order, so that a
/// response that leaves it out cannot hide orders from the account limits.
pub fn is_new_order(invoice: &Invoice) -> bool {
    invoice.services.is_empty()
        || invoice.services.iter().any(|service| {
            service
                .action
                .as_deref()
                .is_none_or(|action| action.trim().eq_ignore_ascii_case("new"))
        })
}

/// Seconds in the window of the hourly order limit.
pub const HOUR_S: i64 = 3_600;
/// Seconds in the window of the daily spend limit.
pub const DAY_S: i64 = 86_400;

/// Counts an account's orders and spend from its invoices of the last 24 hours.
///
/// Every new-order invoice created in the last hour is an order, cancelled or not. The
/// spend adds the totals in `currency` of those created in the last 24 hours that are not
/// cancelled or refunded. `now` and `invoiced_at` are Unix seconds. An invoice whose time
/// cannot be read counts as just created.
pub fn account_usage(invoices: &[Invoice], now: i64, currency: &str) -> AccountUsage {
    let mut usage = AccountUsage::default();
    for invoice in invoices.iter().filter(|invoice| is_new_order(invoice)) {
        let age = invoice
            .invoiced_at
            .as_deref()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .map(|at| now - at)
            .unwrap_or(0);
        if age < HOUR_S {
            usage.orders_last_hour += 1;
        }
        let refunded = matches!(
            invoice.status,
            InvoiceStatus::Cancelled | InvoiceStatus::Refunded
        );
        if age < DAY_S && !refunded {
            // NOTE: an account is billed in one currency; a total in another one is not
            // converted and so not counted.
            if let Some(total) = invoice.total.as_ref().filter(|total| {
                let code = if total.currency.is_empty() {
                    "USD"
                } else {
                    total.currency.as_str()
                };
                code.eq_ignore_ascii_case(currency)
            }) {
                usage.spent_last_day += total.amount;
            }
        }
    }
    usage
}

/// Renders the provider's `due_to` (Unix seconds) as RFC 3339; any other text is returned
/// as it came.
pub fn due_date_text(due_to: &str) -> String {
    due_to
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| due_to.to_string())
}

/// Formats an amount for messages, e.g. `27.50 USD`.
pub fn format_money(amount: Decimal, currency: &str) -> String {
    format!("{:.2} {currency}", amount.round_dp(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Addition as SpecAddition, SshKeyId};
    use crate::ishosting::{InvoiceService, InvoiceStatus};
    use rust_decimal_macros::dec;

    fn walkthrough_spec() -> IsHostingVpsSpec {
        IsHostingVpsSpec {
            plan: "29_6m".into(),
            location: Some("ams".into()),
            additions: Some(vec![
                SpecAddition {
                    category: "os".into(),
                    code: Some("linux/debian11#64".into()),
                    quantity: None,
                },
                SpecAddition {
                    category: "ip".into(),
                    code: None,
                    quantity: Some(4),
                },
            ]),
            ssh_keys: Some(vec![SshKeyId("42".into())]),
            name: None,
            tags: None,
            auto_renew: true,
            credentials_secret_ref: None,
            max_total: None,
            order_policy: Default::default(),
        }
    }

    #[test]
    fn order_carries_spec_identity_and_comment() {
        let request = order_request(&walkthrough_spec(), "isvps-u1", "web uid:u1");
        assert_eq!(request.items.len(), 1);
        let item = &request.items[0];
        assert_eq!(item.plan, "29_6m");
        assert_eq!(item.identity, "isvps-u1");
        assert_eq!(item.comment.as_deref(), Some("web uid:u1"));
        assert_eq!(item.location.as_ref().unwrap().city, "ams");
        assert_eq!(item.additions.len(), 2);
        assert_eq!(item.additions[1].quantity, Some(4));
        let options = item.options.as_ref().unwrap();
        assert!(options.ssh.is_enabled);
        assert_eq!(options.ssh.keys, vec!["42".to_string()]);
    }

    #[test]
    fn order_without_keys_sends_no_options() {
        let spec = IsHostingVpsSpec {
            ssh_keys: None,
            ..walkthrough_spec()
        };
        assert!(order_request(&spec, "i", "c").items[0].options.is_none());
    }

    #[test]
    fn quote_defaults_currency_to_usd() {
        let quote = quote_status(&Money {
            amount: dec!(27.500),
            currency: String::new(),
        });
        assert_eq!(quote.total, "27.50");
        assert_eq!(quote.currency, "USD");
    }

    #[test]
    fn invoice_matched_by_identity_or_uid() {
        let mut invoice = Invoice {
            id: "1".into(),
            status: InvoiceStatus::Unpaid,
            total: None,
            due_to: None,
            invoiced_at: None,
            comment: None,
            services: vec![InvoiceService {
                id: "NL_1".into(),
                comment: Some("other uid:zzz".into()),
                identity: Some("isvps-other".into()),
                action: Some("new".into()),
            }],
        };
        assert!(!invoice_matches(&invoice, "isvps-u1", "u1"));

        invoice.services[0].identity = Some("isvps-u1".into());
        assert!(invoice_matches(&invoice, "isvps-u1", "u1"));

        invoice.services[0].identity = None;
        invoice.services[0].comment = Some("ishosting-operator ns/web uid:u1".into());
        assert!(invoice_matches(&invoice, "isvps-u1", "u1"));
    }

    fn invoice_at(at: i64, total: &str, status: InvoiceStatus, action: Option<&str>) -> Invoice {
        Invoice {
            id: at.to_string(),
            status,
            total: Some(Money::parse(total).unwrap()),
            due_to: None,
            invoiced_at: Some(at.to_string()),
            comment: None,
            services: vec![InvoiceService {
                id: "NL_1".into(),
                comment: None,
                identity: None,
                action: action.map(str::to_string),
            }],
        }
    }

    #[test]
    fn usage_counts_new_orders_by_window() {
        let now = 1_800_000_000;
        let invoices = vec![
            invoice_at(now - 60, "10.00$", InvoiceStatus::Unpaid, Some("new")),
            invoice_at(now - 3_000, "20.00$", InvoiceStatus::Paid, None),
            // Cancelled: still an order in the hour, but no spend.
            invoice_at(now - 120, "40.00$", InvoiceStatus::Cancelled, Some("new")),
            // Older than an hour: spend only.
            invoice_at(now - 7_200, "5.00$", InvoiceStatus::Paid, Some("new")),
            // A renewal is not a new order.
            invoice_at(now - 60, "99.00$", InvoiceStatus::Paid, Some("renew")),
            // Another currency is not added to dollars.
            invoice_at(now - 60, "7.00€", InvoiceStatus::Paid, Some("new")),
        ];
        let usage = account_usage(&invoices, now, "USD");
        assert_eq!(usage.orders_last_hour, 4);
        assert_eq!(usage.spent_last_day, dec!(35.00));
    }

    #[test]
    fn due_date_reads_unix_seconds() {
        assert_eq!(due_date_text("1700259200"), "2023-11-17T22:13:20Z");
        assert_eq!(due_date_text("tomorrow"), "tomorrow");
    }

    #[test]
    fn insufficient_funds_recognised() {
        assert!(is_insufficient_funds("Insufficient funds on balance"));
        assert!(is_insufficient_funds("Not enough money"));
        assert!(!is_insufficient_funds("Invoice already paid"));
    }
}

//! Builds the provider's order and answers' summaries from a resource. Pure: no client.

use rust_decimal::Decimal;

use crate::crd::{IsHostingVpsSpec, Quote};
use crate::ishosting::{
    Addition, Invoice, Money, OrderItem, OrderLocation, OrderOptions, OrderRequest, SshOption,
    VncOption,
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
            comment: None,
            services: vec![InvoiceService {
                id: "NL_1".into(),
                comment: Some("other uid:zzz".into()),
                identity: Some("isvps-other".into()),
            }],
        };
        assert!(!invoice_matches(&invoice, "isvps-u1", "u1"));

        invoice.services[0].identity = Some("isvps-u1".into());
        assert!(invoice_matches(&invoice, "isvps-u1", "u1"));

        invoice.services[0].identity = None;
        invoice.services[0].comment = Some("ishosting-operator ns/web uid:u1".into());
        assert!(invoice_matches(&invoice, "isvps-u1", "u1"));
    }

    #[test]
    fn insufficient_funds_recognised() {
        assert!(is_insufficient_funds("Insufficient funds on balance"));
        assert!(is_insufficient_funds("Not enough money"));
        assert!(!is_insufficient_funds("Invoice already paid"));
    }
}

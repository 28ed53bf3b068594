//! Operator-wide order and spend limits per account (API key).
//!
//! The counts come from the provider, not from a Kubernetes object: the account's invoice
//! list, filtered to the last 24 hours by `period[from]`, is the record of every order the
//! key placed, whichever operator process, resource or person placed it. A restart, a
//! lost status or a second operator instance cannot reset it, and no extra object or RBAC
//! is needed. Each order decision reads the list at most once (one request per 100
//! invoices), and the result is cached for [`CACHE_TTL`] per account. An order this process sends is added to the cached list at once, so each
//! resource that orders within the TTL counts the orders sent before it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::decide::{AccountLimits, AccountUsage};
use super::order::{self, DAY_S};
use crate::crd::Quote;
use crate::ishosting::{
    Account, ApiError, Invoice, InvoiceFilter, InvoiceService, InvoiceStatus, Money,
};

/// How long an account's invoice list is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(15);

/// Largest page of the invoice list the provider serves.
const PAGE: u32 = 100;
/// Pages read at most per refresh: 1,000 invoices in a day is far above any limit here.
const MAX_PAGES: u32 = 10;

/// The limits and each account's recent invoices.
pub struct SpendingGuard {
    limits: AccountLimits,
    cache: Mutex<HashMap<String, CachedInvoices>>,
}

struct CachedInvoices {
    fetched: Instant,
    invoices: Vec<Invoice>,
}

impl SpendingGuard {
    pub fn new(limits: AccountLimits) -> Self {
        SpendingGuard {
            limits,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &AccountLimits {
        &self.limits
    }

    /// Returns the account's orders of the last hour and spend of the last 24 hours in
    /// `currency`. Call it while holding the account's order lock, so that no order of
    /// this process is sent between the count and the decision.
    pub async fn usage(&self, account: &Account, currency: &str) -> Result<AccountUsage, ApiError> {
        let key = account.fingerprint();
        let now = Utc::now().timestamp();
        let cached = {
            let cache = self.cache.lock().expect("limits cache lock poisoned");
            cache
                .get(&key)
                .filter(|entry| entry.fetched.elapsed() < CACHE_TTL)
                .map(|entry| entry.invoices.clone())
        };
        let invoices = match cached {
            Some(invoices) => invoices,
            None => {
                let invoices = fetch_last_day(account, now).await?;
                self.cache
                    .lock()
                    .expect("limits cache lock poisoned")
                    .insert(
                        key,
                        CachedInvoices {
                            fetched: Instant::now(),
                            invoices: invoices.clone(),
                        },
                    );
                invoices
            }
        };
        Ok(order::account_usage(&invoices, now, currency))
    }

    /// Adds an order this process just sent to the account's cached list. Without an
    /// invoice (the response was lost) the quote is added, because the order may exist.
    pub fn record_order(
        &self,
        account: &Account,
        invoice: Option<&Invoice>,
        quote: Option<&Quote>,
    ) {
        let now = Utc::now().timestamp().to_string();
        let entry = match invoice {
            Some(invoice) => Invoice {
                invoiced_at: Some(now),
                ..invoice.clone()
            },
            None => Invoice {
                id: String::new(),
                status: InvoiceStatus::Unpaid,
                total: quote.and_then(|quote| {
                    Some(Money::new(
                        quote.total.parse().ok()?,
                        quote.currency.clone(),
                    ))
                }),
                due_to: None,
                invoiced_at: Some(now),
                comment: None,
                services: vec![InvoiceService {
                    id: String::new(),
                    comment: None,
                    identity: None,
                    action: Some("new".into()),
                }],
            },
        };
        let mut cache = self.cache.lock().expect("limits cache lock poisoned");
        if let Some(cached) = cache.get_mut(&account.fingerprint()) {
            cached.invoices.push(entry);
        }
    }
}

/// Reads the account's invoices created in the last 24 hours, newest first.
///
/// NOTE: one request covers 100 invoices. An account with more in a day takes one more
/// request per 100, up to [`MAX_PAGES`], and invoices past that are not counted.
async fn fetch_last_day(account: &Account, now: i64) -> Result<Vec<Invoice>, ApiError> {
    let mut invoices = Vec::new();
    for page in 0..MAX_PAGES {
        let filter = InvoiceFilter {
            from: Some((now - DAY_S).to_string()),
            limit: Some(PAGE),
            offset: Some(page * PAGE),
            ..Default::default()
        };
        let list = account.invoices(&filter).await?;
        let full = list.len() as u32 >= PAGE;
        invoices.extend(list);
        if !full {
            break;
        }
    }
    Ok(invoices)
}

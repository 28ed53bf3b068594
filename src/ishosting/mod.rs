//! Client for the is*hosting HTTP API.
//!
//! One [`ApiClient`] per process owns the HTTP connection pool. [`ApiClient::account`] binds
//! it to an API key; every [`Account`] for the same key shares that key's request budget
//! (see [`Budget`]) and its order lock. Response types accept the provider's documented shapes
//! and the variations real responses have shown (ids as numbers or strings, status words in any
//! case, money as `"10.50$"` or a bare number).
//!
//! Error handling follows [`ApiError::class`]. Transient errors may be retried later, and
//! errors that need a person are reported. [`ApiError::OutcomeUnknown`], only from
//! [`Account::order`] and [`Account::pay`], means money may have moved, so the caller must
//! look the invoice up before repeating the call.

mod client;
mod error;
pub mod id;
pub mod money;
mod ratelimit;
mod status;
mod types;

pub use client::{Account, ApiClient, ApiKey, ClientConfig};
pub use error::{ApiError, ErrorClass, MAX_RETRY_AFTER};
pub use money::{Money, MoneyError};
pub use ratelimit::Budget;
pub use status::{InvoiceStatus, ServiceStatus, ServiceStatusCode, StateCode, TransactionStatus};
pub use types::{
    Addition, AdditionOption, Invoice, InvoiceFilter, InvoiceService, LocationOption, OrderItem,
    OrderLocation, OrderOptions, OrderRequest, PayRequest, Plan, PlanConfigs, PlanFilter, Quote,
    QuoteItem, ServiceRef, SshOption, Transaction, VncOption, Vps, VpsAction, VpsPage, VpsPatch,
    sum_money,
};

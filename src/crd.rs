//! The `IsHostingVps` custom resource: spec, status and the generated CRD.
//!
//! The `///` docs on fields are what `kubectl explain` shows, so they are written for users.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::crd::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the operator's resources.
pub const GROUP: &str = "ishosting.com";

/// Finalizer that keeps an `IsHostingVps` until its unpaid invoice is cancelled.
pub const FINALIZER: &str = "ishosting.com/order-cleanup";

/// Default key inside the credentials Secret.
pub const DEFAULT_SECRET_KEY: &str = "apiKey";

/// A VPS server ordered from is*hosting and paid from the account balance.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ishosting.com",
    version = "v1alpha1",
    kind = "IsHostingVps",
    plural = "ishostingvpses",
    shortname = "isvps",
    namespaced,
    doc = "A VPS server at is*hosting that the operator quotes, orders, pays for and watches.",
    status = "IsHostingVpsStatus",
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.plan"}"#,
    printcolumn = r#"{"name":"Location","type":"string","jsonPath":".spec.location"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Invoice","type":"string","jsonPath":".status.invoiceId"}"#,
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".status.serviceId"}"#,
    printcolumn = r#"{"name":"IP","type":"string","jsonPath":".status.publicIp"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.location) == has(oldSelf.location) && (!has(self.location) || self.location == oldSelf.location)").message("location is immutable: create a new IsHostingVps to order a server elsewhere"),
    validation = Rule::new("has(self.additions) == has(oldSelf.additions) && (!has(self.additions) || self.additions == oldSelf.additions)").message("additions are immutable: create a new IsHostingVps to order another configuration"),
    validation = Rule::new("has(self.sshKeys) == has(oldSelf.sshKeys) && (!has(self.sshKeys) || self.sshKeys == oldSelf.sshKeys)").message("sshKeys are immutable: they are installed when the server is ordered")
)]
pub struct IsHostingVpsSpec {
    /// Tariff plan code at is*hosting, for example `29_6m` (plan 29 paid every 6 months).
    /// The catalogue is `GET /vps/plans`. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("plan is immutable: create a new IsHostingVps to order another plan"))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_.-]+$')").message("plan must be a plan code such as 29_6m"))]
    #[schemars(length(min = 1, max = 64))]
    pub plan: String,

    /// City code of the data centre, from the plan's configs (`GET /vps/configs/{plan}`),
    /// for example `ams`. Sent as the order item's `location.city`; the plan's default
    /// location is used when empty. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub location: Option<String>,

    /// Options that replace or extend the plan's defaults, for example
    /// `{category: os, code: "linux/debian11#64"}`, `{category: ip, quantity: 4}` or
    /// `{category: ram, code: 2g}`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub additions: Option<Vec<Addition>>,

    /// Ids of SSH keys stored in the is*hosting account, installed for root. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub ssh_keys: Option<Vec<SshKeyId>>,

    /// Server name at is*hosting. Defaults to `<namespace>/<name>` of this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub name: Option<String>,

    /// Tags of the server at is*hosting. The operator adds one more tag,
    /// `k8s-uid:<resource uid>`, that marks the server as owned by this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub tags: Option<Vec<Tag>>,

    /// Whether is*hosting renews the server from the balance at the end of each paid
    /// period. Sent as `renew` when the invoice is paid and kept in sync afterwards.
    #[serde(default = "default_auto_renew")]
    pub auto_renew: bool,

    /// Secret in this namespace that contains the is*hosting API key. When absent, the
    /// operator's default Secret (flag `--default-secret`) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,

    /// Highest first-period total the operator may order at, for example
    /// `{amount: "50.00", currency: USD}`. When the provider's quote is higher, or in
    /// another currency, nothing is ordered and the `Stalled` condition reports it. Raise
    /// the amount to let the order go ahead. Can be changed at any time; it is checked
    /// before every order is sent, never once an invoice exists. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total: Option<MaxTotal>,

    /// `Order` (default) quotes, orders and pays. `QuoteOnly` quotes and stops at phase
    /// `Quoted` until this is changed to `Order`. The field can be changed at any time,
    /// but `QuoteOnly` only stops an order that has not been sent: once an order exists
    /// at the provider it is paid and followed as usual, whatever this field is set to.
    #[serde(default)]
    pub order_policy: OrderPolicy,
}

/// An amount of money with its currency, as `maxTotal` takes it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MaxTotal {
    /// Decimal amount as a string, at most 4 decimals, for example `"50.00"`. Must be
    /// greater than zero.
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,12}([.][0-9]{1,4})?$')").message("maxTotal.amount must be a decimal number such as \"50.00\", quoted as a string"))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("maxTotal.amount must be greater than zero"))]
    #[schemars(length(min = 1, max = 17))]
    pub amount: String,

    /// ISO 4217 currency code in upper case, for example `USD`. It must be the currency
    /// of the provider's quote.
    #[x_kube(validation = Rule::new("self.matches('^[A-Z]{3}$')").message("maxTotal.currency must be a 3-letter upper-case currency code such as USD"))]
    #[schemars(length(min = 3, max = 3))]
    pub currency: String,
}

/// Whether the operator orders after quoting.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OrderPolicy {
    /// Quote, order and pay.
    #[default]
    Order,
    /// Quote only; order once the policy is changed to `Order`.
    QuoteOnly,
}

fn default_auto_renew() -> bool {
    true
}

/// One option of the order: a `code` from the plan's configs, or a `quantity`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.code) != has(self.quantity)").message("an addition sets exactly one of code or quantity"),
    validation = Rule::new("!has(self.quantity) || self.quantity > 0").message("an addition's quantity must be positive")
)]
pub struct Addition {
    /// Category of the option: `os`, `ram`, `cpu`, `drive`, `ip`, `backup`, `ddos`, `panel` ...
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9_-]+$')").message("category must be a lower-case category name such as os or ip"))]
    #[schemars(length(min = 1, max = 32))]
    pub category: String,

    /// Code of the chosen option within the category, for example `linux/debian11#64` or `2g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub code: Option<String>,

    /// Number of units, for categories sold by count such as `ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
}

/// Id of an SSH key stored in the is*hosting account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct SshKeyId(#[schemars(length(min = 1, max = 64))] pub String);

/// A tag of the server at is*hosting.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct Tag(#[schemars(length(min = 1, max = 64))] pub String);

/// Reference to a key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key in the Secret's data that contains the API key. Defaults to `apiKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// Returns the data key, `apiKey` when none is set.
    pub fn key_or_default(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_SECRET_KEY)
    }
}

/// Observed state of the server and of its order, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IsHostingVpsStatus {
    /// Stage of the resource's life: Pending, Quoted, Ordered (invoice unpaid), Paid,
    /// Provisioning, Running, Stopped, Suspended, Cancelled or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Price of the order as returned by the provider's order validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,

    /// Identity sent with the order. It is recorded before the order is sent, so that an
    /// order whose response was lost can be found at the provider instead of placed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_identity: Option<String>,

    /// Time the order request was last sent (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_sent_at: Option<String>,

    /// Id of the invoice created by the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,

    /// Status of the invoice at the provider: Unpaid, Paid, Cancelled or Refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_status: Option<String>,

    /// Id of the VPS service at the provider, for example `NL_12356212_3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,

    /// Status code of the server at the provider, for example `Running` or `Installing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_status: Option<String>,

    /// State code of the service at the provider, for example `Active` or `Pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_state: Option<String>,

    /// Public IPv4 address of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,

    /// Generation of the spec whose name, tags and auto-renew setting were last applied
    /// to the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_generation: Option<i64>,

    /// Latest observations of the resource's state. `Ready` is True when the server runs;
    /// `Quoted`, `Ordered` and `Paid` say which money step is done; `Stalled` is True when
    /// progress needs a person (its reason and message explain why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Generation of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Phase of an `IsHostingVps`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Nothing has been priced or ordered yet.
    Pending,
    /// The provider priced the order; nothing is ordered yet.
    Quoted,
    /// The order was placed and its invoice is unpaid.
    Ordered,
    /// The invoice is paid; the provider has not started installing yet.
    Paid,
    /// The provider is installing or starting the server.
    Provisioning,
    /// The server runs.
    Running,
    /// The server is stopped.
    Stopped,
    /// The provider suspended the service.
    Suspended,
    /// The service or its unpaid invoice was cancelled.
    Cancelled,
    /// The provider rejected or terminated the service.
    Failed,
}

impl Phase {
    /// Returns the phase as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Quoted => "Quoted",
            Phase::Ordered => "Ordered",
            Phase::Paid => "Paid",
            Phase::Provisioning => "Provisioning",
            Phase::Running => "Running",
            Phase::Stopped => "Stopped",
            Phase::Suspended => "Suspended",
            Phase::Cancelled => "Cancelled",
            Phase::Failed => "Failed",
        }
    }
}

/// Price of the order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// Total for the first period, a decimal number such as `27.50`.
    pub total: String,

    /// ISO 4217 currency code, for example `USD`.
    pub currency: String,
}

/// Returns the CRD as YAML, the way `ishosting-operator crd` prints it.
pub fn crd_yaml() -> String {
    let mut crd = serde_json::to_value(IsHostingVps::crd()).expect("a CRD serializes to JSON");
    unwrap_descriptions(&mut crd);
    let yaml = serde_yaml::to_string(&crd).expect("a CRD always serializes to YAML");
    format!("---\n{yaml}")
}

/// Joins the hard-wrapped lines of `///` docs in every `description`, so that
/// `kubectl explain` wraps the text itself. Blank lines (paragraphs) stay.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.split('\n').collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

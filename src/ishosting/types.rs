//! Request and response types of the is*hosting API.
//!
//! Response types read the provider's nested JSON (for example `plan.code` or
//! `network.protocols.ipv4[].address`) into flat structs and ignore every field they do not
//! name. Where the provider's examples disagree with what public clients have seen, both forms
//! are accepted: ids as numbers or strings, codes as strings or `{code, name}` objects, money
//! as strings with a sign or bare numbers.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::id;
use super::money::{self, Money};
use super::status::{InvoiceStatus, ServiceStatus, TransactionStatus};

// ---------------------------------------------------------------------------------------
// Shared lenient pieces
// ---------------------------------------------------------------------------------------

/// A catalogue reference that arrives either as a bare code or as `{code, name}`.
#[derive(Debug, Default)]
struct Named {
    code: Option<String>,
    name: Option<String>,
}

impl<'de> Deserialize<'de> for Named {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default, deserialize_with = "id::optional")]
            code: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            name: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Number(i64),
            Object(Object),
        }
        Ok(match Wire::deserialize(deserializer)? {
            Wire::Text(text) => Named {
                code: Some(text),
                name: None,
            },
            Wire::Number(number) => Named {
                code: Some(number.to_string()),
                name: None,
            },
            Wire::Object(object) => Named {
                code: object.code,
                name: object.name,
            },
        })
    }
}

/// Deserialises an optional bool that may arrive as `true`, `"true"`, `1` or `null`.
fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(flag)),
        Some(Value::Number(number)) => Ok(Some(number.as_f64().is_some_and(|n| n != 0.0))),
        Some(Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "" => Ok(Some(false)),
            _ => Err(de::Error::custom(format!(
                "expected a boolean, got {text:?}"
            ))),
        },
        Some(other) => Err(de::Error::custom(format!(
            "expected a boolean, got {}",
            kind_of(&other)
        ))),
    }
}

/// Deserialises a list of strings where `null` is an empty list.
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Returns the text of a string or number value.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Returns the code of a value that is a bare string or a `{code, ...}` object.
fn code_of(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map.get("code").and_then(text_of),
        other => text_of(other),
    }
}

/// Parses a money value leniently: a missing or unreadable price is `None`.
fn money_of(value: Option<&Value>) -> Option<Money> {
    match value? {
        Value::String(text) => Money::parse(text).ok(),
        Value::Number(number) => money::from_json_number(number).ok(),
        _ => None,
    }
}

/// A list response, given bare (`[...]`) or wrapped (`{"items": [...], "total": n}`, with
/// the list also accepted under `data`, `list` or `results`, and the total under `count`).
///
/// It is read as a stream, not through `serde_json::Value`, so fields the item type does not
/// name are skipped unread.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListResponse<T> {
    pub items: Vec<T>,
    pub total: Option<u32>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ListResponse<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for ListVisitor<T> {
            type Value = ListResponse<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list, or an object with an `items` list")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ListResponse {
                    items: Vec::new(),
                    total: None,
                })
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    items.push(item);
                }
                Ok(ListResponse { items, total: None })
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut items: Option<Vec<T>> = None;
                let mut total = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "items" | "data" | "list" | "results" if items.is_none() => {
                            items = Some(map.next_value::<Option<Vec<T>>>()?.unwrap_or_default());
                        }
                        "total" | "count" => {
                            let value = map.next_value::<Value>()?;
                            total = value
                                .as_u64()
                                .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
                                .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let items = items.ok_or_else(|| {
                    de::Error::custom("expected a list, or an object with an `items` list")
                })?;
                Ok(ListResponse { items, total })
            }
        }

        deserializer.deserialize_any(ListVisitor(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------
// Catalogue
// ---------------------------------------------------------------------------------------

/// Filter for `GET /vps/plans`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanFilter {
    /// Country codes such as `NL`, sent as `locations[]`.
    pub locations: Vec<String>,
    /// Platforms such as `linux`, sent as `platforms[]`.
    pub platforms: Vec<String>,
    /// Billing period: `1m`, `3m`, `6m` or `1y`.
    pub period: Option<String>,
}

impl PlanFilter {
    /// Returns the query pairs, for example `locations[]=NL&platforms[]=linux&period=6m`.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for location in &self.locations {
            pairs.push(("locations[]".to_string(), location.clone()));
        }
        for platform in &self.platforms {
            pairs.push(("platforms[]".to_string(), platform.clone()));
        }
        if let Some(period) = &self.period {
            pairs.push(("period".to_string(), period.clone()));
        }
        pairs
    }
}

/// A VPS plan from the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The plan code to order, such as `29_6m`.
    pub code: String,
    pub name: String,
    /// The provider's period code, such as `PLAN_PERIOD_MONTH`.
    pub period: Option<String>,
    pub price: Option<Money>,
    /// Country codes the plan is offered in.
    pub locations: Vec<String>,
    /// Platform codes such as `PLATFORM_CODE_LINUX`.
    pub platforms: Vec<String>,
}

/// Reads the documented form `{"plan": {code, name, price, period}, "location": {...},
/// "platform": {...}}` or the flat form this type serialises to.
impl<'de> Deserialize<'de> for Plan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        struct Core {
            #[serde(default, deserialize_with = "id::optional")]
            code: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            name: Option<String>,
            #[serde(default, deserialize_with = "money::optional")]
            price: Option<Money>,
            #[serde(default)]
            period: Option<Named>,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            plan: Option<Core>,
            #[serde(flatten)]
            flat: Core,
            #[serde(default)]
            location: Option<Named>,
            #[serde(default)]
            locations: Option<Vec<Named>>,
            #[serde(default)]
            platform: Option<Named>,
            #[serde(default)]
            platforms: Option<Vec<Named>>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let core = wire.plan.unwrap_or_default();
        let flat = wire.flat;
        let code = core
            .code
            .or(flat.code)
            .ok_or_else(|| de::Error::missing_field("plan.code"))?;
        let codes = |one: Option<Named>, many: Option<Vec<Named>>| -> Vec<String> {
            one.into_iter()
                .chain(many.unwrap_or_default())
                .filter_map(|named| named.code)
                .collect()
        };
        Ok(Plan {
            code,
            name: core.name.or(flat.name).unwrap_or_default(),
            period: core
                .period
                .or(flat.period)
                .and_then(|named| named.code.or(named.name)),
            price: core.price.or(flat.price),
            locations: codes(wire.location, wire.locations),
            platforms: codes(wire.platform, wire.platforms),
        })
    }
}

/// The order options of one plan (`GET /vps/configs/{code}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanConfigs {
    /// The plan code the configs were requested for.
    pub code: String,
    /// Period codes on offer, such as `PLAN_PERIOD_MONTH`.
    pub periods: Vec<String>,
    /// Data-centre cities on offer.
    pub locations: Vec<LocationOption>,
    /// Optional extras by category (`cpu`, `ram`, `drive`, `os`, `ip`, `backup`, ...).
    pub additions: Vec<AdditionOption>,
}

/// One city a plan can be ordered in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationOption {
    /// Country code; empty when the response names none.
    pub country: String,
    /// City code to send as `location.city`, such as `ams`.
    pub city: String,
    pub name: String,
}

/// One optional extra of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdditionOption {
    /// Category to send in [`Addition::category`], such as `os` or `ip`.
    pub category: String,
    /// Code to send in [`Addition::code`]; `None` for extras ordered by quantity.
    pub code: Option<String>,
    pub name: String,
    /// Price per item or step; `None` when absent or unreadable.
    pub price: Option<Money>,
    /// Largest quantity for extras ordered by quantity.
    pub max_quantity: Option<u32>,
}

impl PlanConfigs {
    /// Builds the configs from a `/vps/configs/{code}` response.
    ///
    /// Reads `periods[]`, the cities in `location.variants.city[]` (or a flat `locations[]`),
    /// and extras from `platforms.additions.fixed`, `platforms.additions.ranges`,
    /// `network.protocols`, `security` and `tools` (or a flat `additions[]`).
    ///
    /// NOTE: the map key becomes the category (`ram`, `os`, `backup` ...), as the ordering
    /// walkthrough uses it, except that `ipv4` becomes `ip` after the walkthrough's
    /// `{"category": "ip", "quantity": 4}`. The provider's `category.code` values
    /// (`ADDITIONS_PLATFORM_FIXED_RAM` ...) are not used.
    pub fn from_value(code: &str, value: &Value) -> Result<PlanConfigs, String> {
        let Value::Object(root) = value else {
            return Err(format!("expected an object, got {}", kind_of(value)));
        };

        let periods = root
            .get("periods")
            .or_else(|| root.get("period"))
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(code_of).collect())
            .unwrap_or_default();

        let mut locations = Vec::new();
        if let Some(location) = root.get("location") {
            let country = location.get("code").and_then(text_of).unwrap_or_default();
            let cities = location
                .pointer("/variants/city")
                .or_else(|| location.get("cities"))
                .and_then(Value::as_array);
            for city in cities.into_iter().flatten() {
                if let Some(city_code) = code_of(city) {
                    locations.push(LocationOption {
                        country: country.clone(),
                        name: city.get("name").and_then(text_of).unwrap_or_default(),
                        city: city_code,
                    });
                }
            }
        }
        for item in root
            .get("locations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let city = item.get("city").and_then(code_of);
            let country = item
                .get("country")
                .and_then(code_of)
                .or_else(|| {
                    if city.is_some() {
                        None
                    } else {
                        item.get("code").and_then(text_of)
                    }
                })
                .unwrap_or_default();
            locations.push(LocationOption {
                country,
                city: city.unwrap_or_default(),
                name: item.get("name").and_then(text_of).unwrap_or_default(),
            });
        }

        let mut additions = Vec::new();
        for pointer in ["/platforms/additions/fixed", "/security", "/tools"] {
            if let Some(Value::Object(groups)) = value.pointer(pointer) {
                for (category, options) in groups {
                    for option in options.as_array().into_iter().flatten() {
                        additions.push(fixed_option(category, option));
                    }
                }
            }
        }
        for pointer in ["/platforms/additions/ranges", "/network/protocols"] {
            if let Some(Value::Object(groups)) = value.pointer(pointer) {
                for (category, range) in groups {
                    if range.is_object() {
                        additions.push(range_option(category, range));
                    }
                }
            }
        }
        for item in root
            .get("additions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let addition: AdditionOption =
                serde_json::from_value(item.clone()).map_err(|e| format!("additions: {e}"))?;
            additions.push(addition);
        }

        Ok(PlanConfigs {
            code: root
                .get("code")
                .and_then(text_of)
                .unwrap_or_else(|| code.to_string()),
            periods,
            locations,
            additions,
        })
    }
}

fn addition_category(key: &str) -> String {
    match key {
        "ipv4" => "ip".to_string(),
        other => other.to_string(),
    }
}

fn fixed_option(category: &str, option: &Value) -> AdditionOption {
    AdditionOption {
        category: addition_category(category),
        code: option.get("code").and_then(text_of),
        name: option.get("name").and_then(text_of).unwrap_or_default(),
        price: money_of(option.get("price")),
        max_quantity: None,
    }
}

fn range_option(category: &str, range: &Value) -> AdditionOption {
    let max_quantity = range.get("max").and_then(|max| match max {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse::<u64>().ok(),
        _ => None,
    });
    AdditionOption {
        category: addition_category(category),
        code: None,
        name: range
            .pointer("/category/name")
            .and_then(text_of)
            .unwrap_or_else(|| category.to_string()),
        price: money_of(range.pointer("/step/price").or_else(|| range.get("price"))),
        max_quantity: max_quantity.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

// ---------------------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------------------

/// Body of `POST /billing/order` and `POST /billing/order/validate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub items: Vec<OrderItem>,
    /// Promo codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promos: Vec<String>,
}

/// One item of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// `new` to order a new service.
    pub action: String,
    /// A client-chosen string echoed back by the provider, used to find the item again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity: String,
    /// Service type, `vps`.
    #[serde(rename = "type")]
    pub item_type: String,
    /// Plan code, such as `29_6m`.
    pub plan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<OrderLocation>,
    #[serde(default = "one")]
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<OrderOptions>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additions: Vec<Addition>,
    /// Free text; the provider echoes it in the invoice's `services[].comment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn one() -> u32 {
    1
}

impl OrderItem {
    /// Creates an item ordering one new VPS of `plan`, with nothing else set.
    pub fn new_vps(plan: impl Into<String>, identity: impl Into<String>) -> Self {
        OrderItem {
            action: "new".into(),
            identity: identity.into(),
            item_type: "vps".into(),
            plan: plan.into(),
            location: None,
            quantity: 1,
            options: None,
            additions: Vec::new(),
            comment: None,
        }
    }
}

/// The data-centre location of an ordered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLocation {
    /// City code from [`LocationOption::city`], such as `ams`.
    pub city: String,
}

/// Access options of an ordered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOptions {
    pub ssh: SshOption,
    pub vnc: VncOption,
}

/// SSH access of an ordered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshOption {
    pub is_enabled: bool,
    /// Ids of SSH keys stored in the account.
    #[serde(default, deserialize_with = "id::list")]
    pub keys: Vec<String>,
}

/// VNC console access of an ordered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VncOption {
    pub is_enabled: bool,
}

/// An extra ordered with a plan: by `code` (`{"category":"os","code":"..."}`) or by
/// `quantity` (`{"category":"ip","quantity":4}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addition {
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
}

/// Prices of an order as `POST /billing/order/validate` returns them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quote {
    pub items: Vec<QuoteItem>,
    /// The response's total, or the sum of the item totals when it has none.
    pub total: Money,
}

/// Price of one order item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuoteItem {
    /// Plan code, from `service.plan.code` or `plan`.
    pub plan: Option<String>,
    /// Recurring price per period.
    pub price: Option<Money>,
    /// One-off charges.
    pub once: Option<Money>,
    /// Discount, usually negative.
    pub discount: Option<Money>,
    /// Amount due for this item, computed as `price + once + discount` when the response has
    /// no total.
    pub total: Money,
}

impl<'de> Deserialize<'de> for QuoteItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Service {
            #[serde(default)]
            plan: Option<Named>,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            plan: Option<Named>,
            #[serde(default)]
            service: Option<Service>,
            #[serde(default, deserialize_with = "money::optional")]
            price: Option<Money>,
            #[serde(default, deserialize_with = "money::optional")]
            once: Option<Money>,
            #[serde(default, deserialize_with = "money::optional")]
            discount: Option<Money>,
            #[serde(default, deserialize_with = "money::optional")]
            total: Option<Money>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let total = match wire.total {
            Some(total) => total,
            None => {
                let Some(price) = &wire.price else {
                    return Err(de::Error::custom("quote item has neither total nor price"));
                };
                let parts = [Some(price), wire.once.as_ref(), wire.discount.as_ref()];
                sum_money(parts.into_iter().flatten()).map_err(de::Error::custom)?
            }
        };
        Ok(QuoteItem {
            plan: wire
                .service
                .and_then(|service| service.plan)
                .or(wire.plan)
                .and_then(|named| named.code),
            price: wire.price,
            once: wire.once,
            discount: wire.discount,
            total,
        })
    }
}

impl<'de> Deserialize<'de> for Quote {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            items: Vec<QuoteItem>,
            #[serde(default, deserialize_with = "money::optional")]
            total: Option<Money>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let total = match wire.total {
            Some(total) => total,
            None => {
                sum_money(wire.items.iter().map(|item| &item.total)).map_err(de::Error::custom)?
            }
        };
        Ok(Quote {
            items: wire.items,
            total,
        })
    }
}

/// Adds amounts of one currency; an amount without currency takes the others'. An empty
/// list sums to a currency-less zero.
pub fn sum_money<'a>(amounts: impl IntoIterator<Item = &'a Money>) -> Result<Money, String> {
    let mut total = Money::new(rust_decimal::Decimal::ZERO, "");
    for amount in amounts {
        if !amount.currency.is_empty() {
            if total.currency.is_empty() {
                total.currency = amount.currency.clone();
            } else if total.currency != amount.currency {
                return Err(format!(
                    "cannot add {} to {}: different currencies",
                    amount, total
                ));
            }
        }
        total.amount = total
            .amount
            .checked_add(amount.amount)
            .ok_or_else(|| "sum of amounts overflows".to_string())?;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------
// Invoices and payment
// ---------------------------------------------------------------------------------------

/// An invoice, as `POST /billing/order` and `GET /billing/invoice/{id}` return it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invoice {
    pub id: String,
    pub status: InvoiceStatus,
    pub total: Option<Money>,
    /// Payment deadline as the provider sent it (a Unix time in the documented examples).
    pub due_to: Option<String>,
    /// Creation time as the provider sent it (a Unix time in the documented examples);
    /// the invoice list's `period` filter selects by it.
    pub invoiced_at: Option<String>,
    /// The invoice's `comment`, or its `description` when it has no comment.
    pub comment: Option<String>,
    pub services: Vec<InvoiceService>,
}

/// A service billed by an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceService {
    /// The service id (for a new VPS, its id such as `NL_12356212_3`), from
    /// `services[].service.id`. Empty when the response carries none.
    pub id: String,
    /// The order item's comment, echoed back.
    pub comment: Option<String>,
    /// The order item's identity, when the response echoes it.
    pub identity: Option<String>,
    /// Action the line bills: `new` for an order, `renew`, `restore` ..., or `None` when
    /// the response carries no action.
    pub action: Option<String>,
}

impl<'de> Deserialize<'de> for InvoiceService {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Service {
            #[serde(default, deserialize_with = "id::optional")]
            id: Option<String>,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            service: Option<Service>,
            #[serde(default, deserialize_with = "id::optional")]
            id: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            comment: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            identity: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            action: Option<String>,
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(InvoiceService {
            id: wire
                .service
                .and_then(|service| service.id)
                .or(wire.id)
                .unwrap_or_default(),
            comment: wire.comment,
            identity: wire.identity,
            action: wire.action,
        })
    }
}

impl<'de> Deserialize<'de> for Invoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(deserialize_with = "id::string_or_number")]
            id: String,
            #[serde(default)]
            status: Option<Named>,
            #[serde(default, deserialize_with = "money::optional")]
            total: Option<Money>,
            #[serde(default, deserialize_with = "id::optional")]
            due_to: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            invoiced_at: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            comment: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            description: Option<String>,
            #[serde(default)]
            services: Option<Vec<InvoiceService>>,
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(Invoice {
            id: wire.id,
            status: status_of(wire.status, InvoiceStatus::parse),
            total: wire.total,
            due_to: wire.due_to,
            invoiced_at: wire.invoiced_at,
            comment: wire.comment.or(wire.description),
            services: wire.services.unwrap_or_default(),
        })
    }
}

/// Parses a status given as a code string or a `{code, name}` object; a missing one is
/// `Unknown("")`.
fn status_of<T>(named: Option<Named>, parse: fn(&str) -> T) -> T {
    let named = named.unwrap_or_default();
    parse(&named.code.or(named.name).unwrap_or_default())
}

/// Reads the response of `GET /billing/invoice/{id}/status`: an object with `status` (a code
/// or `{code, name}`), a `{code, name}` object, or a bare code string.
pub(crate) fn invoice_status_from_value(value: &Value) -> Result<InvoiceStatus, String> {
    let status = match value {
        Value::Object(map) if map.contains_key("status") => &map["status"],
        other => other,
    };
    match status {
        Value::String(text) => Ok(InvoiceStatus::parse(text)),
        Value::Object(map) => map
            .get("code")
            .or_else(|| map.get("name"))
            .and_then(text_of)
            .map(|code| InvoiceStatus::parse(&code))
            .ok_or_else(|| "invoice status object has no code".to_string()),
        other => Err(format!(
            "expected an invoice status, got {}",
            kind_of(other)
        )),
    }
}

/// Body of `POST /billing/invoice/{id}/pay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRequest {
    /// Pay from the account balance.
    pub balance: bool,
    /// Renew the services automatically from the balance.
    pub renew: bool,
}

/// The result of a payment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transaction {
    pub id: Option<String>,
    pub status: TransactionStatus,
    /// The provider's description or message.
    pub message: Option<String>,
}

/// Reads `{"transaction": {...}, "redirect": ...}` or a bare transaction object.
impl<'de> Deserialize<'de> for Transaction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        struct Inner {
            #[serde(default, deserialize_with = "id::optional")]
            id: Option<String>,
            #[serde(default)]
            status: Option<Named>,
            #[serde(default, deserialize_with = "id::optional")]
            message: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            description: Option<String>,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            transaction: Option<Inner>,
            #[serde(flatten)]
            bare: Inner,
        }
        let wire = Wire::deserialize(deserializer)?;
        let inner = match wire.transaction {
            Some(inner) => inner,
            None => wire.bare,
        };
        Ok(Transaction {
            id: inner.id,
            status: status_of(inner.status, TransactionStatus::parse),
            message: inner.message.or(inner.description),
        })
    }
}

/// Filter for `GET /billing/invoices`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceFilter {
    /// Status code, such as `STATUS_UNPAID`.
    pub status: Option<String>,
    pub service_id: Option<String>,
    /// Start of the period, as the provider expects it (a Unix time in its documentation).
    pub from: Option<String>,
    /// End of the period.
    pub to: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl InvoiceFilter {
    /// Returns the query pairs: `status`, `service_id`, `period[from]`, `period[to]`,
    /// `limit`, `offset`.
    ///
    /// The service filter goes out as `service`, its name in the provider's OpenAPI. The
    /// provider requires `limit`, so 100 (its maximum) is sent when none is set.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        let mut push = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                pairs.push((key.to_string(), value));
            }
        };
        push("status", self.status.clone());
        push("service", self.service_id.clone());
        push("period[from]", self.from.clone());
        push("period[to]", self.to.clone());
        push("limit", Some(self.limit.unwrap_or(100).to_string()));
        push("offset", self.offset.map(|n| n.to_string()));
        pairs
    }
}

// ---------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------

/// A VPS as `GET /vps/{id}` and `GET /vps/list` return it.
///
/// The provider's record also carries `access` with the root password and the VNC password.
/// This type has no field for them, and the client parses responses straight into it (never
/// through `serde_json::Value`), so serde skips those fields without copying them. They can
/// therefore not leak into a status, an event or a log through a `Vps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vps {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub status: ServiceStatus,
    /// From `plan.code`.
    pub plan_code: Option<String>,
    /// From `plan.auto_renew`.
    pub auto_renew: Option<bool>,
    /// From `plan.next_charge`, as sent (a Unix time in the documented examples).
    pub next_charge: Option<String>,
    /// Country code, from `location.code`.
    pub location: Option<String>,
    /// From `network.public_ip`.
    pub public_ip: Option<String>,
    /// From `network.protocols.ipv4[].address`.
    pub ipv4: Vec<String>,
    /// From `network.protocols.ipv6[].address`.
    pub ipv6: Vec<String>,
}

impl<'de> Deserialize<'de> for Vps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        struct PlanPart {
            #[serde(default, deserialize_with = "id::optional")]
            code: Option<String>,
            #[serde(default, deserialize_with = "lenient_bool")]
            auto_renew: Option<bool>,
            #[serde(default, deserialize_with = "id::optional")]
            next_charge: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum PlanWire {
            Code(String),
            Object(PlanPart),
        }
        #[derive(Deserialize, Default)]
        struct Protocols {
            #[serde(default)]
            ipv4: Option<Value>,
            #[serde(default)]
            ipv6: Option<Value>,
        }
        #[derive(Deserialize, Default)]
        struct Network {
            #[serde(default, deserialize_with = "id::optional")]
            public_ip: Option<String>,
            #[serde(default)]
            protocols: Option<Protocols>,
        }
        // Deliberately no `access` field: see the type's documentation.
        #[derive(Deserialize)]
        struct Wire {
            #[serde(deserialize_with = "id::string_or_number")]
            id: String,
            #[serde(default, deserialize_with = "id::optional")]
            name: Option<String>,
            #[serde(default, deserialize_with = "string_list")]
            tags: Vec<String>,
            #[serde(default)]
            status: Option<ServiceStatus>,
            #[serde(default)]
            plan: Option<PlanWire>,
            #[serde(default)]
            location: Option<Named>,
            #[serde(default)]
            network: Option<Network>,
            // The flat form this type serialises to.
            #[serde(default, deserialize_with = "id::optional")]
            plan_code: Option<String>,
            #[serde(default, deserialize_with = "lenient_bool")]
            auto_renew: Option<bool>,
            #[serde(default, deserialize_with = "id::optional")]
            next_charge: Option<String>,
            #[serde(default, deserialize_with = "id::optional")]
            public_ip: Option<String>,
            #[serde(default)]
            ipv4: Option<Value>,
            #[serde(default)]
            ipv6: Option<Value>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let plan = match wire.plan {
            Some(PlanWire::Object(part)) => part,
            Some(PlanWire::Code(code)) => PlanPart {
                code: Some(code),
                ..PlanPart::default()
            },
            None => PlanPart::default(),
        };
        let network = wire.network.unwrap_or_default();
        let protocols = network.protocols.unwrap_or_default();
        Ok(Vps {
            id: wire.id,
            name: wire.name.unwrap_or_default(),
            tags: wire.tags,
            status: wire.status.unwrap_or_default(),
            plan_code: plan.code.or(wire.plan_code),
            auto_renew: plan.auto_renew.or(wire.auto_renew),
            next_charge: plan.next_charge.or(wire.next_charge),
            location: wire.location.and_then(|named| named.code),
            public_ip: network.public_ip.or(wire.public_ip),
            ipv4: addresses(protocols.ipv4.or(wire.ipv4)),
            ipv6: addresses(protocols.ipv6.or(wire.ipv6)),
        })
    }
}

/// Collects addresses from a list of strings or of `{address, ...}` objects. Anything else
/// (the catalogue puts a count there) gives no addresses.
fn addresses(value: Option<Value>) -> Vec<String> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::String(address) => Some(address.clone()),
            Value::Object(map) => map
                .get("address")
                .or_else(|| map.get("ip"))
                .and_then(text_of),
            _ => None,
        })
        .collect()
}

/// One page of `GET /vps/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VpsPage {
    pub items: Vec<Vps>,
    /// The total number of VPS, when the response states it.
    pub total: Option<u32>,
}

/// Reads a bare list or `{"items": [...], "total": n}`.
impl<'de> Deserialize<'de> for VpsPage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = ListResponse::<Vps>::deserialize(deserializer)?;
        Ok(VpsPage {
            items: list.items,
            total: list.total,
        })
    }
}

/// One entry of `GET /services/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    /// `vps`, `storage`, `dedicated`, `vpn` or `ssl`.
    #[serde(rename = "type", default)]
    pub service_type: String,
    #[serde(default, deserialize_with = "nullable_string")]
    pub name: String,
    #[serde(deserialize_with = "id::string_or_number")]
    pub id: String,
}

fn nullable_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(id::optional(deserializer)?.unwrap_or_default())
}

/// A power or lifecycle action for `PATCH /vps/{id}/status/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VpsAction {
    Start,
    Stop,
    Reboot,
    /// Forced (hard) reboot.
    Force,
    /// Cancels the service. There is no DELETE for a VPS.
    Cancel,
}

impl VpsAction {
    /// Returns the path segment the provider expects.
    pub fn as_str(self) -> &'static str {
        match self {
            VpsAction::Start => "start",
            VpsAction::Stop => "stop",
            VpsAction::Reboot => "reboot",
            VpsAction::Force => "force",
            VpsAction::Cancel => "cancel",
        }
    }
}

impl std::fmt::Display for VpsAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `PATCH /vps/{id}`, sent as `{"name": ..., "tags": [...], "plan": {"auto_renew": ...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VpsPatch {
    /// New name; left out of the body when `None`.
    pub name: Option<String>,
    /// The complete tag list. It is always sent, even when empty, because the provider
    /// requires `tags` on every PATCH, so it replaces the current tags.
    pub tags: Vec<String>,
    /// New auto-renew setting; `plan` is left out of the body when `None`.
    pub auto_renew: Option<bool>,
}

impl Serialize for VpsPatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;

        #[derive(Serialize)]
        struct PlanPart {
            auto_renew: bool,
        }
        let mut map = serializer.serialize_map(None)?;
        if let Some(name) = &self.name {
            map.serialize_entry("name", name)?;
        }
        map.serialize_entry("tags", &self.tags)?;
        if let Some(auto_renew) = self.auto_renew {
            map.serialize_entry("plan", &PlanPart { auto_renew })?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for VpsPatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        struct PlanPart {
            #[serde(default, deserialize_with = "lenient_bool")]
            auto_renew: Option<bool>,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            name: Option<String>,
            #[serde(default, deserialize_with = "string_list")]
            tags: Vec<String>,
            #[serde(default)]
            plan: Option<PlanPart>,
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(VpsPatch {
            name: wire.name,
            tags: wire.tags,
            auto_renew: wire.plan.unwrap_or_default().auto_renew,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ishosting::status::{ServiceStatusCode, StateCode};
    use rust_decimal_macros::dec;
    use serde_json::json;

    fn usd(amount: rust_decimal::Decimal) -> Money {
        Money::new(amount, "USD")
    }

    #[test]
    fn plan_filter_query() {
        let filter = PlanFilter {
            locations: vec!["NL".into(), "DE".into()],
            platforms: vec!["linux".into()],
            period: Some("6m".into()),
        };
        let pairs = filter.query_pairs();
        let rendered: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            rendered,
            [
                "locations[]=NL",
                "locations[]=DE",
                "platforms[]=linux",
                "period=6m"
            ]
        );
        assert!(PlanFilter::default().query_pairs().is_empty());
    }

    #[test]
    fn plans_from_the_nested_form() {
        let response = json!([
            {
                "plan": {"name": "Lite", "code": "29_1m", "price": "4.99$",
                         "period": {"name": "Every month", "code": "PLAN_PERIOD_MONTH"}},
                "promo": {"is_top": true},
                "location": {"name": "Netherlands", "code": "NL"},
                "platform": {"name": "Linux", "code": "PLATFORM_CODE_LINUX",
                             "config": {"cpu": {"value": "2.20 GHz"}}},
                "network": {"protocols": {"ipv4": 1, "ipv6": 1}}
            },
            {"plan": {"code": 31, "name": null}}
        ]);
        let plans: Vec<Plan> = serde_json::from_value(response).unwrap();
        assert_eq!(
            plans[0],
            Plan {
                code: "29_1m".into(),
                name: "Lite".into(),
                period: Some("PLAN_PERIOD_MONTH".into()),
                price: Some(usd(dec!(4.99))),
                locations: vec!["NL".into()],
                platforms: vec!["PLATFORM_CODE_LINUX".into()],
            }
        );
        assert_eq!(plans[1].code, "31");
        assert_eq!(plans[1].name, "");
        assert_eq!(plans[1].price, None);
    }

    #[test]
    fn plan_flat_form_round_trips() {
        let plan = Plan {
            code: "29_6m".into(),
            name: "Lite".into(),
            period: Some("6m".into()),
            price: Some(usd(dec!(25.50))),
            locations: vec!["NL".into(), "DE".into()],
            platforms: vec!["linux".into()],
        };
        let text = serde_json::to_value(&plan).unwrap();
        assert_eq!(serde_json::from_value::<Plan>(text).unwrap(), plan);
    }

    #[test]
    fn plan_without_code_is_an_error() {
        let error = serde_json::from_value::<Plan>(json!({"plan": {"name": "Lite"}})).unwrap_err();
        assert!(error.to_string().contains("plan.code"), "{error}");
    }

    fn configs_fixture() -> Value {
        json!({
            "periods": [
                {"name": "1 Month", "code": "PLAN_PERIOD_MONTH", "plan": "29_1m", "price": "5$"},
                {"name": "6 Month", "code": "PLAN_PERIOD_6_MONTH", "plan": "29_6m", "price": "27$"}
            ],
            "location": {
                "variants": {"city": [
                    {"name": "Amsterdam", "code": "ams"},
                    {"name": "Rotterdam", "code": "rtm"}
                ]}
            },
            "platforms": {
                "types": [{"name": "Linux", "code": "PLATFORM_CODE_LINUX", "price": "0$"}],
                "additions": {
                    "fixed": {
                        "ram": [
                            {"name": "2 Gb DDR4", "code": "2g", "value": "2Gb", "price": "3$",
                             "category": {"name": "Additional RAM", "code": "ADDITIONS_PLATFORM_FIXED_RAM"}}
                        ],
                        "os": [
                            {"name": "Debian 12", "code": "linux/debian12#64", "price": 0,
                             "variants": {"lang": [{"name": "English", "code": "en"}]}}
                        ]
                    },
                    "ranges": {
                        "drive": {"min": "10GB", "max": "200Gb",
                                  "step": {"value": 1, "price": "0.5$"},
                                  "category": {"name": "Additional drive"}}
                    }
                }
            },
            "network": {"protocols": {
                "ipv4": {"min": 1, "max": 40, "step": {"value": 1, "price": "2$"},
                         "category": {"name": "Additional IPv4"}}
            }},
            "security": {
                "backup": [{"name": "Daily", "code": "BACKUP_DAILY_CODE", "price": "5$"}]
            },
            "tools": {
                "panel": [{"name": "Odd", "code": "TOOL_PANEL_ODD", "price": "PRICE_UNKNOWN"}]
            }
        })
    }

    #[test]
    fn plan_configs_from_the_documented_shape() {
        let configs = PlanConfigs::from_value("29_6m", &configs_fixture()).unwrap();
        assert_eq!(configs.code, "29_6m");
        assert_eq!(
            configs.periods,
            ["PLAN_PERIOD_MONTH", "PLAN_PERIOD_6_MONTH"]
        );
        assert_eq!(
            configs.locations,
            [
                LocationOption {
                    country: String::new(),
                    city: "ams".into(),
                    name: "Amsterdam".into()
                },
                LocationOption {
                    country: String::new(),
                    city: "rtm".into(),
                    name: "Rotterdam".into()
                },
            ]
        );
        let find = |category: &str| {
            configs
                .additions
                .iter()
                .filter(|a| a.category == category)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            find("ram"),
            [AdditionOption {
                category: "ram".into(),
                code: Some("2g".into()),
                name: "2 Gb DDR4".into(),
                price: Some(usd(dec!(3))),
                max_quantity: None,
            }]
        );
        assert_eq!(find("os")[0].code.as_deref(), Some("linux/debian12#64"));
        assert_eq!(find("os")[0].price, Some(Money::new(dec!(0), "")));
        assert_eq!(
            find("ip"),
            [AdditionOption {
                category: "ip".into(),
                code: None,
                name: "Additional IPv4".into(),
                price: Some(usd(dec!(2))),
                max_quantity: Some(40),
            }]
        );
        let drive = &find("drive")[0];
        assert_eq!(drive.max_quantity, None, "\"200Gb\" is no count");
        assert_eq!(drive.price, Some(usd(dec!(0.5))));
        assert_eq!(find("backup")[0].code.as_deref(), Some("BACKUP_DAILY_CODE"));
        assert_eq!(
            find("panel")[0].price,
            None,
            "an unreadable price is dropped"
        );
    }

    #[test]
    fn plan_configs_flat_form() {
        let value = json!({
            "code": "29_1m",
            "periods": ["1m", "6m"],
            "locations": [{"country": "NL", "city": "ams", "name": "Amsterdam"}, {"code": "DE", "name": "Germany"}],
            "additions": [{"category": "ip", "code": null, "name": "IPv4", "price": "2 USD", "max_quantity": 8}]
        });
        let configs = PlanConfigs::from_value("ignored", &value).unwrap();
        assert_eq!(configs.code, "29_1m");
        assert_eq!(configs.periods, ["1m", "6m"]);
        assert_eq!(configs.locations[0].country, "NL");
        assert_eq!(configs.locations[0].city, "ams");
        assert_eq!(configs.locations[1].country, "DE");
        assert_eq!(configs.locations[1].city, "");
        assert_eq!(configs.additions[0].max_quantity, Some(8));
        assert!(PlanConfigs::from_value("x", &json!([1])).is_err());
    }

    #[test]
    fn order_request_serialises_without_empty_parts() {
        let mut item = OrderItem::new_vps("29_6m", "ns-default-web-1");
        item.location = Some(OrderLocation { city: "ams".into() });
        item.options = Some(OrderOptions {
            ssh: SshOption {
                is_enabled: true,
                keys: vec!["12".into()],
            },
            vnc: VncOption { is_enabled: false },
        });
        item.additions = vec![
            Addition {
                category: "os".into(),
                code: Some("linux/debian12#64".into()),
                quantity: None,
            },
            Addition {
                category: "ip".into(),
                code: None,
                quantity: Some(4),
            },
        ];
        item.comment = Some("managed by operator".into());
        let order = OrderRequest {
            items: vec![item, OrderItem::new_vps("29_1m", "")],
            promos: Vec::new(),
        };
        let body = serde_json::to_value(&order).unwrap();
        assert_eq!(
            body,
            json!({"items": [
                {"action": "new", "identity": "ns-default-web-1", "type": "vps", "plan": "29_6m",
                 "location": {"city": "ams"}, "quantity": 1,
                 "options": {"ssh": {"is_enabled": true, "keys": ["12"]}, "vnc": {"is_enabled": false}},
                 "additions": [{"category": "os", "code": "linux/debian12#64"}, {"category": "ip", "quantity": 4}],
                 "comment": "managed by operator"},
                {"action": "new", "type": "vps", "plan": "29_1m", "quantity": 1}
            ]})
        );
        let read_back: OrderRequest = serde_json::from_value(body).unwrap();
        assert_eq!(read_back, order);
    }

    #[test]
    fn order_request_reads_numeric_ssh_key_ids() {
        let order: OrderRequest = serde_json::from_value(json!({"items": [
            {"action": "new", "type": "vps", "plan": "29_1m",
             "options": {"ssh": {"is_enabled": true, "keys": [7, "8"]}, "vnc": {"is_enabled": true}}}
        ], "promos": ["SPRING"]}))
        .unwrap();
        assert_eq!(order.items[0].quantity, 1);
        assert_eq!(
            order.items[0].options.as_ref().unwrap().ssh.keys,
            ["7", "8"]
        );
        assert_eq!(order.promos, ["SPRING"]);
    }

    #[test]
    fn quote_sums_item_totals() {
        let response = json!({
            "items": [
                {"action": "new", "identity": "a", "type": "vps", "quantity": 1,
                 "service": {"plan": {"name": "Lite", "code": "29_6m", "price": "30$"}},
                 "additions": [{"name": "X", "code": "X", "price": "ADDITION_PRICE"}],
                 "promos": [{"code": "P", "discount": "-7$"}],
                 "price": "60$", "once": "0$", "discount": "-10$", "total": "50$"},
                {"plan": "29_1m", "price": "10.25$", "once": "1$"}
            ],
            "promos": [{"code": "P", "discount": {"type": "static", "value": "20$"}}]
        });
        let quote: Quote = serde_json::from_value(response).unwrap();
        assert_eq!(quote.items.len(), 2);
        assert_eq!(quote.items[0].plan.as_deref(), Some("29_6m"));
        assert_eq!(quote.items[0].price, Some(usd(dec!(60))));
        assert_eq!(quote.items[0].discount, Some(usd(dec!(-10))));
        assert_eq!(quote.items[0].total, usd(dec!(50)));
        assert_eq!(quote.items[1].plan.as_deref(), Some("29_1m"));
        assert_eq!(quote.items[1].total, usd(dec!(11.25)));
        assert_eq!(quote.total, usd(dec!(61.25)));
    }

    #[test]
    fn quote_prefers_the_top_level_total() {
        let quote: Quote = serde_json::from_value(json!({
            "items": [{"total": "50$"}], "total": "45$"
        }))
        .unwrap();
        assert_eq!(quote.total, usd(dec!(45)));
    }

    #[test]
    fn quote_rejects_mixed_currencies_and_items_without_prices() {
        assert!(
            serde_json::from_value::<Quote>(json!({"items": [{"total": "5$"}, {"total": "5€"}]}))
                .is_err()
        );
        assert!(serde_json::from_value::<Quote>(json!({"items": [{"plan": "x"}]})).is_err());
        let empty: Quote = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty.total, Money::new(dec!(0), ""));
    }

    fn invoice_fixture() -> Value {
        json!({
            "id": 324534,
            "invoiced_at": 1700000000,
            "paid_at": null,
            "due_to": 1700259200,
            "total": "27.00$",
            "paid": "0$",
            "description": "VPS order",
            "status": {"name": "Unpaid", "code": "STATUS_UNPAID", "message": "ok"},
            "payer": ["Someone"],
            "services": [{
                "action": "new", "type": "vps", "quantity": 1,
                "period": {"start_at": 1700000000, "finish_at": 1715000000},
                "service": {
                    "id": "NL_12356212_3",
                    "plan": {"name": "Lite", "code": "29_6m", "price": "27$"},
                    "access": {"vnc": true, "ssh": true}
                },
                "options": {"ssh": {"is_enabled": true, "keys": ["1"]}},
                "price": "27$", "total": "27$",
                "comment": "ishosting-operator ns/web"
            }],
            "items": [{"description": "Lite", "price": "27$", "quantity": 1}],
            "transactions": []
        })
    }

    #[test]
    fn invoice_from_the_documented_shape() {
        let invoice: Invoice = serde_json::from_value(invoice_fixture()).unwrap();
        assert_eq!(
            invoice,
            Invoice {
                id: "324534".into(),
                status: InvoiceStatus::Unpaid,
                total: Some(usd(dec!(27.00))),
                due_to: Some("1700259200".into()),
                invoiced_at: Some("1700000000".into()),
                comment: Some("VPS order".into()),
                services: vec![InvoiceService {
                    id: "NL_12356212_3".into(),
                    comment: Some("ishosting-operator ns/web".into()),
                    identity: None,
                    action: Some("new".into()),
                }],
            }
        );
    }

    #[test]
    fn invoice_with_string_id_plain_status_and_identity() {
        let invoice: Invoice = serde_json::from_value(json!({
            "id": "99", "status": "paid", "total": 12.5, "comment": "c",
            "services": [{"id": 5, "identity": "abc"}, {}]
        }))
        .unwrap();
        assert_eq!(invoice.id, "99");
        assert_eq!(invoice.status, InvoiceStatus::Paid);
        assert_eq!(invoice.total, Some(Money::new(dec!(12.5), "")));
        assert_eq!(invoice.comment.as_deref(), Some("c"));
        assert_eq!(invoice.services[0].id, "5");
        assert_eq!(invoice.services[0].identity.as_deref(), Some("abc"));
        assert_eq!(invoice.services[1].id, "");
        let bare: Invoice = serde_json::from_value(json!({"id": 1})).unwrap();
        assert_eq!(bare.status, InvoiceStatus::Unknown(String::new()));
        assert!(bare.services.is_empty());
        assert!(serde_json::from_value::<Invoice>(json!({"status": "paid"})).is_err());
    }

    #[test]
    fn invoice_status_answers() {
        let full =
            json!({"id": 1, "status": {"name": "Paid", "code": "STATUS_PAID"}, "transactions": []});
        assert_eq!(
            invoice_status_from_value(&full).unwrap(),
            InvoiceStatus::Paid
        );
        assert_eq!(
            invoice_status_from_value(&json!({"status": "STATUS_CANCELED"})).unwrap(),
            InvoiceStatus::Cancelled
        );
        assert_eq!(
            invoice_status_from_value(&json!({"code": "STATUS_UNPAID", "name": "Unpaid"})).unwrap(),
            InvoiceStatus::Unpaid
        );
        assert_eq!(
            invoice_status_from_value(&json!("refunded")).unwrap(),
            InvoiceStatus::Refunded
        );
        assert!(invoice_status_from_value(&json!(5)).is_err());
        assert!(invoice_status_from_value(&json!({"status": {}})).is_err());
    }

    #[test]
    fn transactions_wrapped_and_bare() {
        let wrapped: Transaction = serde_json::from_value(json!({
            "transaction": {"type": "balance", "description": "Paid from client balance",
                            "total": "27$", "status": "TRANSACTION_SUCCESS"},
            "redirect": null
        }))
        .unwrap();
        assert_eq!(
            wrapped,
            Transaction {
                id: None,
                status: TransactionStatus::Success,
                message: Some("Paid from client balance".into()),
            }
        );
        let bare: Transaction = serde_json::from_value(
            json!({"id": 17, "status": {"code": "failed"}, "message": "no money"}),
        )
        .unwrap();
        assert_eq!(bare.id.as_deref(), Some("17"));
        assert_eq!(bare.status, TransactionStatus::Failed);
        assert_eq!(bare.message.as_deref(), Some("no money"));
    }

    #[test]
    fn pay_request_body() {
        let body = serde_json::to_value(PayRequest {
            balance: true,
            renew: false,
        })
        .unwrap();
        assert_eq!(body, json!({"balance": true, "renew": false}));
    }

    #[test]
    fn invoice_filter_query() {
        let filter = InvoiceFilter {
            status: Some("STATUS_UNPAID".into()),
            service_id: Some("NL_1".into()),
            from: Some("1700000000".into()),
            to: None,
            limit: Some(50),
            offset: Some(100),
        };
        let rendered: Vec<String> = filter
            .query_pairs()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            rendered,
            [
                "status=STATUS_UNPAID",
                "service=NL_1",
                "period[from]=1700000000",
                "limit=50",
                "offset=100"
            ]
        );
    }

    fn vps_fixture() -> Value {
        json!({
            "id": "NL_12356212_3",
            "name": "web-1",
            "tags": ["k8s", "managed"],
            "location": {"name": "Netherlands", "code": "NL", "variant": {"name": "Amsterdam", "code": "ams"}},
            "plan": {"name": "Lite", "code": "29_6m", "price": "27$",
                     "period": {"name": "6 months", "code": "PLAN_PERIOD_6_MONTH"},
                     "next_charge": 1715000000, "auto_renew": true, "total": "27$"},
            "platform": {"name": "Linux", "code": "PLATFORM_CODE_LINUX"},
            "network": {
                "public_ip": "192.0.2.10",
                "protocols": {
                    "ipv4": [
                        {"address": "192.0.2.10", "mask": "255.255.255.0", "gateway": "192.0.2.1", "is_main": true},
                        {"address": "192.0.2.11", "mask": "255.255.255.0", "gateway": "192.0.2.1", "is_main": false}
                    ],
                    "ipv6": [{"address": "2001:db8::10", "is_main": false}]
                }
            },
            "access": {
                "vnc": {"host": "192.0.2.200:5901", "password": "vnc-secret-value", "is_enabled": true},
                "ssh": {"users": [{"username": "root", "password": "root-secret-value", "is_enabled": true}],
                        "keys": [{"id": 1}]}
            },
            "status": {"name": "Running", "code": "STATUS_CODE_RUNNING", "message": "Uptime: 1 day",
                       "state": {"name": "Active", "code": "STATE_CODE_ACTIVE", "message": null}},
            "created_at": 1700000000
        })
    }

    #[test]
    fn vps_from_the_documented_shape() {
        let vps: Vps = serde_json::from_value(vps_fixture()).unwrap();
        assert_eq!(
            vps,
            Vps {
                id: "NL_12356212_3".into(),
                name: "web-1".into(),
                tags: vec!["k8s".into(), "managed".into()],
                status: ServiceStatus {
                    code: ServiceStatusCode::Running,
                    name: "Running".into(),
                    state: StateCode::Active,
                    state_name: "Active".into(),
                },
                plan_code: Some("29_6m".into()),
                auto_renew: Some(true),
                next_charge: Some("1715000000".into()),
                location: Some("NL".into()),
                public_ip: Some("192.0.2.10".into()),
                ipv4: vec!["192.0.2.10".into(), "192.0.2.11".into()],
                ipv6: vec!["2001:db8::10".into()],
            }
        );
    }

    #[test]
    fn vps_never_holds_the_access_passwords() {
        let vps: Vps = serde_json::from_value(vps_fixture()).unwrap();
        let debug = format!("{vps:?}");
        let serialised = serde_json::to_string(&vps).unwrap();
        for secret in ["vnc-secret-value", "root-secret-value"] {
            assert!(!debug.contains(secret));
            assert!(!serialised.contains(secret));
        }
    }

    #[test]
    fn vps_with_plain_words_and_missing_parts() {
        let vps: Vps = serde_json::from_value(json!({
            "id": 42, "tags": null, "status": {"code": "running", "state": {"code": "active"}},
            "plan": {"auto_renew": "false"}, "network": {"public_ip": null, "protocols": {"ipv4": 1}}
        }))
        .unwrap();
        assert_eq!(vps.id, "42");
        assert_eq!(vps.name, "");
        assert!(vps.tags.is_empty());
        assert_eq!(vps.status.code, ServiceStatusCode::Running);
        assert_eq!(vps.status.state, StateCode::Active);
        assert_eq!(vps.auto_renew, Some(false));
        assert_eq!(vps.plan_code, None);
        assert_eq!(vps.public_ip, None);
        assert!(vps.ipv4.is_empty());
        assert!(serde_json::from_value::<Vps>(json!({"name": "no id"})).is_err());
    }

    #[test]
    fn vps_flat_form_round_trips() {
        let vps: Vps = serde_json::from_value(vps_fixture()).unwrap();
        let flat = serde_json::to_value(&vps).unwrap();
        assert_eq!(serde_json::from_value::<Vps>(flat).unwrap(), vps);
    }

    #[test]
    fn vps_pages_bare_and_wrapped() {
        let bare: VpsPage = serde_json::from_value(json!([vps_fixture(), {"id": "DE_1"}])).unwrap();
        assert_eq!(bare.items.len(), 2);
        assert_eq!(bare.total, None);
        let wrapped: VpsPage =
            serde_json::from_value(json!({"items": [vps_fixture()], "total": 7})).unwrap();
        assert_eq!(wrapped.items.len(), 1);
        assert_eq!(wrapped.total, Some(7));
        let error =
            serde_json::from_value::<VpsPage>(json!([{"id": "ok"}, {"name": "bad"}])).unwrap_err();
        assert!(error.to_string().contains("missing field `id`"), "{error}");
        assert!(serde_json::from_value::<VpsPage>(json!({"nothing": 1})).is_err());
    }

    #[test]
    fn service_refs() {
        let refs: Vec<ServiceRef> = serde_json::from_value(json!([
            {"type": "vps", "name": "My vps", "id": "DE_12356212_3"},
            {"type": "dedicated", "name": null, "id": 77}
        ]))
        .unwrap();
        assert_eq!(
            refs,
            [
                ServiceRef {
                    service_type: "vps".into(),
                    name: "My vps".into(),
                    id: "DE_12356212_3".into()
                },
                ServiceRef {
                    service_type: "dedicated".into(),
                    name: String::new(),
                    id: "77".into()
                },
            ]
        );
    }

    #[test]
    fn vps_actions() {
        let all = [
            (VpsAction::Start, "start"),
            (VpsAction::Stop, "stop"),
            (VpsAction::Reboot, "reboot"),
            (VpsAction::Force, "force"),
            (VpsAction::Cancel, "cancel"),
        ];
        for (action, text) in all {
            assert_eq!(action.as_str(), text);
            assert_eq!(action.to_string(), text);
        }
    }

    #[test]
    fn vps_patch_always_sends_tags() {
        let patch = VpsPatch {
            name: None,
            tags: Vec::new(),
            auto_renew: Some(false),
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!({"tags": [], "plan": {"auto_renew": false}})
        );
        let patch = VpsPatch {
            name: Some("web-1".into()),
            tags: vec!["a".into()],
            auto_renew: None,
        };
        let body = serde_json::to_value(&patch).unwrap();
        assert_eq!(body, json!({"name": "web-1", "tags": ["a"]}));
        assert_eq!(serde_json::from_value::<VpsPatch>(body).unwrap(), patch);
    }

    #[test]
    fn list_responses_bare_and_wrapped() {
        let parse = |value: Value| serde_json::from_value::<ListResponse<u32>>(value);
        assert_eq!(parse(json!([1, 2])).unwrap().items, [1, 2]);
        let wrapped = parse(json!({"data": [1], "count": "9", "meta": {"x": 1}})).unwrap();
        assert_eq!(wrapped.items, [1]);
        assert_eq!(wrapped.total, Some(9));
        assert!(
            parse(json!({"items": null, "total": 0}))
                .unwrap()
                .items
                .is_empty()
        );
        assert!(parse(json!(null)).unwrap().items.is_empty());
        assert!(parse(json!("x")).is_err());
        assert!(parse(json!({"total": 3})).is_err());
    }

    #[test]
    fn money_sums() {
        let total =
            sum_money(&[usd(dec!(1.10)), Money::new(dec!(2), ""), usd(dec!(-0.10))]).unwrap();
        assert_eq!(total, usd(dec!(3.00)));
        assert!(sum_money(&[usd(dec!(1)), Money::new(dec!(1), "EUR")]).is_err());
    }
}

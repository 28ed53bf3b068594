//! Status and state codes of services, invoices and payments.
//!
//! The provider documents codes such as `STATUS_CODE_RUNNING`, but real responses have also
//! carried plain words (`running`, `Active`). Every parser here strips the documented prefix,
//! ignores case and maps both spellings of "cancelled". A code it does not know is kept in
//! the `Unknown` variant as received, so a new provider code never fails a whole response.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Lower-cases `raw` and strips the first of `prefixes` it starts with (case-insensitively).
fn normalise(raw: &str, prefixes: &[&str]) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    for prefix in prefixes {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    lower
}

/// Implements `parse`, `as_str`, `Display`, `FromStr` and string serde for a code enum whose
/// last variant is `Unknown(String)`. Each variant names its documented code and the
/// lower-case words (prefix stripped) that parse to it.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $name:ident, prefixes = [$($prefix:literal),*] {
            $($(#[$vmeta:meta])* $variant:ident = $code:literal: $($word:literal)|+),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A code this client does not know, kept exactly as received.
            Unknown(String),
        }

        impl $name {
            /// Parses any documented or observed spelling, case-insensitively. A code it does
            /// not know becomes `Unknown`.
            pub fn parse(raw: &str) -> Self {
                match normalise(raw, &[$($prefix),*]).as_str() {
                    $($($word)|+ => $name::$variant,)*
                    _ => $name::Unknown(raw.to_string()),
                }
            }

            /// Returns the provider's documented code; `Unknown` returns the text it was
            /// parsed from.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $code,)*
                    $name::Unknown(raw) => raw,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($name::parse(s))
            }
        }

        /// Serialises as the provider's documented code.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Ok($name::parse(&raw))
            }
        }
    };
}

code_enum! {
    /// The run status of a service (`status.code` of a VPS).
    ServiceStatusCode, prefixes = ["status_code_", "status_"] {
        Pending = "STATUS_CODE_PENDING": "pending",
        Running = "STATUS_CODE_RUNNING": "running",
        Paused = "STATUS_CODE_PAUSED": "paused",
        Suspended = "STATUS_CODE_SUSPENDED": "suspended",
        Stopped = "STATUS_CODE_STOPPED": "stopped",
        Canceled = "STATUS_CODE_CANCELED": "canceled" | "cancelled",
        Terminated = "STATUS_CODE_TERMINATED": "terminated",
        Starting = "STATUS_CODE_STARTING": "starting",
        Stopping = "STATUS_CODE_STOPPING": "stopping",
        Rebooting = "STATUS_CODE_REBOOTING": "rebooting",
        Activating = "STATUS_CODE_ACTIVATING": "activating",
        Rejected = "STATUS_CODE_REJECTED": "rejected",
        Installing = "STATUS_CODE_INSTALLING": "installing",
    }
}

code_enum! {
    /// The contract state of a service (`status.state.code` of a VPS).
    StateCode, prefixes = ["state_code_", "state_"] {
        Pending = "STATE_CODE_PENDING": "pending",
        Active = "STATE_CODE_ACTIVE": "active",
        Canceled = "STATE_CODE_CANCELED": "canceled" | "cancelled",
        Suspended = "STATE_CODE_SUSPENDED": "suspended",
        Terminated = "STATE_CODE_TERMINATED": "terminated",
        Rejected = "STATE_CODE_REJECTED": "rejected",
    }
}

code_enum! {
    /// The payment status of an invoice.
    ///
    /// NOTE: the provider also documents `STATUS_PENDING` for invoices. It parses to
    /// `Unknown("STATUS_PENDING")` (text as received) because this enum has no such variant.
    InvoiceStatus, prefixes = ["status_code_", "status_", "invoice_status_"] {
        Unpaid = "STATUS_UNPAID": "unpaid",
        Paid = "STATUS_PAID": "paid",
        Cancelled = "STATUS_CANCELLED": "cancelled" | "canceled",
        Refunded = "STATUS_REFUNDED": "refunded",
    }
}

code_enum! {
    /// The result of a payment attempt.
    TransactionStatus, prefixes = ["transaction_status_", "transaction_", "status_"] {
        Success = "TRANSACTION_SUCCESS": "success" | "successful" | "succeeded",
        Pending = "TRANSACTION_PENDING": "pending",
        Failed = "TRANSACTION_FAILED": "failed" | "failure",
    }
}

/// Run status and contract state of a service, as in `status` of a VPS record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// The run status code.
    pub code: ServiceStatusCode,
    /// The provider's human-readable run status (in the `Accept-Language` language).
    pub name: String,
    /// The contract state code.
    pub state: StateCode,
    /// The provider's human-readable state.
    pub state_name: String,
}

impl Default for ServiceStatus {
    /// An all-unknown status, used when a response carries none.
    fn default() -> Self {
        ServiceStatus {
            code: ServiceStatusCode::Unknown(String::new()),
            name: String::new(),
            state: StateCode::Unknown(String::new()),
            state_name: String::new(),
        }
    }
}

/// A `{code, name}` pair, or a bare code string.
#[derive(Deserialize)]
#[serde(untagged)]
enum CodeAndName {
    Text(String),
    Object {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        name: Option<String>,
    },
}

impl CodeAndName {
    fn into_parts(self) -> (String, String) {
        match self {
            CodeAndName::Text(text) => (text.clone(), text),
            CodeAndName::Object { code, name } => {
                let name = name.unwrap_or_default();
                (code.unwrap_or_else(|| name.clone()), name)
            }
        }
    }
}

/// Reads `{"name","code","state":{"name","code"}}`, a bare status string, or the flat form
/// this type serialises to (`state` a string plus `state_name`).
impl<'de> Deserialize<'de> for ServiceStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Object {
                #[serde(default)]
                code: Option<String>,
                #[serde(default)]
                name: Option<String>,
                #[serde(default)]
                state: Option<CodeAndName>,
                #[serde(default)]
                state_name: Option<String>,
            },
        }
        Ok(match Wire::deserialize(deserializer)? {
            Wire::Text(text) => ServiceStatus {
                code: ServiceStatusCode::parse(&text),
                name: text,
                ..ServiceStatus::default()
            },
            Wire::Object {
                code,
                name,
                state,
                state_name,
            } => {
                let name = name.unwrap_or_default();
                let code = code.unwrap_or_else(|| name.clone());
                let (state_code, nested_name) =
                    state.map(CodeAndName::into_parts).unwrap_or_default();
                ServiceStatus {
                    code: ServiceStatusCode::parse(&code),
                    name,
                    state: StateCode::parse(&state_code),
                    state_name: state_name.unwrap_or(nested_name),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_status_codes_in_all_forms() {
        use ServiceStatusCode as S;
        let cases = [
            ("STATUS_CODE_RUNNING", S::Running),
            ("running", S::Running),
            ("Running", S::Running),
            ("RUNNING", S::Running),
            ("status_code_stopped", S::Stopped),
            ("STATUS_CODE_CANCELED", S::Canceled),
            ("cancelled", S::Canceled),
            ("STATUS_CODE_CANCELLED", S::Canceled),
            ("Pending", S::Pending),
            ("paused", S::Paused),
            ("SUSPENDED", S::Suspended),
            ("terminated", S::Terminated),
            ("Starting", S::Starting),
            ("stopping", S::Stopping),
            ("STATUS_CODE_REBOOTING", S::Rebooting),
            ("activating", S::Activating),
            ("rejected", S::Rejected),
            (" installing ", S::Installing),
        ];
        for (raw, expected) in cases {
            assert_eq!(S::parse(raw), expected, "{raw}");
        }
        assert_eq!(
            S::parse("STATUS_CODE_MIGRATING"),
            S::Unknown("STATUS_CODE_MIGRATING".into())
        );
        assert_eq!(S::parse(""), S::Unknown(String::new()));
        assert_eq!(S::Running.as_str(), "STATUS_CODE_RUNNING");
    }

    #[test]
    fn state_codes_in_all_forms() {
        use StateCode as S;
        for (raw, expected) in [
            ("STATE_CODE_ACTIVE", S::Active),
            ("active", S::Active),
            ("Active", S::Active),
            ("STATE_CODE_PENDING", S::Pending),
            ("canceled", S::Canceled),
            ("Cancelled", S::Canceled),
            ("STATE_CODE_SUSPENDED", S::Suspended),
            ("terminated", S::Terminated),
            ("REJECTED", S::Rejected),
        ] {
            assert_eq!(S::parse(raw), expected, "{raw}");
        }
        assert_eq!(S::parse("frozen"), S::Unknown("frozen".into()));
    }

    #[test]
    fn invoice_statuses_in_all_forms() {
        use InvoiceStatus as S;
        for (raw, expected) in [
            ("STATUS_UNPAID", S::Unpaid),
            ("unpaid", S::Unpaid),
            ("Paid", S::Paid),
            ("STATUS_PAID", S::Paid),
            ("STATUS_CANCELED", S::Cancelled),
            ("STATUS_CANCELLED", S::Cancelled),
            ("cancelled", S::Cancelled),
            ("Refunded", S::Refunded),
        ] {
            assert_eq!(S::parse(raw), expected, "{raw}");
        }
        assert_eq!(
            S::parse("STATUS_PENDING"),
            S::Unknown("STATUS_PENDING".into())
        );
    }

    #[test]
    fn transaction_statuses_in_all_forms() {
        use TransactionStatus as S;
        for (raw, expected) in [
            ("TRANSACTION_SUCCESS", S::Success),
            ("success", S::Success),
            ("Success", S::Success),
            ("TRANSACTION_PENDING", S::Pending),
            ("pending", S::Pending),
            ("TRANSACTION_FAILED", S::Failed),
            ("failed", S::Failed),
        ] {
            assert_eq!(S::parse(raw), expected, "{raw}");
        }
        assert_eq!(S::parse("REVERSED"), S::Unknown("REVERSED".into()));
    }

    #[test]
    fn codes_serialise_in_provider_form_and_read_back() {
        let text = serde_json::to_string(&ServiceStatusCode::Running).unwrap();
        assert_eq!(text, "\"STATUS_CODE_RUNNING\"");
        assert_eq!(
            serde_json::from_str::<ServiceStatusCode>(&text).unwrap(),
            ServiceStatusCode::Running
        );
        let text = serde_json::to_string(&InvoiceStatus::Cancelled).unwrap();
        assert_eq!(text, "\"STATUS_CANCELLED\"");
        assert_eq!(
            serde_json::to_string(&TransactionStatus::Success).unwrap(),
            "\"TRANSACTION_SUCCESS\""
        );
    }

    #[test]
    fn service_status_from_the_nested_form() {
        let status: ServiceStatus = serde_json::from_str(
            r#"{"name":"Running","code":"STATUS_CODE_RUNNING","message":"Uptime: 1 day",
                "cpu":{"value":"0.1%","message":null},
                "state":{"name":"Active","code":"STATE_CODE_ACTIVE","message":null}}"#,
        )
        .unwrap();
        assert_eq!(
            status,
            ServiceStatus {
                code: ServiceStatusCode::Running,
                name: "Running".into(),
                state: StateCode::Active,
                state_name: "Active".into(),
            }
        );
    }

    #[test]
    fn service_status_from_plain_words_and_flat_form() {
        let status: ServiceStatus =
            serde_json::from_str(r#"{"code":"stopped","state":"active"}"#).unwrap();
        assert_eq!(status.code, ServiceStatusCode::Stopped);
        assert_eq!(status.state, StateCode::Active);
        assert_eq!(status.state_name, "active");

        let status: ServiceStatus = serde_json::from_str(r#""Running""#).unwrap();
        assert_eq!(status.code, ServiceStatusCode::Running);
        assert_eq!(status.state, StateCode::Unknown(String::new()));

        let original = ServiceStatus {
            code: ServiceStatusCode::Paused,
            name: "Paused".into(),
            state: StateCode::Suspended,
            state_name: "Suspended".into(),
        };
        let text = serde_json::to_string(&original).unwrap();
        assert_eq!(
            serde_json::from_str::<ServiceStatus>(&text).unwrap(),
            original
        );
    }
}

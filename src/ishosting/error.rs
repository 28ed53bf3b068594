//! Errors of the is*hosting API client and the mapping from HTTP responses to them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The longest `Retry-After` the client sleeps for itself; a longer one is returned to the
/// caller as [`ApiError::RateLimited`].
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The wait suggested after a challenge page that names none: the provider's wider budget
/// window is 60 s.
const CHALLENGE_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Maximum length of a provider message kept in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// A failed call to the provider's API.
///
/// Messages are plain English, carry the provider's own message, and never contain the API
/// key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The key was rejected (HTTP 401) or lacks rights (HTTP 403 with a JSON body).
    #[error("credentials rejected (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },

    /// The provider rejected the request body or parameters (HTTP 400), with per-field reasons.
    #[error("validation failed: {}", validation_text(message, fields))]
    Validation {
        message: String,
        fields: BTreeMap<String, String>,
    },

    /// HTTP 404.
    #[error("not found: {message}")]
    NotFound { message: String },

    /// HTTP 409.
    #[error("conflict: {message}")]
    Conflict { message: String },

    /// HTTP 429, or a non-JSON page such as a Cloudflare challenge on any status.
    #[error("rate limited: {detail}{}", retry_text(retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        detail: String,
    },

    /// The provider failed (HTTP 5xx, or another status this client does not map).
    #[error("provider error (HTTP {status}): {message}")]
    Provider { status: u16, message: String },

    /// The request could not be sent or its response not read, for a call that is safe to repeat.
    #[error("transport error: {detail}")]
    Transport { detail: String },

    /// `order` or `pay` failed after the request may have reached the provider: the order
    /// or payment may or may not exist. Look it up before trying again.
    #[error("outcome of {operation} unknown: {detail}")]
    OutcomeUnknown {
        operation: &'static str,
        detail: String,
    },

    /// A JSON response of an unexpected shape.
    #[error("unexpected response from the provider: {detail}")]
    Decode { detail: String },

    /// A caller error caught before anything was sent.
    #[error("invalid input: {detail}")]
    InvalidInput { detail: String },
}

/// The kind of reaction an [`ApiError`] calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Trying again later may succeed.
    Transient,
    /// A person has to change something (key, input, account) first.
    NeedsUser,
    /// A money-moving call may have happened: reconcile before repeating it.
    OutcomeUnknown,
}

impl ApiError {
    /// Returns a stable PascalCase name for conditions, events and metrics labels.
    pub fn category(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } => "CredentialsRejected",
            ApiError::Validation { .. } => "ValidationFailed",
            ApiError::NotFound { .. } => "NotFound",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::RateLimited { .. } => "RateLimited",
            ApiError::Provider { .. } => "ProviderError",
            ApiError::Transport { .. } => "TransportError",
            ApiError::OutcomeUnknown { .. } => "OutcomeUnknown",
            ApiError::Decode { .. } => "DecodeError",
            ApiError::InvalidInput { .. } => "InvalidInput",
        }
    }

    /// Returns how a caller should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::RateLimited { .. }
            | ApiError::Provider { .. }
            | ApiError::Transport { .. }
            | ApiError::Decode { .. }
            // The provider returns 409 while another order of the account is in progress.
            | ApiError::Conflict { .. } => ErrorClass::Transient,
            ApiError::Unauthorized { .. }
            | ApiError::Validation { .. }
            | ApiError::NotFound { .. }
            | ApiError::InvalidInput { .. } => ErrorClass::NeedsUser,
            ApiError::OutcomeUnknown { .. } => ErrorClass::OutcomeUnknown,
        }
    }

    /// Returns the wait the provider asked for, for [`ApiError::RateLimited`] only.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Reports whether this is [`ApiError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::NotFound { .. })
    }
}

fn validation_text(message: &str, fields: &BTreeMap<String, String>) -> String {
    let mut text = if message.is_empty() {
        "the provider gave no reason".to_string()
    } else {
        message.to_string()
    };
    // A field reason that repeats the message adds nothing but noise.
    let parts: Vec<String> = fields
        .iter()
        .filter(|(_, why)| why.trim() != message.trim())
        .map(|(field, why)| format!("{field}: {why}"))
        .collect();
    if !parts.is_empty() {
        text.push_str(&format!(" ({})", parts.join("; ")));
    }
    text
}

fn retry_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(" (retry after {} s)", wait.as_secs()),
        None => String::new(),
    }
}

/// The provider's error body: `{"status": 400, "message": "...", "data": {"field": "why"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// The parts of an HTTP response that decide which error it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseParts<'a> {
    pub status: u16,
    /// The `Retry-After` header, already parsed.
    pub retry_after: Option<Duration>,
    pub content_type: Option<&'a str>,
    /// True when Cloudflare marked the response as a challenge (`cf-mitigated: challenge`).
    pub cf_challenge: bool,
    pub body: &'a [u8],
}

impl ResponseParts<'_> {
    /// Reports whether the body is a web page or other non-JSON text instead of an API response.
    pub fn is_non_json_page(&self) -> bool {
        if self.cf_challenge {
            return true;
        }
        let trimmed = self.body.trim_ascii_start();
        if trimmed.first() == Some(&b'<') {
            return true;
        }
        let html_type = self
            .content_type
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("text/html"));
        html_type
            || (!trimmed.is_empty()
                && serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_err())
    }

    /// Reports whether the page has the marks of a Cloudflare challenge.
    pub fn looks_like_challenge(&self) -> bool {
        if self.cf_challenge {
            return true;
        }
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(64 * 1024)]);
        let lower = text.to_ascii_lowercase();
        [
            "challenge-platform",
            "cf-chl",
            "just a moment",
            "cf_chl",
            "attention required",
        ]
        .iter()
        .any(|mark| lower.contains(mark))
    }
}

/// Maps a non-success response, or a success response whose body is a web page, to an error.
///
/// A web page (non-JSON body) on any status is taken as a Cloudflare challenge and becomes
/// [`ApiError::RateLimited`], except a 5xx page without challenge marks, which is a
/// [`ApiError::Provider`] outage page.
pub(crate) fn error_from_response(response: &ResponseParts<'_>) -> ApiError {
    let status = response.status;
    if response.is_non_json_page() {
        if status >= 500 && !response.looks_like_challenge() {
            return ApiError::Provider {
                status,
                message: "the provider responded with a web page instead of JSON".into(),
            };
        }
        return ApiError::RateLimited {
            retry_after: response.retry_after.or(Some(CHALLENGE_RETRY_AFTER)),
            detail: format!(
                "the provider responded HTTP {status} with a web page instead of JSON \
                 (likely a Cloudflare challenge after too many requests)"
            ),
        };
    }

    let (message, fields) = parse_error_body(response.body);
    let message = if message.is_empty() {
        default_reason(status).to_string()
    } else {
        message
    };
    match status {
        400 | 422 => ApiError::Validation { message, fields },
        401 | 403 => ApiError::Unauthorized { status, message },
        404 => ApiError::NotFound { message },
        409 => ApiError::Conflict { message },
        429 => ApiError::RateLimited {
            retry_after: response.retry_after,
            detail: message,
        },
        _ => ApiError::Provider { status, message },
    }
}

fn default_reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("no message")
}

/// Extracts the message and per-field reasons from a JSON error body; an empty or
/// unexpected body gives an empty message.
fn parse_error_body(body: &[u8]) -> (String, BTreeMap<String, String>) {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return (String::new(), BTreeMap::new());
    };
    let message = parsed
        .message
        .or(parsed.error)
        .map(|value| value_text(&value))
        .unwrap_or_default();
    let mut fields = BTreeMap::new();
    if let Some(serde_json::Value::Object(map)) = parsed.data {
        for (field, why) in map {
            fields.insert(field, truncate(value_text(&why)));
        }
    }
    (truncate(message), fields)
}

/// Renders a JSON value as text: a string as itself, a list of strings joined by "; ".
fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(value_text)
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

fn truncate(text: String) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        text
    } else {
        let mut cut: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        cut.push('…');
        cut
    }
}

/// Parses `Retry-After` as whole seconds or as an HTTP date (relative to `now`).
pub(crate) fn parse_retry_after(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(status: u16, body: &str) -> ResponseParts<'_> {
        ResponseParts {
            status,
            retry_after: None,
            content_type: Some("application/json"),
            cf_challenge: false,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn validation_error_with_fields() {
        let error = error_from_response(&parts(
            400,
            r#"{"status":400,"message":"Insufficient funds","data":{"balance":"not enough money"}}"#,
        ));
        assert_eq!(
            error,
            ApiError::Validation {
                message: "Insufficient funds".into(),
                fields: BTreeMap::from([("balance".into(), "not enough money".into())]),
            }
        );
        assert_eq!(
            error.to_string(),
            "validation failed: Insufficient funds (balance: not enough money)"
        );
        assert_eq!(error.category(), "ValidationFailed");
        assert_eq!(error.class(), ErrorClass::NeedsUser);
    }

    #[test]
    fn validation_error_with_many_and_list_fields() {
        let error = error_from_response(&parts(
            400,
            r#"{"status":400,"message":"bad","data":{"plan":["unknown","retired"],"city":"no such city","qty":3}}"#,
        ));
        assert_eq!(
            error.to_string(),
            "validation failed: bad (city: no such city; plan: unknown; retired; qty: 3)"
        );
    }

    #[test]
    fn plain_bad_request_without_data() {
        let error = error_from_response(&parts(400, r#"{"status":400,"message":"Bad Request"}"#));
        assert_eq!(
            error,
            ApiError::Validation {
                message: "Bad Request".into(),
                fields: BTreeMap::new()
            }
        );
    }

    #[test]
    fn unauthorized_and_forbidden_json() {
        let error = error_from_response(&parts(401, r#"{"status":401,"message":"Unauthorized"}"#));
        assert_eq!(
            error,
            ApiError::Unauthorized {
                status: 401,
                message: "Unauthorized".into()
            }
        );
        assert_eq!(error.category(), "CredentialsRejected");
        let error = error_from_response(&parts(403, r#"{"status":403,"message":"Forbidden"}"#));
        assert_eq!(
            error,
            ApiError::Unauthorized {
                status: 403,
                message: "Forbidden".into()
            }
        );
        assert_eq!(error.class(), ErrorClass::NeedsUser);
    }

    #[test]
    fn forbidden_html_challenge_is_rate_limited() {
        let page = "<!DOCTYPE html><html><head><title>Just a moment...</title></head>\
                    <body><script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate\"></script></body></html>";
        let error = error_from_response(&ResponseParts {
            status: 403,
            retry_after: None,
            content_type: Some("text/html; charset=UTF-8"),
            cf_challenge: true,
            body: page.as_bytes(),
        });
        assert!(matches!(error, ApiError::RateLimited { .. }), "{error:?}");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
        assert_eq!(error.class(), ErrorClass::Transient);
        assert!(!error.to_string().contains("<html"), "{error}");
    }

    #[test]
    fn html_page_on_success_status_is_rate_limited() {
        let error = error_from_response(&ResponseParts {
            status: 200,
            retry_after: None,
            content_type: Some("text/html"),
            cf_challenge: false,
            body: b"<html><body>Please wait</body></html>",
        });
        assert_eq!(error.category(), "RateLimited");
    }

    #[test]
    fn too_many_requests_keeps_retry_after() {
        let error = error_from_response(&ResponseParts {
            retry_after: Some(Duration::from_secs(30)),
            ..parts(429, r#"{"status":429,"message":"Too many requests"}"#)
        });
        assert_eq!(
            error,
            ApiError::RateLimited {
                retry_after: Some(Duration::from_secs(30)),
                detail: "Too many requests".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "rate limited: Too many requests (retry after 30 s)"
        );
        let error = error_from_response(&parts(429, ""));
        assert_eq!(error.retry_after(), None);
        assert_eq!(error.to_string(), "rate limited: Too Many Requests");
    }

    #[test]
    fn server_errors() {
        let error = error_from_response(&parts(500, r#"{"status":500,"message":"boom"}"#));
        assert_eq!(
            error,
            ApiError::Provider {
                status: 500,
                message: "boom".into()
            }
        );
        assert_eq!(error.category(), "ProviderError");
        assert_eq!(error.class(), ErrorClass::Transient);
        let error = error_from_response(&ResponseParts {
            content_type: Some("text/html"),
            ..parts(502, "<html><body>Bad gateway</body></html>")
        });
        assert!(
            matches!(error, ApiError::Provider { status: 502, .. }),
            "{error:?}"
        );
        let error = error_from_response(&parts(503, ""));
        assert_eq!(
            error.to_string(),
            "provider error (HTTP 503): Service Unavailable"
        );
    }

    #[test]
    fn not_found_and_conflict() {
        let error = error_from_response(&parts(404, r#"{"status":404,"message":"Not Found"}"#));
        assert!(error.is_not_found());
        assert_eq!(error.category(), "NotFound");
        let error = error_from_response(&parts(409, r#"{"status":409}"#));
        assert_eq!(
            error,
            ApiError::Conflict {
                message: "Conflict".into()
            }
        );
    }

    #[test]
    fn plain_text_client_error_is_rate_limited() {
        let error = error_from_response(&ResponseParts {
            content_type: Some("text/plain"),
            ..parts(403, "error code: 1015")
        });
        assert_eq!(error.category(), "RateLimited");
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(2000);
        let error = error_from_response(&parts(404, &format!(r#"{{"message":"{long}"}}"#)));
        assert!(error.to_string().len() < 600);
    }

    #[test]
    fn retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Wed, 01 Jan 2025 00:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Tue, 31 Dec 2024 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn every_category_and_class() {
        let cases = [
            (
                ApiError::Transport { detail: "x".into() },
                "TransportError",
                ErrorClass::Transient,
            ),
            (
                ApiError::Decode { detail: "x".into() },
                "DecodeError",
                ErrorClass::Transient,
            ),
            (
                ApiError::OutcomeUnknown {
                    operation: "order",
                    detail: "timed out".into(),
                },
                "OutcomeUnknown",
                ErrorClass::OutcomeUnknown,
            ),
            (
                ApiError::InvalidInput { detail: "x".into() },
                "InvalidInput",
                ErrorClass::NeedsUser,
            ),
        ];
        for (error, category, class) in cases {
            assert_eq!(error.category(), category);
            assert_eq!(error.class(), class);
            assert_eq!(error.retry_after(), None);
        }
    }
}

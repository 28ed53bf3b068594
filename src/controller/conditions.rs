//! metav1 Conditions of an `IsHostingVps`. Pure: no client is needed here.
//!
//! A condition keeps its `lastTransitionTime` while its status stays the same, so an
//! unchanged condition compares equal and the status is not rewritten.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// True when the server runs.
pub const READY: &str = "Ready";
/// True once the provider priced the order.
pub const QUOTED: &str = "Quoted";
/// True once the order was placed and its invoice id recorded.
pub const ORDERED: &str = "Ordered";
/// True once the invoice is paid.
pub const PAID: &str = "Paid";
/// True while progress needs a person: a missing Secret, a rejected key, an invalid order,
/// insufficient balance.
pub const STALLED: &str = "Stalled";

/// Condition status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Sets condition `type_` in `conditions`, keeping the previous transition time when the
/// status did not change. The message is capped at 32 KiB, the API server's limit.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    generation: i64,
    now: DateTime<Utc>,
) {
    let message = truncate(message, 32 * 1024);
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let transition_time = match previous {
        Some(index) if conditions[index].status == status.as_str() => {
            conditions[index].last_transition_time.clone()
        }
        _ => to_time(now),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: Some(generation),
        last_transition_time: transition_time,
    };
    match previous {
        Some(index) => conditions[index] = condition,
        None => conditions.push(condition),
    }
}

/// Sets conditions of one status, all at the same generation and time.
pub struct Updater<'a> {
    list: &'a mut Vec<Condition>,
    generation: i64,
    now: DateTime<Utc>,
}

impl<'a> Updater<'a> {
    pub fn new(list: &'a mut Vec<Condition>, generation: i64, now: DateTime<Utc>) -> Self {
        Updater {
            list,
            generation,
            now,
        }
    }

    /// Sets condition `type_`, as [`set`] does.
    pub fn set(&mut self, type_: &str, status: Status, reason: &str, message: &str) {
        set(
            self.list,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now,
        );
    }

    /// Returns condition `type_` if present.
    pub fn find(&self, type_: &str) -> Option<&Condition> {
        find(self.list, type_)
    }
}

/// Returns condition `type_` if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Returns true when condition `type_` has status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

fn to_time(now: DateTime<Utc>) -> Time {
    // Conditions carry whole seconds on the wire. Dropping the fraction here keeps a
    // freshly built condition equal to the one read back from the API server.
    let timestamp =
        jiff::Timestamp::from_second(now.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Time(timestamp)
}

fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn same_status_keeps_transition_time() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            READY,
            Status::False,
            "Ordered",
            "a",
            1,
            at(0),
        );
        set(
            &mut conditions,
            READY,
            Status::False,
            "Paid",
            "b",
            1,
            at(60),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "Paid");
        assert_eq!(
            conditions[0].last_transition_time.0.as_second(),
            at(0).timestamp()
        );
    }

    #[test]
    fn new_status_moves_transition_time() {
        let mut conditions = Vec::new();
        set(&mut conditions, READY, Status::False, "Paid", "", 1, at(0));
        set(
            &mut conditions,
            READY,
            Status::True,
            "Running",
            "",
            2,
            at(60),
        );
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(
            conditions[0].last_transition_time.0.as_second(),
            at(60).timestamp()
        );
    }

    #[test]
    fn unchanged_condition_compares_equal() {
        let mut first = Vec::new();
        set(&mut first, PAID, Status::True, "InvoicePaid", "x", 1, at(0));
        let mut second = first.clone();
        set(
            &mut second,
            PAID,
            Status::True,
            "InvoicePaid",
            "x",
            1,
            at(300),
        );
        assert_eq!(first, second);
    }

    #[test]
    fn long_message_is_cut_on_char_boundary() {
        let text = "é".repeat(20_000);
        let cut = truncate(&text, 32 * 1024);
        assert!(cut.len() <= 32 * 1024);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn is_true_reads_status() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            STALLED,
            Status::True,
            "SecretNotFound",
            "",
            1,
            at(0),
        );
        assert!(is_true(&conditions, STALLED));
        assert!(!is_true(&conditions, READY));
    }
}

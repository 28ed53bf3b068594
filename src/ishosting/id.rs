//! Serde helpers for ids that the provider sends as a JSON number in some responses and as a
//! string in others (invoice, service and SSH key ids). Every id becomes a `String`.
//!
//! ```
//! #[derive(serde::Deserialize)]
//! struct Invoice {
//!     #[serde(deserialize_with = "ishosting_operator::ishosting::id::string_or_number")]
//!     id: String,
//! }
//! let invoice: Invoice = serde_json::from_str(r#"{"id": 324534}"#).unwrap();
//! assert_eq!(invoice.id, "324534");
//! ```

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::fmt;

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id as a string or an integer")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        // An integral float such as `324534.0` is still an id; a fraction is not.
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
            Ok(format!("{v:.0}"))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// Deserialises a required id from a JSON string or integer.
pub fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(IdVisitor)
}

/// Deserialises an optional id: `null` and a missing field (with `#[serde(default)]`) give
/// `None`, and so does an empty string.
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct OptionalVisitor;

    impl<'de> Visitor<'de> for OptionalVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an id as a string or an integer, or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            string_or_number(d).map(|id| Some(id).filter(|id| !id.is_empty()))
        }
    }

    deserializer.deserialize_option(OptionalVisitor)
}

/// Deserialises a list of ids, each a JSON string or integer; `null` gives an empty list.
pub fn list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of ids")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut ids = Vec::new();
            while let Some(Id(id)) = seq.next_element::<Id>()? {
                ids.push(id);
            }
            Ok(ids)
        }
    }

    deserializer.deserialize_any(ListVisitor)
}

/// One lenient id, for use inside collections.
struct Id(String);

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        string_or_number(deserializer).map(Id)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Record {
        #[serde(deserialize_with = "super::string_or_number")]
        id: String,
        #[serde(default, deserialize_with = "super::optional")]
        parent: Option<String>,
        #[serde(default, deserialize_with = "super::list")]
        keys: Vec<String>,
    }

    fn parse(text: &str) -> Result<Record, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn accepts_strings_and_integers() {
        assert_eq!(
            parse(r#"{"id":"NL_12356212_3"}"#).unwrap().id,
            "NL_12356212_3"
        );
        assert_eq!(parse(r#"{"id":324534}"#).unwrap().id, "324534");
        assert_eq!(parse(r#"{"id":-5}"#).unwrap().id, "-5");
        assert_eq!(parse(r#"{"id":324534.0}"#).unwrap().id, "324534");
    }

    #[test]
    fn rejects_other_shapes() {
        assert!(parse(r#"{"id":1.5}"#).is_err());
        assert!(parse(r#"{"id":true}"#).is_err());
        assert!(parse(r#"{"id":null}"#).is_err());
        assert!(parse(r#"{"id":{"x":1}}"#).is_err());
        assert!(parse(r#"{}"#).is_err());
    }

    #[test]
    fn optional_ids() {
        assert_eq!(parse(r#"{"id":1}"#).unwrap().parent, None);
        assert_eq!(parse(r#"{"id":1,"parent":null}"#).unwrap().parent, None);
        assert_eq!(parse(r#"{"id":1,"parent":""}"#).unwrap().parent, None);
        assert_eq!(
            parse(r#"{"id":1,"parent":77}"#).unwrap().parent.as_deref(),
            Some("77")
        );
        assert_eq!(
            parse(r#"{"id":1,"parent":"a"}"#).unwrap().parent.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn id_lists_mix_forms() {
        let record = parse(r#"{"id":1,"keys":[12,"SSH_KEY_ID_2"]}"#).unwrap();
        assert_eq!(record.keys, ["12", "SSH_KEY_ID_2"]);
        assert!(parse(r#"{"id":1,"keys":null}"#).unwrap().keys.is_empty());
        assert!(parse(r#"{"id":1,"keys":[false]}"#).is_err());
    }
}

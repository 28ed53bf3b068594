//! Money amounts as the provider writes them: `"20$"`, `"10.50$"`, `"€5"`, `"10.50 USD"`
//! or a bare JSON number.
//!
//! Amounts are parsed from their text into a fixed-point [`Decimal`], never through a float.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of money and its ISO 4217 currency code.
///
/// `currency` is empty when the provider sent a bare number; the caller decides the default.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Money {
    /// The amount, with the scale the provider wrote (`10.50` keeps two decimals).
    pub amount: Decimal,
    /// Upper-case ISO 4217 code such as `USD`, or empty when none was given.
    pub currency: String,
}

/// The reason a money string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid money amount {input:?}: {reason}")]
pub struct MoneyError {
    /// The text that was rejected, cut to 64 characters.
    pub input: String,
    /// The problem found.
    pub reason: &'static str,
}

impl MoneyError {
    fn new(input: &str, reason: &'static str) -> Self {
        MoneyError {
            input: input.chars().take(64).collect(),
            reason,
        }
    }
}

/// Currency signs the provider uses, and their ISO codes.
const SIGNS: [(char, &str); 4] = [('$', "USD"), ('€', "EUR"), ('₽', "RUB"), ('£', "GBP")];

impl Money {
    /// Creates an amount in the given currency.
    pub fn new(amount: Decimal, currency: impl Into<String>) -> Self {
        Money {
            amount,
            currency: currency.into(),
        }
    }

    /// Parses `"20$"`, `"10.50$"`, `"$10.50"`, `"-7$"`, `"10.50 USD"`, `"USD 10.50"`, `"€5"`
    /// or a bare number such as `"12.5"` (currency then empty).
    ///
    /// A sign (`$`, `€`, `₽`, `£`) becomes its ISO code; a three-letter code is kept in upper
    /// case. Anything else, including an empty string, two currencies or a malformed number,
    /// is an error.
    pub fn parse(input: &str) -> Result<Money, MoneyError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(MoneyError::new(input, "empty"));
        }
        let mut currency: Option<String> = None;
        let mut number = String::with_capacity(text.len());
        let mut letters = String::new();
        for ch in text.chars() {
            if let Some((_, code)) = SIGNS.iter().find(|(sign, _)| *sign == ch) {
                if currency.is_some() {
                    return Err(MoneyError::new(input, "more than one currency"));
                }
                currency = Some((*code).to_string());
            } else if ch.is_ascii_alphabetic() {
                letters.push(ch.to_ascii_uppercase());
            } else if ch.is_ascii_digit() || matches!(ch, '.' | '-' | '+') {
                number.push(ch);
            } else if !ch.is_whitespace() {
                return Err(MoneyError::new(input, "unexpected character"));
            }
        }
        if !letters.is_empty() {
            // Only a whole three-letter code may stand before or after the number.
            let is_code = letters.len() == 3
                && (text.starts_with(|c: char| c.is_ascii_alphabetic())
                    || text.ends_with(|c: char| c.is_ascii_alphabetic()));
            if !is_code || currency.is_some() || !letters_contiguous(text) {
                return Err(MoneyError::new(input, "not a three-letter currency code"));
            }
            currency = Some(letters);
        }
        let amount = parse_decimal(&number).ok_or_else(|| MoneyError::new(input, "bad number"))?;
        Ok(Money {
            amount,
            currency: currency.unwrap_or_default(),
        })
    }

    /// Returns this amount with `currency` filled in when it is empty.
    pub fn or_currency(mut self, currency: &str) -> Money {
        if self.currency.is_empty() {
            self.currency = currency.to_string();
        }
        self
    }
}

/// Reports whether the letters of `text` form one run (so `"10 U S D"` is rejected).
fn letters_contiguous(text: &str) -> bool {
    let trimmed = text.trim_matches(|c: char| !c.is_ascii_alphabetic());
    trimmed.chars().all(|c| c.is_ascii_alphabetic())
}

/// Parses a plain decimal, allowing an exponent as JSON numbers may carry one.
fn parse_decimal(text: &str) -> Option<Decimal> {
    if text.is_empty() || !text.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    // A sign may only lead; "1-2" or "--1" are not numbers.
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    if body.contains(['-', '+']) {
        return None;
    }
    let body = text.strip_prefix('+').unwrap_or(text);
    Decimal::from_str_exact(body).ok()
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse(s)
    }
}

/// Formats as `10.50 USD`, or only the amount when the currency is empty.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.currency.is_empty() {
            write!(f, "{}", self.amount)
        } else {
            write!(f, "{} {}", self.amount, self.currency)
        }
    }
}

/// Serialises as the [`Display`](fmt::Display) string, which [`Money::parse`] reads back.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(serde_json::Number),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => Money::parse(&text).map_err(serde::de::Error::custom),
            Raw::Number(number) => from_json_number(&number).map_err(serde::de::Error::custom),
        }
    }
}

/// Converts a JSON number through its text form, so `10.1` stays exactly `10.1`.
///
/// NOTE: without serde_json's `arbitrary_precision` feature a JSON fraction is held as an
/// f64 and its text is the shortest form that reads back to the same f64. That recovers what
/// the provider wrote for amounts with up to 15 significant digits.
pub fn from_json_number(number: &serde_json::Number) -> Result<Money, MoneyError> {
    let text = number.to_string();
    let amount = if text.contains(['e', 'E']) {
        Decimal::from_scientific(&text).ok()
    } else {
        Decimal::from_str_exact(&text).ok()
    };
    amount
        .map(|amount| Money::new(amount, ""))
        .ok_or_else(|| MoneyError::new(&text, "number out of range"))
}

/// Serde helper for `Option<Money>` fields that tolerates `null`, an empty string and a
/// missing field (all `None`). Use with `#[serde(default, deserialize_with = ...)]`.
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Money>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(serde_json::Number),
    }
    match Option::<Raw>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Raw::Text(text)) if text.trim().is_empty() => Ok(None),
        Some(Raw::Text(text)) => Money::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(Raw::Number(number)) => from_json_number(&number)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn money(amount: Decimal, currency: &str) -> Money {
        Money::new(amount, currency)
    }

    #[test]
    fn parses_provider_forms() {
        assert_eq!(Money::parse("20$").unwrap(), money(dec!(20), "USD"));
        assert_eq!(Money::parse("10.50$").unwrap(), money(dec!(10.50), "USD"));
        assert_eq!(Money::parse("$10.50").unwrap(), money(dec!(10.50), "USD"));
        assert_eq!(
            Money::parse("10.50 USD").unwrap(),
            money(dec!(10.50), "USD")
        );
        assert_eq!(Money::parse("usd 3").unwrap(), money(dec!(3), "USD"));
        assert_eq!(Money::parse("€5").unwrap(), money(dec!(5), "EUR"));
        assert_eq!(Money::parse("100 ₽").unwrap(), money(dec!(100), "RUB"));
        assert_eq!(Money::parse("£0.99").unwrap(), money(dec!(0.99), "GBP"));
        assert_eq!(Money::parse(" 12.5 ").unwrap(), money(dec!(12.5), ""));
        assert_eq!(Money::parse("0$").unwrap(), money(dec!(0), "USD"));
    }

    #[test]
    fn keeps_the_written_scale() {
        let parsed = Money::parse("10.50$").unwrap();
        assert_eq!(parsed.amount.scale(), 2);
        assert_eq!(parsed.to_string(), "10.50 USD");
    }

    #[test]
    fn parses_negative_amounts() {
        assert_eq!(Money::parse("-7$").unwrap(), money(dec!(-7), "USD"));
        assert_eq!(Money::parse("-$10.25").unwrap(), money(dec!(-10.25), "USD"));
        assert_eq!(Money::parse("$-3").unwrap(), money(dec!(-3), "USD"));
        assert_eq!(
            Money::parse("-0.01 EUR").unwrap(),
            money(dec!(-0.01), "EUR")
        );
    }

    #[test]
    fn parses_many_decimals_exactly() {
        let parsed = Money::parse("0.123456789012345678$").unwrap();
        assert_eq!(parsed.amount, dec!(0.123456789012345678));
        assert_eq!(parsed.amount.scale(), 18);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "   ",
            "$",
            "USD",
            "abc",
            "ADDITION_1_PRICE",
            "10$$",
            "$10€",
            "1.2.3$",
            "10 US",
            "10 DOLLARS",
            "10 U S D",
            "1-2$",
            "--1",
            "10%",
            "12,50$",
            "1e5$x",
            "0.12345678901234567890123456789012345$",
        ] {
            assert!(Money::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn error_names_the_input() {
        let error = Money::parse("ten dollars").unwrap_err();
        assert!(error.to_string().contains("ten dollars"), "{error}");
    }

    #[test]
    fn deserialises_strings_and_numbers() {
        let parsed: Money = serde_json::from_str("\"10.50$\"").unwrap();
        assert_eq!(parsed, money(dec!(10.50), "USD"));
        let parsed: Money = serde_json::from_str("12").unwrap();
        assert_eq!(parsed, money(dec!(12), ""));
        let parsed: Money = serde_json::from_str("-3").unwrap();
        assert_eq!(parsed, money(dec!(-3), ""));
        let parsed: Money = serde_json::from_str("10.1").unwrap();
        assert_eq!(parsed.amount, dec!(10.1));
        assert_eq!(parsed.amount.to_string(), "10.1");
        let parsed: Money = serde_json::from_str("0.3").unwrap();
        assert_eq!(parsed.amount, dec!(0.3));
        let parsed: Money = serde_json::from_str("1e3").unwrap();
        assert_eq!(parsed.amount, dec!(1000));
        assert!(serde_json::from_str::<Money>("true").is_err());
        assert!(serde_json::from_str::<Money>("\"x\"").is_err());
    }

    #[test]
    fn round_trips_through_serde() {
        let original = money(dec!(10.50), "EUR");
        let text = serde_json::to_string(&original).unwrap();
        assert_eq!(text, "\"10.50 EUR\"");
        assert_eq!(serde_json::from_str::<Money>(&text).unwrap(), original);
    }

    #[test]
    fn optional_helper_tolerates_absent_values() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "optional")]
            price: Option<Money>,
        }
        let parse = |text: &str| serde_json::from_str::<Holder>(text).map(|h| h.price);
        assert_eq!(parse("{}").unwrap(), None);
        assert_eq!(parse(r#"{"price":null}"#).unwrap(), None);
        assert_eq!(parse(r#"{"price":""}"#).unwrap(), None);
        assert_eq!(
            parse(r#"{"price":"5$"}"#).unwrap(),
            Some(money(dec!(5), "USD"))
        );
        assert_eq!(parse(r#"{"price":0}"#).unwrap(), Some(money(dec!(0), "")));
        assert!(parse(r#"{"price":"PRICE"}"#).is_err());
    }

    #[test]
    fn fills_a_missing_currency() {
        assert_eq!(
            Money::parse("5").unwrap().or_currency("USD"),
            money(dec!(5), "USD")
        );
        assert_eq!(
            Money::parse("5€").unwrap().or_currency("USD"),
            money(dec!(5), "EUR")
        );
    }
}

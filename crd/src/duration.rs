//! Durations in resources are humantime strings (`90s`, `2h 30m`), as in flags and config files.
//!
//! Use with `#[serde(with = "crd::duration")]` on a `std::time::Duration` field, or
//! `#[serde(with = "crd::duration::option")]` on an `Option<Duration>`. Serialisation writes
//! humantime's canonical form (`1m 30s`), which parses back to the same duration.

use std::time::Duration;

use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

/// Formats a duration the way resources store it (`1m 30s`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A kubectl-style age: `45s`, `3m20s`, `42m`, `5h3m`, `20h`, `3d4h`, `45d`, `2y10d`;
/// `<unknown>` for a zero timestamp; `0s` for one in the future.
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "<unknown>".into();
    }
    let s = now_ms.saturating_sub(then_ms) / 1000;
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else if d < 730 {
        format!("{d}d")
    } else {
        format!("{}y{}d", d / 365, d % 365)
    }
}

/// Parses a humantime duration, with a lowercase error that shows an example.
///
/// # Errors
/// A message naming the input and the accepted form.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. \"90s\" or \"2h 30m\")"))
}

/// Serialises a duration as a humantime string.
///
/// # Errors
/// Whatever the serializer returns.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Deserialises a humantime string.
///
/// # Errors
/// A custom error when the string is not a duration.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(D::Error::custom)
}

/// The same for `Option<Duration>` (absent or null is `None`).
pub mod option {
    use super::*;

    /// Serialises `Some` as a humantime string and `None` as null.
    ///
    /// # Errors
    /// Whatever the serializer returns.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserialises an optional humantime string.
    ///
    /// # Errors
    /// A custom error when the string is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse(&s).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Serialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct T {
        #[serde(with = "crate::duration")]
        d: Duration,
        #[serde(
            default,
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )]
        o: Option<Duration>,
    }

    #[test]
    fn durations_round_trip_as_humantime_strings() {
        let t: T = serde_json::from_str(r#"{"d": "2h 30m", "o": "90s"}"#).unwrap();
        assert_eq!(t.d, Duration::from_secs(9000));
        assert_eq!(t.o, Some(Duration::from_secs(90)));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"d":"2h 30m","o":"1m 30s"}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        let t: T = serde_json::from_str(r#"{"d": "1ms"}"#).unwrap();
        assert_eq!(t.o, None);
    }

    #[test]
    fn bad_durations_are_rejected_with_an_example() {
        let err = serde_json::from_str::<T>(r#"{"d": "ten minutes"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration \"ten minutes\""), "{err}");
        assert!(err.contains("90s"), "{err}");
        assert!(serde_json::from_str::<T>(r#"{"d": 90}"#).is_err());
    }
}

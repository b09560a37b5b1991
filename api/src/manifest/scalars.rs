//! Scalars BOSH writes in more than one way: `20` or `"20%"`, `30000` or
//! `"30000-180000"`, versions as numbers or strings.

use std::{borrow::Cow, fmt};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Format name (in the JSON Schema) of a percentage string like `"20%"`.
pub(crate) const FORMAT_PERCENT: &str = "bosh-percent";
/// Format name (in the JSON Schema) of a watch time string like `"30000-180000"`.
pub(crate) const FORMAT_WATCH_TIME: &str = "bosh-watch-time";

/// Checks a string against one of the custom formats above; unknown formats pass.
pub(crate) fn format_ok(format: &str, s: &str) -> bool {
    match format {
        FORMAT_PERCENT => parse_percent(s).is_some(),
        FORMAT_WATCH_TIME => parse_watch_time(s).is_some(),
        _ => true,
    }
}

/// How a custom format is described in "expected ..." messages.
pub(crate) fn format_description(format: &str) -> Option<&'static str> {
    match format {
        FORMAT_PERCENT => Some(r#"a percentage like "20%""#),
        FORMAT_WATCH_TIME => Some(r#"a range of milliseconds like "30000-180000""#),
        _ => None,
    }
}

fn parse_percent(s: &str) -> Option<u32> {
    let n: u32 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
    (n <= 100).then_some(n)
}

fn parse_watch_time(s: &str) -> Option<WatchTime> {
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let v = s.trim().parse().ok()?;
            (v, v)
        }
    };
    (min <= max).then_some(WatchTime { min_ms: min, max_ms: max })
}

/// `canaries` / `max_in_flight`: an absolute count or a percentage of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// An absolute number of instances.
    Absolute(u32),
    /// A percentage (0-100) of the instance group's size.
    Percent(u32),
}

impl Count {
    /// The absolute count for a group of `total` instances, at least `min`.
    /// Percentages round up, so "20%" of 3 instances is 1, never 0.
    pub fn resolve(self, total: u32, min: u32) -> u32 {
        let n = match self {
            Count::Absolute(n) => n,
            Count::Percent(p) => (u64::from(p) * u64::from(total)).div_ceil(100) as u32,
        };
        n.max(min)
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Count::Absolute(n) => s.serialize_u32(*n),
            Count::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"an integer or a percentage like "20%""#)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                u32::try_from(v).map(Count::Absolute).map_err(|_| E::custom("count too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u32::try_from(v).map(Count::Absolute).map_err(|_| E::custom("count out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                parse_percent(v)
                    .map(Count::Percent)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Count {
    fn schema_name() -> Cow<'static, str> {
        "CountOrPercent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An absolute number of instances, or a percentage of the group like \"20%\".",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "format": FORMAT_PERCENT, "pattern": "^\\s*[0-9]+\\s*%\\s*$"}
            ]
        })
    }
}

/// A watch time in milliseconds: `30000` (min = max) or `"30000-180000"`.
///
/// BOSH polls the agent from `min_ms` on and gives up after `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchTime {
    /// When to start checking that the jobs run.
    pub min_ms: u64,
    /// When to give up.
    pub max_ms: u64,
}

impl Serialize for WatchTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.min_ms == self.max_ms {
            s.serialize_u64(self.min_ms)
        } else {
            s.serialize_str(&format!("{}-{}", self.min_ms, self.max_ms))
        }
    }
}

impl<'de> Deserialize<'de> for WatchTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = WatchTime;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"milliseconds, or a range like "30000-180000""#)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WatchTime, E> {
                Ok(WatchTime { min_ms: v, max_ms: v })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WatchTime, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("watch time is negative"))?;
                Ok(WatchTime { min_ms: v, max_ms: v })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WatchTime, E> {
                parse_watch_time(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for WatchTime {
    fn schema_name() -> Cow<'static, str> {
        "WatchTime".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Milliseconds, or a range of milliseconds like \"30000-180000\".",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "format": FORMAT_WATCH_TIME, "pattern": "^\\s*[0-9]+\\s*(-\\s*[0-9]+\\s*)?$"}
            ]
        })
    }
}

/// A release or stemcell version: `latest`, `"1.2.3"`, or a bare YAML number like `264` or `1.2`.
///
/// YAML reads `version: 1.2` as a number; BOSH treats it as the text "1.2".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub String);

impl Version {
    /// Whether this asks for the newest uploaded version.
    pub fn is_latest(&self) -> bool {
        self.0 == "latest"
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a version string or number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Version, E> {
                Ok(Version(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Version, E> {
                Ok(Version(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Version, E> {
                Ok(Version(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Version, E> {
                Ok(Version(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "Version".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A version (`latest`, \"1.2.3\", or a number).",
            "type": ["string", "number"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentages of a group round up and respect the floor.
    #[test]
    fn percent_counts_round_up_and_respect_minimum() {
        assert_eq!(Count::Percent(20).resolve(3, 1), 1);
        assert_eq!(Count::Percent(50).resolve(5, 1), 3);
        assert_eq!(Count::Percent(0).resolve(5, 1), 1);
        assert_eq!(Count::Absolute(4).resolve(2, 1), 4);
    }

    /// Watch times accept one value or an ordered range, and reject a reversed one.
    #[test]
    fn watch_time_parses_single_values_and_ranges() {
        assert_eq!(parse_watch_time("1000"), Some(WatchTime { min_ms: 1000, max_ms: 1000 }));
        assert_eq!(parse_watch_time("1000 - 5000"), Some(WatchTime { min_ms: 1000, max_ms: 5000 }));
        assert_eq!(parse_watch_time("5000-1000"), None);
        assert_eq!(parse_watch_time("soon"), None);
    }

    /// Counts and watch times serialize back to the shape BOSH users write.
    #[test]
    fn scalars_serialize_back_to_bosh_shapes() {
        let v = serde_json::to_value((
            Count::Percent(20),
            WatchTime { min_ms: 1, max_ms: 2 },
            Version("1.2".into()),
        ))
        .unwrap();
        assert_eq!(v, serde_json::json!(["20%", "1-2", "1.2"]));
    }
}

//! Reading a YAML document into a [`Value`] as bosh-cli's go-yaml v2 reads it.
//!
//! Two things a JSON value cannot hold directly:
//!
//! - **Keys that are not strings.** YAML 1.1 resolves a plain key like any
//!   other scalar, so `on:`/`yes:`/`y:` are the boolean `true`, `~:` is
//!   null, `0x10:` is 16 and `1.50:` is 1.5. A JSON key is a string, so such
//!   a key is stored as the *canonical spelling* of its value: the text
//!   go-yaml v2 prints for it (`true`, `false`, `null`, `16`, `1.5`, `.inf`).
//!   The emitter ([`super::emit`]) prints and sorts a key spelled that way
//!   as the value it stands for, so `interpolate` output matches bosh's. A
//!   quoted key keeps its text (`"on":` stays `on`, and prints quoted).
//!   Two keys with the same canonical spelling (`on:` and `true:`) are the
//!   same key, refused as a duplicate like any other (serde-saphyr passes
//!   repeated keys through, see [`super::parse_value`]; this reader refuses
//!   them, since it alone knows `"on"` and `on` are different keys).
//! - **Non-finite floats** (`.inf`, `-.inf`, `.nan`): see [`super::non_finite`].
//!
//! Files whose keys are names (a release's specs, `config/blobs.yml`) are
//! read with keys kept as written instead ([`super::parse_value_keys_as_written`]).
//!
//! Every other scalar is read by serde-saphyr's YAML 1.1 rules (legacy
//! octal, `yes`/`no`, merges), which agree with go-yaml v2 except for the
//! corners listed in `docs/differences.md`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::float::go_float;

/// A value read with non-finite floats kept, and map keys resolved as
/// YAML 1.1 scalars, or with `AS_WRITTEN` kept as their text.
pub(super) struct Loose<const AS_WRITTEN: bool>(pub(super) Value);

impl<'de, const AS_WRITTEN: bool> Deserialize<'de> for Loose<AS_WRITTEN> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor::<AS_WRITTEN>).map(Loose)
    }
}

struct LooseVisitor<const AS_WRITTEN: bool>;

fn float(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None => super::non_finite(f),
    }
}

impl<'de, const AS_WRITTEN: bool> Visitor<'de> for LooseVisitor<AS_WRITTEN> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Loose::<AS_WRITTEN>::deserialize(d).map(|l| l.0)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::Number(u.into()))
    }

    fn visit_i128<E>(self, i: i128) -> Result<Value, E> {
        Ok(i64::try_from(i).map_or_else(|_| float(i as f64), |i| Value::Number(i.into())))
    }

    fn visit_u128<E>(self, u: u128) -> Result<Value, E> {
        Ok(u64::try_from(u).map_or_else(|_| float(u as f64), |u| Value::Number(u.into())))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Value, E> {
        String::from_utf8(b.to_vec())
            .map(Value::String)
            .map_err(|_| E::custom("binary data that is not UTF-8 text"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Loose::<AS_WRITTEN>(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        loop {
            let (key, at) = if AS_WRITTEN {
                match map.next_key::<serde_saphyr::Spanned<String>>()? {
                    Some(k) => (k.value, k.referenced),
                    None => break,
                }
            } else {
                match map.next_key::<serde_saphyr::Spanned<Key>>()? {
                    Some(k) => (k.value.0, k.referenced),
                    None => break,
                }
            };
            let Loose::<AS_WRITTEN>(value) = map.next_value()?;
            if out.contains_key(&key) {
                let note = match super::keys::Key::of(&key) {
                    super::keys::Key::Str(_) => "",
                    _ => {
                        " (keys are compared as YAML 1.1 reads them: on, yes, y and true are \
                           the same key, ~ and null are, 0x10 and 16 are)"
                    }
                };
                return Err(de::Error::custom(format!(
                    "duplicate mapping key: {key}{note} at line {}, column {}",
                    at.line(),
                    at.column()
                )));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A map key: a scalar, stored as its canonical spelling.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_any(KeyVisitor).map(Key)
    }
}

struct KeyVisitor;

impl KeyVisitor {
    fn not_scalar<E: de::Error>(what: &str) -> E {
        E::custom(format!("a mapping key must be a string, number, boolean or null, found {what}"))
    }
}

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }

    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".into())
    }

    fn visit_none<E>(self) -> Result<String, E> {
        Ok("null".into())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        Key::deserialize(d).map(|k| k.0)
    }

    fn visit_bool<E>(self, b: bool) -> Result<String, E> {
        Ok(b.to_string())
    }

    fn visit_i64<E>(self, i: i64) -> Result<String, E> {
        Ok(i.to_string())
    }

    fn visit_u64<E>(self, u: u64) -> Result<String, E> {
        Ok(u.to_string())
    }

    fn visit_i128<E>(self, i: i128) -> Result<String, E> {
        Ok(i64::try_from(i).map_or_else(|_| go_float(i as f64), |i| i.to_string()))
    }

    fn visit_u128<E>(self, u: u128) -> Result<String, E> {
        Ok(u64::try_from(u).map_or_else(|_| go_float(u as f64), |u| u.to_string()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<String, E> {
        Ok(go_float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<String, E> {
        Ok(s.to_string())
    }

    fn visit_string<E>(self, s: String) -> Result<String, E> {
        Ok(s)
    }

    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<String, E> {
        String::from_utf8(b.to_vec()).map_err(|_| Self::not_scalar("binary data"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::not_scalar("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::not_scalar("a map"))
    }
}

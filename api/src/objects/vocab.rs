//! How the object model's vocabulary is spelled: enums whose values are
//! written into objects as the same strings boshd always wrote, and which
//! still read a value they do not know.
//!
//! A condition type or reason, an instance phase or health is written by
//! one controller (or one director version) and read by others. Each is an
//! enum here, so a reader matches on what a writer can set, and a typo is
//! a compile error rather than a condition nobody finds. But objects
//! outlive versions: during an upgrade an older director (or a rollback)
//! reads what a newer one wrote. An unknown value therefore decodes to
//! `Other`, which keeps the string as written: the object is neither
//! refused (quarantined) nor changed when it is written back.

/// A value this version of boshd does not know, kept as it was written.
/// Made only by decoding (or [`From<&str>`] on a vocabulary enum) a
/// string that names no known value, so a known value is never `Other`
/// and comparing two values compares what they mean.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unrecognized(pub(crate) String);

impl Unrecognized {
    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Defines a vocabulary enum: its known values with the strings they are
/// written as, plus `Other(Unrecognized)`; `as_str`, `KNOWN`, `From<&str>`,
/// `Display`, serde as a plain string, and a JSON Schema of a string
/// listing the known values as `examples` (a schema naming them as an
/// `enum` would refuse what a newer director writes).
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $text:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
            /// A value this version does not know (written by a newer
            /// director), kept as written.
            Other($crate::objects::vocab::Unrecognized),
        }

        impl $name {
            /// Every value this version knows.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The value as written in objects.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(u) => u.as_str(),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                match s {
                    $($text => $name::$variant,)+
                    other => $name::Other($crate::objects::vocab::Unrecognized(other.to_string())),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok($name::from(s.as_ref()))
            }
        }

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "examples": [$($text),+] })
            }
        }
    };
}

pub(crate) use vocabulary;

#[cfg(test)]
pub(crate) mod tests {
    use serde::{Serialize, de::DeserializeOwned};

    /// Checks that each known value of a vocabulary enum is written as
    /// `expected` (the strings boshd wrote before the enum existed) and
    /// read back as itself, and that an unknown string survives a round
    /// trip unchanged.
    pub(crate) fn round_trips<T>(known: &[T], expected: &[&str])
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + for<'a> From<&'a str>,
    {
        assert_eq!(known.len(), expected.len(), "a value was added or removed");
        for (v, s) in known.iter().zip(expected) {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json, serde_json::Value::String(s.to_string()), "{v:?}");
            assert_eq!(&serde_json::from_value::<T>(json).unwrap(), v);
            assert_eq!(&T::from(s), v);
        }
        let newer = serde_json::json!("SomethingANewerDirectorWrites");
        let read: T = serde_json::from_value(newer.clone()).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), newer);
    }
}

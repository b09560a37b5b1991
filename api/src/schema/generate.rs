//! The one way a type's JSON Schema is made (draft 2020-12): for the
//! checked-in schemas and for the manifest checks that walk them.

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};

/// The root schema of `T`.
pub(crate) fn schema_of<T: JsonSchema>() -> Schema {
    SchemaGenerator::new(SchemaSettings::draft2020_12()).into_root_schema_for::<T>()
}

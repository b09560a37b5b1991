//! The JSON Schemas checked in under `crds-schemas/`: one per kind and one
//! per manifest format. `hack/` writes them; a test fails when they are stale.

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};

use crate::objects::*;

pub(crate) fn schema_of<T: JsonSchema>() -> Schema {
    SchemaGenerator::new(SchemaSettings::draft2020_12()).into_root_schema_for::<T>()
}

/// Every schema, as `(file stem, schema)`, in a stable order.
pub fn all() -> Vec<(&'static str, Schema)> {
    let mut out = vec![
        ("release", schema_of::<Object<ReleaseSpec>>()),
        ("stemcell", schema_of::<Object<StemcellSpec>>()),
        ("config", schema_of::<Object<ConfigSpec>>()),
        ("deployment", schema_of::<Object<DeploymentSpec>>()),
        ("instance", schema_of::<Object<InstanceSpec>>()),
        ("disk", schema_of::<Object<DiskSpec>>()),
        ("task", schema_of::<Object<TaskSpec>>()),
        ("event", schema_of::<Object<EventSpec>>()),
    ];
    out.extend(crate::manifest::schemas());
    out
}

/// Renders a schema exactly as it is checked in (pretty JSON, trailing newline).
pub fn render(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("a schema always serializes");
    s.push('\n');
    s
}

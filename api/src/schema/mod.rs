//! The JSON Schemas checked in under `crds-schemas/`: one per kind and one
//! per manifest format. `hack/` writes them; a test fails when they are stale.
//!
//! How a type's schema is made lives in [`generate`], which the manifest
//! checks use too; this module only lists and renders.

pub(crate) mod generate;

use schemars::Schema;

use generate::schema_of;

use crate::objects::*;

/// The schema of a kind's object, titled with the kind and with
/// `apiVersion` and `kind` pinned, so a tool can tell kinds apart.
fn kind_schema<S: Kind>() -> Schema {
    let mut schema = schema_of::<Object<S>>();
    schema.insert("title".into(), S::KIND.into());
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        props.insert("apiVersion".into(), serde_json::json!({ "const": API_VERSION }));
        props.insert("kind".into(), serde_json::json!({ "const": S::KIND }));
    }
    schema
}

/// Every schema, as `(file stem, schema)`, in a stable order.
pub fn all() -> Vec<(&'static str, Schema)> {
    let mut out = vec![
        ("release", kind_schema::<ReleaseSpec>()),
        ("stemcell", kind_schema::<StemcellSpec>()),
        ("config", kind_schema::<ConfigSpec>()),
        ("deployment", kind_schema::<DeploymentSpec>()),
        ("instance", kind_schema::<InstanceSpec>()),
        ("disk", kind_schema::<DiskSpec>()),
        ("task", kind_schema::<TaskSpec>()),
        ("event", kind_schema::<EventSpec>()),
        ("compiled-package", kind_schema::<CompiledPackageSpec>()),
        ("errand-run", kind_schema::<ErrandRunSpec>()),
        ("dns-numbers", kind_schema::<DnsNumbersSpec>()),
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

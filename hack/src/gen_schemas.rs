//! Regenerates `crds-schemas/*.schema.json` from the types in `bosh-api`.
//!
//! Run `cargo run -p hack --bin gen-schemas` (or `hack/gen-schemas.sh`) after
//! changing a kind or a manifest type; `api`'s `schemas_are_fresh` test fails
//! until the checked-in files match.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds-schemas"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".schema.json") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    for (stem, schema) in bosh_api::schema::all() {
        let path = dir.join(format!("{stem}.schema.json"));
        std::fs::write(&path, bosh_api::schema::render(&schema))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

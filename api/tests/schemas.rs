//! The checked-in schemas under `crds-schemas/` match the types.

use std::path::PathBuf;

/// Fails when a type changed and `hack/gen-schemas.sh` was not run.
#[test]
fn schemas_are_fresh() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds-schemas");
    let mut expected = Vec::new();
    for (stem, schema) in bosh_api::schema::all() {
        let file = format!("{stem}.schema.json");
        expected.push(file.clone());
        let path = dir.join(&file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == bosh_api::schema::render(&schema),
            "{} is stale or missing: run hack/gen-schemas.sh",
            path.display()
        );
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".schema.json"))
        .collect();
    present.sort();
    expected.sort();
    assert_eq!(present, expected, "crds-schemas/ holds schemas no type produces");
}

//! compile_package: packaging runs with BOSH's environment and its dependencies.

use std::io::Read;

use serde_json::json;

use super::{Env, tgz};

/// A package depending on another compiles against it; the result is uploaded and complete.
#[tokio::test]
async fn package_with_a_dependency_compiles() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    let lib = env.upload(tgz(&[("lib.txt", "the library\n", 0o644)])).await;
    let packaging = r#"set -e
cp "/var/vcap/packages/lib/lib.txt" "$BOSH_INSTALL_TARGET/"
cat src/main.txt > "$BOSH_INSTALL_TARGET/main.txt"
echo "$BOSH_PACKAGE_NAME $BOSH_PACKAGE_VERSION $(basename $BOSH_COMPILE_TARGET)" > "$BOSH_INSTALL_TARGET/info"
"#;
    let source = env
        .upload(tgz(&[("packaging", packaging, 0o644), ("src/main.txt", "main\n", 0o644)]))
        .await;
    let args = json!({
        "name": "app",
        "version": "fp123",
        "source": source,
        "dependencies": {"lib": {"name": "lib", "version": "1", "sha256": lib.sha256, "size": lib.size}},
    });
    let result = a.long("compile_package", json!([args.clone()])).await.unwrap();
    let sha = result["sha256"].as_str().unwrap().to_string();
    assert!(result["size"].as_u64().unwrap() > 0);

    let bytes = env.blobs.get_bytes(&sha).await.unwrap();
    let mut files = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        files.insert(e.path().unwrap().display().to_string(), s);
    }
    assert_eq!(files["lib.txt"], "the library\n");
    assert_eq!(files["main.txt"], "main\n");
    assert_eq!(files["info"], "app fp123 app\n");

    // Compiling again gives the same blob: the packing is deterministic.
    let again = a.long("compile_package", json!([args])).await.unwrap();
    assert_eq!(again["sha256"], sha);
}

/// A failing packaging script is an exception with its exit code and output tail.
#[tokio::test]
async fn failing_packaging_reports_exit_code_and_output() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    let source =
        env.upload(tgz(&[("packaging", "echo compiler says no >&2\nexit 7\n", 0o644)])).await;
    let args = json!({"name": "bad", "version": "1", "source": source});
    let err = a.long("compile_package", json!([args])).await.unwrap_err();
    assert!(err.contains("package bad: packaging exited with code 7"), "{err}");
    assert!(err.contains("compiler says no"), "{err}");
}

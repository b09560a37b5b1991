//! The blobstore over real HTTP on 127.0.0.1:0: server, client and local
//! storage together, in temp dirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bosh_blobstore::server::{self, VERIFY_UPFRONT_MAX};
use bosh_blobstore::{BlobRef, Client, Error, LocalStorage, Storage, sha256_hex};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TOKEN: &str = "s3cret-token";

/// A running server on a free loopback port, stopped on drop.
struct Env {
    dir: tempfile::TempDir,
    storage: LocalStorage,
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().join("store"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared: Arc<dyn Storage> = Arc::new(storage.clone());
        tokio::spawn(server::serve(listener, shared, TOKEN.to_owned(), async move {
            let _ = stopped.await;
        }));
        Env { dir, storage, url, _stop: stop }
    }

    fn client(&self) -> Client {
        Client::new(&self.url, TOKEN)
    }

    fn work(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("work");
        std::fs::create_dir_all(&p).unwrap();
        p.join(name)
    }

    /// Staged uploads left behind in the store's tmp dir.
    fn staged(&self) -> usize {
        std::fs::read_dir(self.storage.tmp_dir()).map_or(0, |d| d.count())
    }
}

/// Writes `size` bytes of deterministic, non-repeating-looking content to
/// `path` in chunks (never the whole file in memory); returns its sha256.
async fn write_generated(path: &Path, size: u64) -> String {
    let mut f = tokio::fs::File::create(path).await.unwrap();
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while written < size {
        let n = (size - written).min(chunk.len() as u64) as usize;
        for b in &mut chunk[..n] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        hasher.update(&chunk[..n]);
        f.write_all(&chunk[..n]).await.unwrap();
        written += n as u64;
    }
    f.flush().await.unwrap();
    hex::encode(hasher.finalize())
}

async fn file_sha256(path: &Path) -> String {
    let mut f = tokio::fs::File::open(path).await.unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Flips one byte in the middle of a stored blob, keeping its size.
fn corrupt(env: &Env, sha256: &str) {
    let path = env.storage.blob_path(sha256);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
}

/// Bytes put through the client come back identical, then delete removes them.
#[tokio::test]
async fn put_get_exists_delete_round_trip_over_http() {
    let env = Env::start().await;
    let c = env.client();
    let blob = c.put_bytes(b"job template".to_vec()).await.unwrap();
    assert_eq!(blob, BlobRef { sha256: sha256_hex(b"job template"), size: 12 });
    assert!(c.exists(&blob.sha256).await.unwrap());
    assert_eq!(c.get_bytes(&blob.sha256).await.unwrap(), b"job template");
    assert_eq!(c.list().await.unwrap(), vec![blob.clone()]);

    let dest = env.work("template");
    assert_eq!(c.get_to_file(&blob.sha256, &dest).await.unwrap(), 12);
    assert_eq!(std::fs::read(&dest).unwrap(), b"job template");
    // Owner-only, as the blob may hold credentials.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dest).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    c.delete(&blob.sha256).await.unwrap();
    c.delete(&blob.sha256).await.unwrap();
    assert!(!c.exists(&blob.sha256).await.unwrap());
    let err = c.get_bytes(&blob.sha256).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { ref sha256 } if *sha256 == blob.sha256), "{err}");
}

/// A wrong or missing token gets Unauthorized on every route, and nothing is stored.
#[tokio::test]
async fn wrong_token_is_unauthorized_and_stores_nothing() {
    let env = Env::start().await;
    let good = env.client().put_bytes(b"present".to_vec()).await.unwrap();
    for bad in [Client::new(&env.url, "wrong"), Client::new(&env.url, "")] {
        let err = bad.put_bytes(b"intruder".to_vec()).await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized), "{err}");
        assert!(matches!(bad.get_bytes(&good.sha256).await, Err(Error::Unauthorized)));
        assert!(matches!(bad.exists(&good.sha256).await, Err(Error::Unauthorized)));
        assert!(matches!(bad.delete(&good.sha256).await, Err(Error::Unauthorized)));
    }
    let resp = reqwest::Client::new().get(format!("{}/blobs", env.url)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(env.storage.list().await.unwrap(), vec![good]);
    assert_eq!(env.staged(), 0);
}

/// HTTP Basic with the token as the password (a BOSH `dav` client's
/// `user`/`password` options, any user) is let in like the bearer token;
/// a wrong password, or a Basic header that is not base64 of
/// `user:password`, is not.
#[tokio::test]
async fn basic_auth_with_the_token_as_password_is_accepted() {
    let env = Env::start().await;
    let good = env.client().put_bytes(b"for a dav client".to_vec()).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/blobs/{}", env.url, good.sha256);
    let get = |user: &str, password: Option<&str>| {
        http.get(&url).basic_auth(user, password.map(str::to_owned)).send()
    };
    let resp = get("agent", Some(TOKEN)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"for a dav client");
    assert_eq!(get("someone-else", Some(TOKEN)).await.unwrap().status(), 200);
    assert_eq!(get("agent", Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(get("agent", None).await.unwrap().status(), 401);
    // The token as the user name is not the password.
    assert_eq!(get(TOKEN, None).await.unwrap().status(), 401);
    let raw = http.get(&url).header("authorization", format!("Basic {TOKEN}")).send();
    assert_eq!(raw.await.unwrap().status(), 401);
}

/// An upload that does not hash to the name it was sent under is refused whole.
#[tokio::test]
async fn put_with_mismatching_expected_sha_is_refused_and_stores_nothing() {
    let env = Env::start().await;
    let claimed = sha256_hex(b"what I said I would send");
    let http = reqwest::Client::new();

    let resp = http
        .put(format!("{}/blobs/{claimed}", env.url))
        .bearer_auth(TOKEN)
        .body("what I sent")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .put(format!("{}/blobs", env.url))
        .bearer_auth(TOKEN)
        .header("x-blob-sha256", &claimed)
        .body("what I sent")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .put(format!("{}/blobs?sha256={claimed}", env.url))
        .bearer_auth(TOKEN)
        .body("what I sent")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let body = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"what I sent"))]);
    let err = env.client().put_stream(body, Some(&claimed)).await.unwrap_err();
    assert!(
        matches!(err, Error::Digest { ref expected, ref actual }
            if *expected == claimed && *actual == sha256_hex(b"what I sent")),
        "{err}"
    );
    assert!(env.storage.list().await.unwrap().is_empty());
    assert_eq!(env.staged(), 0);
}

/// A small blob that rotted on disk fails the client's get with a Digest error.
#[tokio::test]
async fn corrupted_small_blob_fails_with_digest_error_and_dest_stays_untouched() {
    let env = Env::start().await;
    let c = env.client();
    let blob = c.put_bytes(b"compiled package contents".to_vec()).await.unwrap();
    corrupt(&env, &blob.sha256);

    let dest = env.work("pkg.tgz");
    std::fs::write(&dest, b"previous good copy").unwrap();
    let err = c.get_to_file(&blob.sha256, &dest).await.unwrap_err();
    assert!(matches!(err, Error::Digest { ref expected, .. } if *expected == blob.sha256), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"previous good copy");
    let err = c.get_bytes(&blob.sha256).await.unwrap_err();
    assert!(matches!(err, Error::Digest { .. }), "{err}");
    // No partial download is left beside dest.
    assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
}

/// A large blob that rotted on disk is cut short by the server, never delivered whole.
#[tokio::test]
async fn corrupted_large_blob_is_cut_short_and_never_delivered() {
    let env = Env::start().await;
    let c = env.client();
    let src = env.work("stemcell");
    let size = 3 * VERIFY_UPFRONT_MAX + 12_345;
    write_generated(&src, size).await;
    let blob = c.put_file(&src).await.unwrap();
    corrupt(&env, &blob.sha256);

    let dest = env.work("stemcell.copy");
    let err = c.get_to_file(&blob.sha256, &dest).await.unwrap_err();
    // The server held back the last chunk and aborted: the body ends short.
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(!dest.exists());

    // A plain HTTP client sees the body end short of its content-length.
    let resp = reqwest::Client::new()
        .get(format!("{}/blobs/{}", env.url, blob.sha256))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "corrupt blob delivered whole");
}

/// A 50 MB file streams up and down intact, reporting upload progress.
#[tokio::test]
async fn fifty_megabyte_file_streams_up_and_down() {
    let env = Env::start().await;
    let c = env.client();
    let src = env.work("big");
    let size = 50 * 1024 * 1024;
    let sha = write_generated(&src, size).await;

    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let blob = c
        .put_file_with_progress(&src, move |sent| {
            assert!(sent >= s.swap(sent, Ordering::Relaxed), "progress never goes back");
        })
        .await
        .unwrap();
    assert_eq!(blob, BlobRef { sha256: sha.clone(), size });
    assert_eq!(seen.load(Ordering::Relaxed), size);

    let dest = env.work("big.copy");
    assert_eq!(c.get_to_file(&sha, &dest).await.unwrap(), size);
    assert_eq!(file_sha256(&dest).await, sha);
}

/// Many concurrent uploads of the same content all succeed and store one blob.
#[tokio::test]
async fn concurrent_puts_of_the_same_content_are_idempotent() {
    let env = Env::start().await;
    let content = vec![7u8; 300_000];
    let puts = (0..12).map(|_| {
        let c = env.client();
        let content = content.clone();
        tokio::spawn(async move { c.put_bytes(content).await })
    });
    let results = futures::future::join_all(puts).await;
    let want = BlobRef { sha256: sha256_hex(&content), size: content.len() as u64 };
    for r in results {
        assert_eq!(r.unwrap().unwrap(), want);
    }
    assert_eq!(env.storage.list().await.unwrap(), vec![want.clone()]);
    assert_eq!(env.staged(), 0);
    assert_eq!(env.client().get_bytes(&want.sha256).await.unwrap(), content);
}

/// A missing blob is NotFound and the destination is left alone.
#[tokio::test]
async fn get_of_missing_blob_is_not_found_and_dest_stays_untouched() {
    let env = Env::start().await;
    let missing = sha256_hex(b"never uploaded");
    let dest = env.work("absent");
    let err = env.client().get_to_file(&missing, &dest).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!dest.exists());
}

/// Malformed names never reach the server from the client, and the server refuses them too.
#[tokio::test]
async fn malformed_names_are_refused_by_client_and_server() {
    let env = Env::start().await;
    let err = env.client().get_bytes("../../etc/passwd").await.unwrap_err();
    assert!(matches!(err, Error::InvalidDigest { .. }), "{err}");
    let resp = reqwest::Client::new()
        .get(format!("{}/blobs/{}", env.url, "A".repeat(64)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

/// Re-uploading a blob repairs a copy that rotted on disk.
#[tokio::test]
async fn reupload_repairs_a_corrupted_blob() {
    let env = Env::start().await;
    let c = env.client();
    let blob = c.put_bytes(b"rendered template".to_vec()).await.unwrap();
    corrupt(&env, &blob.sha256);
    assert!(c.get_bytes(&blob.sha256).await.is_err());
    c.put_bytes(b"rendered template".to_vec()).await.unwrap();
    assert_eq!(c.get_bytes(&blob.sha256).await.unwrap(), b"rendered template");
}

/// The bearer scheme is case-insensitive, and an unknown route with a good
/// token is `404`, with a bad one `401` (issue 12, item 8).
#[tokio::test]
async fn lower_case_bearer_is_accepted_and_unknown_routes_are_not_found() {
    let env = Env::start().await;
    let http = reqwest::Client::new();
    let get = |path: &str, auth: &str| {
        http.get(format!("{}{path}", env.url)).header("authorization", auth).send()
    };
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = get("/blobs", &format!("{scheme} {TOKEN}")).await.unwrap();
        assert_eq!(r.status(), 200, "scheme {scheme}");
    }
    assert_eq!(get("/blobs", "Basic s3cret-token").await.unwrap().status(), 401);
    assert_eq!(get("/no/such/route", &format!("bearer {TOKEN}")).await.unwrap().status(), 404);
    assert_eq!(get("/no/such/route", "bearer wrong").await.unwrap().status(), 401);
}

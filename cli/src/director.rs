//! Talking to boshd's API: where it is, the token, and typed requests.
//!
//! The director is found from `--director`/`BOSH_DIRECTOR` and
//! `--token`/`BOSH_TOKEN`, or else from the `director.json` that boshd
//! writes into its data dir (looked for in `.bosh-rs/boshd/` from the
//! current directory upwards), so that after `hack/up.sh` every command
//! works without flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bosh_api::{Kind, Object};
use serde::de::DeserializeOwned;

/// Flags that pick the director.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DirectorArgs {
    /// boshd's API URL, e.g. `http://127.0.0.1:25555`.
    #[arg(long, env = "BOSH_DIRECTOR", global = true)]
    pub director: Option<String>,
    /// The API token.
    #[arg(long, env = "BOSH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// An API error, kept typed so `main` can map it to an exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", details.iter().map(|d| format!("\n  {d}")).collect::<String>())]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The error line.
    pub message: String,
    /// One line per problem (validation errors name their paths).
    pub details: Vec<String>,
}

/// A client for one director.
pub struct Director {
    url: String,
    token: String,
    http: reqwest::Client,
}

fn find_director_json(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|d| d.join(".bosh-rs/boshd/director.json")).find(|p| p.is_file())
}

impl Director {
    /// Resolves the director from flags, environment or `director.json`.
    pub fn resolve(args: &DirectorArgs) -> Result<Director> {
        let (url, token) = match (&args.director, &args.token) {
            (Some(u), Some(t)) => (u.clone(), t.clone()),
            _ => {
                let cwd = std::env::current_dir()?;
                let Some(path) = find_director_json(&cwd) else {
                    bail!(
                        "no director: pass --director and --token (or BOSH_DIRECTOR and BOSH_TOKEN), \
                         or run hack/up.sh so that .bosh-rs/boshd/director.json exists"
                    );
                };
                let v: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("parsing {}", path.display()))?;
                let url = args.director.clone().or_else(|| v["url"].as_str().map(str::to_string));
                let token_file = v["token_file"].as_str().unwrap_or_default();
                let token = match &args.token {
                    Some(t) => t.clone(),
                    None => std::fs::read_to_string(token_file)
                        .with_context(|| format!("reading the API token from {token_file}"))?
                        .trim()
                        .to_string(),
                };
                (url.with_context(|| format!("{} has no url", path.display()))?, token)
            }
        };
        Ok(Director {
            url: url.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the director at {}", self.url))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        Err(ApiError {
            status,
            message: body["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}")),
            details: body["details"]
                .as_array()
                .map(|d| d.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        }
        .into())
    }

    /// GETs and decodes.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.send(self.req(reqwest::Method::GET, path)).await?.json().await?)
    }

    /// One object, or `None` when it does not exist.
    pub async fn try_object<S: Kind>(&self, name: &str) -> Result<Option<Object<S>>> {
        match self.get(&format!("/v1/{}/{name}", S::PLURAL)).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.downcast_ref::<ApiError>().is_some_and(|a| a.status == 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates or updates (compare-and-swap) an object's spec.
    pub async fn put_object<S: Kind>(&self, obj: &Object<S>) -> Result<Object<S>> {
        let path = format!("/v1/{}/{}", S::PLURAL, obj.metadata.name);
        Ok(self.send(self.req(reqwest::Method::PUT, &path).json(obj)).await?.json().await?)
    }

    /// POSTs a streamed body and decodes the reply.
    pub async fn post_stream(&self, path: &str, body: reqwest::Body) -> Result<serde_json::Value> {
        Ok(self.send(self.req(reqwest::Method::POST, path).body(body)).await?.json().await?)
    }

    /// POSTs JSON and decodes the reply.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        Ok(self.send(self.req(reqwest::Method::POST, path).json(body)).await?.json().await?)
    }

    /// POSTs JSON and streams the reply body into `dest`; returns its size.
    pub async fn post_json_to_file(
        &self,
        path: &str,
        body: &serde_json::Value,
        dest: &Path,
    ) -> Result<u64> {
        let mut resp = self.send(self.req(reqwest::Method::POST, path).json(body)).await?;
        let mut out = tokio::fs::File::create(dest)
            .await
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
            n += chunk.len() as u64;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
        Ok(n)
    }

    /// DELETEs and decodes the reply.
    pub async fn delete(&self, path: &str) -> Result<serde_json::Value> {
        Ok(self.send(self.req(reqwest::Method::DELETE, path)).await?.json().await?)
    }

    /// Streams a watch: calls `each` with every event line until the stream ends.
    pub async fn watch(
        &self,
        plural: &str,
        from: Option<i64>,
        mut each: impl FnMut(serde_json::Value) -> Result<()>,
    ) -> Result<()> {
        let mut path = format!("/v1/watch/{plural}");
        if let Some(f) = from {
            path.push_str(&format!("?from={f}"));
        }
        let mut resp = self.send(self.req(reqwest::Method::GET, &path)).await?;
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                each(serde_json::from_slice(&line).context("decoding a watch event")?)?;
            }
        }
        Ok(())
    }
}

//! boshd's HTTP API: validate-then-write of spec objects, reads, and a
//! streaming watch, behind a bearer token. Every body it reads or answers
//! is a type of [`bosh_api::wire`] (or a stored object), shared with
//! `boshctl`.
//!
//! The API is a thin door to the store: every write is the same
//! compare-and-swap a GitOps tool would make, preceded by the same
//! validation the controllers apply, so a bad manifest is rejected with
//! every error's path before anything changes. Secrets have no route.
//!
//! # Layout
//!
//! - this file: router, auth, error mapping.
//! - [`limits`]: body size caps (`--max-request-bytes`, `--max-upload-bytes`).
//! - [`objects`]: list/get/put/delete/watch, generic over kinds.
//! - `uploads`: release and stemcell uploads into the blobstore, and
//!   their guarded deletion.
//! - `export`: compiled releases for one stemcell (`export-release`).
//! - `vms`: the VMs the director made, their agents' state, and `exec`.
//! - [`deployments`]: `apply` (deploy), delete with a task, instance
//!   actions, instances with process state, logs, variables, ssh users.
//! - [`healthz`]: `GET /healthz`, etcd's health as boshd sees it (no token).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bosh_api::store::{self, Store};
use bosh_api::wire;
use sha2::{Digest, Sha256};

pub mod deployments;
mod export;
pub mod healthz;
pub mod limits;
pub mod objects;
mod release_merge;
mod tasks;
mod uploads;
pub use uploads::UploadLimits;
mod vms;

/// What handlers share.
pub struct ApiState {
    /// The store writes go through (unfenced: API writes are user writes).
    pub store: Store,
    /// sha256 of the bearer token, compared in constant time.
    token_digest: [u8; 32],
    /// Where uploads are stored (absent: uploads are refused).
    blobstore: Option<Arc<dyn bosh_blobstore::Storage>>,
    /// Where upload bodies are spooled while they are verified.
    scratch: Option<std::path::PathBuf>,
    /// The director, for routes that talk to agents.
    director: Option<crate::world::director::Director>,
    /// Size limits deployments are validated against.
    deployment_limits: crate::reconcilers::validate::DeploymentLimits,
    /// Upload caps and concurrency slots.
    uploads: uploads::UploadGate,
    /// Body size caps.
    limits: limits::Limits,
    /// How often an idle watch stream gets a keep-alive line.
    watch_keepalive: Duration,
}

/// How often an idle watch stream gets a `{"type":"KEEPALIVE"}` line, so
/// that a client can tell a quiet director from a gone one (boshctl gives
/// up after `--idle-timeout`, 45 s: three missed keep-alives).
pub const DEFAULT_WATCH_KEEPALIVE: Duration = Duration::from_secs(15);

impl ApiState {
    /// State for a store and a token.
    pub fn new(store: Store, token: &str) -> ApiState {
        ApiState {
            store,
            token_digest: Sha256::digest(token.as_bytes()).into(),
            blobstore: None,
            scratch: None,
            director: None,
            deployment_limits: Default::default(),
            uploads: uploads::UploadGate::new(UploadLimits::default()),
            limits: limits::Limits::default(),
            watch_keepalive: DEFAULT_WATCH_KEEPALIVE,
        }
    }

    /// Validates deployments against `limits` (default: the defaults).
    pub fn with_deployment_limits(
        mut self,
        limits: crate::reconcilers::validate::DeploymentLimits,
    ) -> ApiState {
        self.deployment_limits = limits;
        self
    }

    /// Caps request bodies at `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: limits::Limits) -> ApiState {
        self.limits = limits;
        self
    }

    /// Sends idle watch streams a keep-alive line every `every` instead of
    /// [`DEFAULT_WATCH_KEEPALIVE`].
    pub fn with_watch_keepalive(mut self, every: Duration) -> ApiState {
        self.watch_keepalive = every;
        self
    }

    /// Lets routes reach agents through `director`.
    pub fn with_director(mut self, director: crate::world::director::Director) -> ApiState {
        self.director = Some(director);
        self
    }

    /// Accepts uploads into `storage`, spooling them under `scratch`.
    pub fn with_blobstore(
        mut self,
        storage: Arc<dyn bosh_blobstore::Storage>,
        scratch: std::path::PathBuf,
    ) -> ApiState {
        self.blobstore = Some(storage);
        self.scratch = Some(scratch);
        self
    }
}

/// An API error: a status, a message, and details (e.g. one line per
/// validation error, each naming its path); answered as a
/// [`wire::ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    /// What went wrong.
    pub error: String,
    /// Every problem, when there are several.
    pub details: Vec<String>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError { status, error: error.into(), details: Vec::new() }
    }

    /// 422 with one detail per validation error.
    pub fn invalid(error: impl Into<String>, details: Vec<String>) -> ApiError {
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, error: error.into(), details }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = wire::ErrorBody { error: self.error, details: self.details };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> ApiError {
        let status = match &e {
            store::Error::NotFound { .. } => StatusCode::NOT_FOUND,
            store::Error::AlreadyExists { .. } | store::Error::Conflict { .. } => {
                StatusCode::CONFLICT
            }
            store::Error::InvalidName(_) => StatusCode::BAD_REQUEST,
            store::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            store::Error::Fenced { .. } | store::Error::Etcd { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            store::Error::Decode { .. }
            | store::Error::Malformed { .. }
            | store::Error::Decrypt { .. }
            | store::Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 9110 §11.1), so `bearer` and `BEARER` are accepted.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}

async fn require_token(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let presented = bearer_token(req.headers());
    let ok = presented.is_some_and(|p| {
        let got: [u8; 32] = Sha256::digest(p.as_bytes()).into();
        got.iter().zip(state.token_digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if ok {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required").into_response()
    }
}

async fn info() -> axum::Json<wire::Info> {
    axum::Json(wire::Info {
        name: "boshd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api: "v1".into(),
    })
}

/// The answer to a request no route matches (behind the token, like every
/// route, so that an unknown route and a wrong token are told apart).
async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {method} {}", uri.path()))
}

/// The API routes (everything under `/v1`), behind the token, and
/// `/healthz`, which is not (it tells no secret, and load balancers and
/// monitors carry no token).
///
/// Uploads stream to disk under their own (large) body cap; every other
/// route is capped at `--max-request-bytes`. The router has its own
/// fallback, so merged with the blobstore's routes (as boshd serves them)
/// an unknown path answers this API's `404`, not the blobstore's `401`.
pub fn router(state: Arc<ApiState>) -> Router {
    let uploads = Router::new()
        .route("/v1/uploads/releases", axum::routing::post(uploads::upload_release))
        .route("/v1/uploads/stemcells", axum::routing::post(uploads::upload_stemcell))
        .layer(middleware::from_fn_with_state(
            limits::BodyCap::upload(state.limits),
            limits::cap_body,
        ));
    Router::new()
        .route("/v1/info", axum::routing::get(info))
        .merge(objects::routes())
        .route("/v1/exports/releases", axum::routing::post(export::export_release))
        .route("/v1/task-cancellations/{id}", axum::routing::post(tasks::cancel))
        .route("/v1/vms", axum::routing::get(vms::list))
        .route("/v1/vms/{agent_id}/exec", axum::routing::post(vms::exec))
        .route("/v1/deployments/{name}/apply", axum::routing::post(deployments::apply))
        .route("/v1/deployments/{name}/instances", axum::routing::get(deployments::instances::list))
        .route(
            "/v1/deployments/{name}/instances/actions",
            axum::routing::post(deployments::instances::action),
        )
        .route(
            "/v1/deployments/{name}/cloud-check",
            axum::routing::post(deployments::cloud_check::scan)
                .get(deployments::cloud_check::report),
        )
        .route(
            "/v1/deployments/{name}/cloud-check/resolutions",
            axum::routing::post(deployments::cloud_check::record_resolutions),
        )
        .route("/v1/deployments/{name}/errands", axum::routing::get(deployments::errands::list))
        .route(
            "/v1/deployments/{name}/errands/{errand}/runs",
            axum::routing::post(deployments::errands::run),
        )
        .route(
            "/v1/deployments/{name}/errand-runs/{run}/logs/{sha256}",
            axum::routing::get(deployments::errands::logs),
        )
        .route("/v1/deployments/{name}/logs", axum::routing::post(deployments::instances::logs))
        .route("/v1/deployments/{name}/ssh", axum::routing::post(deployments::ssh::ssh))
        .route(
            "/v1/deployments/{name}/variables",
            axum::routing::get(deployments::instances::variables),
        )
        .layer(middleware::from_fn_with_state(
            limits::BodyCap::request(state.limits),
            limits::cap_body,
        ))
        .merge(uploads)
        .fallback(not_found)
        // `cap_body` is the one limit (with a message naming its flag);
        // axum's own 2 MiB default would answer first with neither.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        // Added after the token layer, which therefore does not wrap it.
        .route("/healthz", axum::routing::get(healthz::healthz))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown`, finishing in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    /// The bearer scheme is matched case-insensitively (issue 12, item 8); other schemes are not bearer tokens.
    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer t0k", "bearer t0k", "BEARER t0k", "Bearer  t0k"] {
            assert_eq!(bearer_token(&auth(v)), Some("t0k"), "{v}");
        }
        for v in ["Basic t0k", "Bearert0k", "t0k", ""] {
            assert_eq!(bearer_token(&auth(v)), None, "{v}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}

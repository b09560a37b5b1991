//! Object routes, generic over kinds:
//!
//! - `GET /v1/<plural>[?prefix=P]`: a consistent listing and its revision;
//! - `GET /v1/<plural>/<name>`: one object (`name` may contain `/`);
//! - `PUT /v1/<plural>/<name>`: create (no `resourceVersion`) or
//!   compare-and-swap update of the spec, after validation — only for the
//!   kinds users write (deployments, configs);
//! - `DELETE /v1/<plural>/<name>[?resourceVersion=N]`;
//! - `GET /v1/watch/<plural>[?from=REV]`: newline-delimited JSON events,
//!   and a `{"type":"KEEPALIVE"}` line whenever the stream has been idle
//!   for [`super::DEFAULT_WATCH_KEEPALIVE`] (so a client can tell a quiet
//!   director from one that stopped answering).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use bosh_api::objects::*;
use bosh_api::store::WatchEvent;
use bosh_api::wire::{self, DeleteQuery, Deleted, List, ListQuery, WatchQuery};
use bosh_api::{Kind, Object};
use futures::StreamExt;

use super::{ApiError, ApiState};
use crate::reconcilers::validate;

type R = axum::Router<Arc<ApiState>>;

/// Every object route.
pub fn routes() -> R {
    R::new()
        .merge(routes_with::<ReleaseSpec>(
            get(get_one::<ReleaseSpec>).delete(super::uploads::delete_release),
        ))
        .merge(routes_with::<StemcellSpec>(
            get(get_one::<StemcellSpec>).delete(super::uploads::delete_stemcell),
        ))
        .merge(write_routes::<ConfigSpec>())
        .merge(deployment_routes())
        .merge(read_routes::<InstanceSpec>())
        .merge(read_routes::<DiskSpec>())
        .merge(read_routes::<TaskSpec>())
        .merge(read_routes::<EventSpec>())
        .merge(read_routes::<ErrandRunSpec>())
}

/// The list and watch routes of a kind, with `one` serving `/<plural>/<name>`.
fn routes_with<S: Kind>(one: MethodRouter<Arc<ApiState>>) -> R {
    R::new()
        .route(&format!("/v1/{}", S::PLURAL), get(list::<S>))
        .route(&format!("/v1/{}/{{*name}}", S::PLURAL), one)
        .route(&format!("/v1/watch/{}", S::PLURAL), get(watch::<S>))
}

/// Deployments' object routes. A deployment's name is one path segment
/// (its instances' keys start with `<name>/`), so the operator routes of
/// [`super::deployments`] (`/v1/deployments/<name>/apply`, ...) sit beside
/// them; deleting makes a task there.
fn deployment_routes() -> R {
    type D = DeploymentSpec;
    R::new()
        .route("/v1/deployments", get(list::<D>))
        .route(
            "/v1/deployments/{name}",
            get(get_one::<D>).put(put::<D>).delete(super::deployments::delete),
        )
        .route("/v1/watch/deployments", get(watch::<D>))
}

fn read_routes<S: Kind>() -> R {
    routes_with::<S>(get(get_one::<S>))
}

fn write_routes<S: Writable>() -> R {
    routes_with::<S>(get(get_one::<S>).put(put::<S>).delete(delete::<S>))
}

/// Kinds users write through the API, with the validation they get first.
pub trait Writable: Kind {
    /// Every problem with `obj`, each naming its path; empty = valid.
    fn check(
        st: &ApiState,
        obj: &Object<Self>,
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;
}

impl Writable for DeploymentSpec {
    async fn check(st: &ApiState, obj: &Object<Self>) -> Result<Vec<String>, ApiError> {
        Ok(validate::check_deployment(&st.store, obj, &st.deployment_limits).await?)
    }
}

impl Writable for ConfigSpec {
    async fn check(_: &ApiState, obj: &Object<Self>) -> Result<Vec<String>, ApiError> {
        Ok(validate::check_config(obj))
    }
}

async fn list<S: Kind>(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<List<Object<S>>>, ApiError> {
    let l = st.store.list::<S>(&q.prefix).await?;
    Ok(Json(List { items: l.items, quarantined: l.quarantined, revision: l.revision }))
}

async fn get_one<S: Kind>(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<Object<S>>, ApiError> {
    Ok(Json(st.store.get::<S>(None, &name).await?))
}

async fn put<S: Writable>(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let mut obj: Object<S> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!("request body is not a {} object", S::KIND), vec![e.to_string()])
    })?;
    if obj.metadata.name != name {
        return Err(ApiError::invalid(
            "name mismatch",
            vec![format!(
                "metadata.name: expected {name:?} (from the URL), found {:?}",
                obj.metadata.name
            )],
        ));
    }
    if obj.kind != S::KIND || obj.api_version != API_VERSION {
        return Err(ApiError::invalid(
            "wrong kind",
            vec![format!("expected apiVersion {API_VERSION} and kind {}", S::KIND)],
        ));
    }
    let errors = S::check(&st, &obj).await?;
    if !errors.is_empty() {
        return Err(ApiError::invalid(format!("{} {name} is invalid", S::KIND), errors));
    }
    // Status belongs to controllers; a client cannot set it.
    obj.status = Default::default();
    let (status, saved) = if obj.metadata.resource_version == 0 {
        (StatusCode::CREATED, st.store.create(&obj).await?)
    } else {
        let current = st.store.get::<S>(None, &name).await?;
        obj.metadata.uid = current.metadata.uid;
        obj.metadata.creation_timestamp = current.metadata.creation_timestamp;
        obj.metadata.status_revision = current.metadata.status_revision;
        (StatusCode::OK, st.store.update_spec(&obj).await?)
    };
    Ok((status, Json(saved)).into_response())
}

async fn delete<S: Kind>(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    let gone = st.store.delete::<S>(None, &name, q.resource_version).await?;
    Ok(Json(Deleted { deleted: gone, finalizing: !gone }))
}

/// One watch event as a JSON line.
fn event_line<S: Kind>(ev: WatchEvent<S>) -> Vec<u8> {
    line(&match ev {
        WatchEvent::Relisted { objects, quarantined, revision } => {
            wire::WatchEvent::Relisted { revision, objects, quarantined }
        }
        WatchEvent::Applied(object) => wire::WatchEvent::Applied { object: *object },
        WatchEvent::Quarantined(object) => wire::WatchEvent::Quarantined { object },
        WatchEvent::Deleted { name, revision } => wire::WatchEvent::Deleted { name, revision },
    })
}

/// `event` and a newline.
fn line<S: Kind>(event: &wire::WatchEvent<Object<S>>) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(event).expect("events serialize");
    bytes.push(b'\n');
    bytes
}

async fn watch<S: Kind>(State(st): State<Arc<ApiState>>, Query(q): Query<WatchQuery>) -> Response {
    let events = Box::pin(st.store.watch::<S>(q.from));
    let every = st.watch_keepalive;
    // A keep-alive goes out only after `every` without an event, so a busy
    // stream carries none; the stream ends when the watch does.
    let stream = futures::stream::unfold(events, move |mut events| async move {
        let line = match tokio::time::timeout(every, events.next()).await {
            Ok(Some(ev)) => event_line(ev),
            Ok(None) => return None,
            Err(_) => line::<S>(&wire::WatchEvent::Keepalive),
        };
        Some((Ok::<_, std::convert::Infallible>(line), events))
    });
    ([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

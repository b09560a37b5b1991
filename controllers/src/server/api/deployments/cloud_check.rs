//! Cloud check (`boshctl cck`) as changes of desired state.
//!
//! - `POST /v1/deployments/<name>/cloud-check`: bump the scan token (a
//!   Task `scan cloud`, done once every instance scanned);
//! - `GET /v1/deployments/<name>/cloud-check`: the problems found;
//! - `POST /v1/deployments/<name>/cloud-check/resolutions`
//!   `{resolutions: {problemId: resolution}, auto}`: record the choices
//!   (a Task `apply resolutions`), after checking each against the
//!   problem's allowed resolutions — a bad choice writes nothing.
//!
//! The API itself never scans or fixes anything; the controllers do, so a
//! GitOps write of `spec.cloudCheck` does the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bosh_api::objects::{
    CloudCheckSpec, DeploymentSpec, Problem, Resolution, ResolutionRequest, TaskChange,
};
use bosh_api::wire::{CloudCheckReport, ResolutionsRecorded, ResolveRequest, TaskRef};

use super::{update_deployment, with_task};
use crate::server::api::{ApiError, ApiState};

/// `POST /v1/deployments/<name>/cloud-check`.
pub(in crate::server::api) async fn scan(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<TaskRef>, ApiError> {
    st.store.get::<DeploymentSpec>(None, &name).await?;
    let (task, _) = with_task(&st.store, "scan cloud", &name, TaskChange::Update, async |c| {
        update_deployment(&st.store, &name, |d| {
            d.spec.cloud_check.scan += 1;
            c.claim(d)
        })
        .await
    })
    .await?;
    Ok(Json(TaskRef { task }))
}

/// `GET /v1/deployments/<name>/cloud-check`.
pub(in crate::server::api) async fn report(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<CloudCheckReport>, ApiError> {
    let d = st.store.get::<DeploymentSpec>(None, &name).await?;
    Ok(Json(CloudCheckReport {
        scan: d.spec.cloud_check.scan,
        complete: d.status.cloud_check.scanned == d.spec.cloud_check.scan,
        status: d.status.cloud_check,
    }))
}

/// Checks the choices against the open problems: each must name an open
/// problem and one of its resolutions. Returns the choices, `auto` ones
/// added, or every error (naming the problem and what it allows).
pub fn choose(
    problems: &[Problem],
    chosen: &BTreeMap<String, String>,
    auto: bool,
) -> Result<BTreeMap<String, Resolution>, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (id, res) in chosen {
        let Some(p) = problems.iter().find(|p| &p.id == id) else {
            errors.push(format!("{id}: no such open problem (run a scan: `boshctl cck`)"));
            continue;
        };
        let allowed: Vec<&str> = p.resolutions.iter().map(|r| r.as_str()).collect();
        match Resolution::parse(res).filter(|r| p.resolutions.contains(r)) {
            Some(r) => {
                out.insert(id.clone(), r);
            }
            None => errors.push(format!(
                "{id}: {res:?} does not resolve {} (allowed: {})",
                p.type_,
                allowed.join(", ")
            )),
        }
    }
    if auto {
        for p in problems {
            out.entry(p.id.clone()).or_insert(p.auto_resolution);
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Records `chosen` under a new apply token.
pub fn record(cc: &mut CloudCheckSpec, chosen: &BTreeMap<String, Resolution>) {
    cc.apply_token += 1;
    for (id, r) in chosen {
        cc.resolutions
            .insert(id.clone(), ResolutionRequest { resolution: *r, token: cc.apply_token });
    }
}

/// `POST /v1/deployments/<name>/cloud-check/resolutions`.
pub(in crate::server::api) async fn record_resolutions(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ResolutionsRecorded>, ApiError> {
    let req: ResolveRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "request body is not a set of resolutions",
            vec![format!(
                "{e} (expected {{\"resolutions\": {{PROBLEM_ID: RESOLUTION}}, \"auto\": BOOL}})"
            )],
        )
    })?;
    let d = st.store.get::<DeploymentSpec>(None, &name).await?;
    if d.status.cloud_check.scanned != d.spec.cloud_check.scan {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("deployment {name}: a scan is in progress; resolve once it is done"),
        ));
    }
    let chosen =
        choose(&d.status.cloud_check.problems, &req.resolutions, req.auto).map_err(|errors| {
            ApiError::invalid(format!("deployment {name}: resolutions rejected"), errors)
        })?;
    if chosen.is_empty() {
        return Ok(Json(ResolutionsRecorded { task: None, resolutions: 0 }));
    }
    let n = chosen.len();
    let (task, _) =
        with_task(&st.store, "apply resolutions", &name, TaskChange::Update, async |c| {
            update_deployment(&st.store, &name, |d| {
                record(&mut d.spec.cloud_check, &chosen);
                c.claim(d)
            })
            .await
        })
        .await?;
    Ok(Json(ResolutionsRecorded { task: Some(task), resolutions: n }))
}

#[cfg(test)]
mod tests {
    use bosh_api::objects::ProblemType;

    use super::*;

    fn problems() -> Vec<Problem> {
        vec![
            Problem::new("web/a/missing_vm".into(), ProblemType::MissingVm, "VM gone".into()),
            Problem::new("orphaned_vm/vm-9".into(), ProblemType::OrphanedVm, "VM left".into()),
        ]
    }

    /// A resolution the problem does not allow is refused, naming the
    /// problem and what it allows; an unknown id and name are refused too.
    #[test]
    fn choices_must_name_open_problems_and_their_resolutions() {
        let pick = |id: &str, r: &str| BTreeMap::from([(id.to_string(), r.to_string())]);
        let e = choose(&problems(), &pick("web/a/missing_vm", "reattach_disk"), false).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("web/a/missing_vm:"), "{e:?}");
        assert!(
            e[0].contains("ignore, recreate_vm_without_wait, recreate_vm, delete_vm_reference"),
            "{e:?}"
        );
        let e = choose(&problems(), &pick("web/a/missing_vm", "fix_it"), false).unwrap_err();
        assert!(e[0].contains("\"fix_it\""), "{e:?}");
        let e = choose(&problems(), &pick("web/b/missing_vm", "ignore"), false).unwrap_err();
        assert!(e[0].contains("no such open problem"), "{e:?}");
        let ok = choose(&problems(), &pick("orphaned_vm/vm-9", "delete_vm"), false).unwrap();
        assert_eq!(ok, BTreeMap::from([("orphaned_vm/vm-9".to_string(), Resolution::DeleteVm)]));
    }

    /// `auto` fills in each other problem's auto resolution; explicit choices win.
    #[test]
    fn auto_adds_each_problems_auto_resolution() {
        let chosen = BTreeMap::from([("web/a/missing_vm".to_string(), "recreate_vm".to_string())]);
        let all = choose(&problems(), &chosen, true).unwrap();
        assert_eq!(all["web/a/missing_vm"], Resolution::RecreateVm);
        assert_eq!(all["orphaned_vm/vm-9"], Resolution::Ignore);
        let mut cc = CloudCheckSpec::default();
        record(&mut cc, &all);
        record(&mut cc, &BTreeMap::from([("orphaned_vm/vm-9".to_string(), Resolution::DeleteVm)]));
        assert_eq!(cc.apply_token, 2);
        assert_eq!(cc.resolutions["web/a/missing_vm"].token, 1);
        assert_eq!(cc.resolutions["orphaned_vm/vm-9"].token, 2);
    }
}

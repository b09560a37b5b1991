//! `POST /v1/deployments/<name>/ssh` `{command, target, params}`: BOSH's
//! ssh endpoint, which `boshctl ssh` and `boshctl scp` call before they
//! connect (`setup`: a `bosh_...` user with the CLI's public key) and after
//! (`cleanup`: the users of a `^bosh_...` prefix).
//!
//! Like BOSH's `ssh` job, it runs under a task (no change of the
//! deployment, so it never waits for or blocks a deploy) with one event
//! per instance, and answers each targeted instance's result: where to
//! connect (the instance's first network address) and the host key for
//! the CLI's `known_hosts`. An instance that fails is answered as a
//! `failure` with the agent's reason; the others still get their user.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bosh_api::Object;
use bosh_api::agent::{cleanup_prefix, is_ssh_user};
use bosh_api::objects::{DeploymentSpec, EventState, InstanceSpec, TaskState};
use bosh_api::wire::{SshCommand, SshEntry, SshRequest, SshStatus, SshTarget};

use super::instances::{instance_id, instances_of};
use super::{check_deployment_name, internal};
use crate::libs::tasks::{self, EventLog};
use crate::server::api::{ApiError, ApiState};

/// How long one agent may take to set up or clean up (sshd's host keys
/// are made on the first setup).
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The user ssh tasks are recorded for.
const USER: &str = "admin";

/// 422 unless the params fit the command, naming the field.
fn check_request(req: &SshRequest) -> Result<(), ApiError> {
    let p = &req.params;
    let problem = match req.command {
        SshCommand::Setup if !is_ssh_user(&p.user) => {
            Some(format!("params.user: {:?} is not bosh_ followed by 1-27 of [a-z0-9_]", p.user))
        }
        SshCommand::Setup if p.public_key.split_whitespace().count() < 2 => {
            Some("params.public_key: expected one OpenSSH public key line".to_string())
        }
        SshCommand::Cleanup if cleanup_prefix(&p.user_regex).is_none() => Some(format!(
            "params.user_regex: {:?} is not ^bosh_ followed by [a-z0-9_]",
            p.user_regex
        )),
        _ => None,
    };
    match problem {
        Some(d) => Err(ApiError::invalid(format!("invalid ssh {}", req.command.as_str()), vec![d])),
        None => Ok(()),
    }
}

/// The instances `target` picks (see [`SshTarget`]); 422 for indexes or
/// ids without a job, 404 naming the field that matched nothing.
fn select<'a>(
    deployment: &str,
    instances: &'a [Object<InstanceSpec>],
    target: &SshTarget,
) -> Result<Vec<&'a Object<InstanceSpec>>, ApiError> {
    let narrowed = !target.indexes.is_empty() || !target.ids.is_empty();
    let Some(job) = target.job.as_deref().filter(|j| !j.is_empty()) else {
        if narrowed {
            return Err(ApiError::invalid(
                "invalid ssh target",
                vec!["target.job: required with target.indexes or target.ids".into()],
            ));
        }
        if instances.is_empty() {
            return Err(not_found(format!("target: deployment {deployment} has no instances")));
        }
        return Ok(instances.iter().collect());
    };
    let in_group: Vec<_> = instances.iter().filter(|i| i.spec.group == job).collect();
    if in_group.is_empty() {
        return Err(not_found(format!(
            "target.job: deployment {deployment} has no instance group {job:?} (see `boshctl instances -d {deployment}`)"
        )));
    }
    if !narrowed {
        return Ok(in_group);
    }
    let matched: Vec<_> = in_group
        .into_iter()
        .filter(|i| {
            target.indexes.contains(&i.spec.index.to_string())
                || target.ids.iter().any(|id| id == instance_id(i))
        })
        .collect();
    if matched.is_empty() {
        let wanted: Vec<&str> =
            target.indexes.iter().chain(&target.ids).map(String::as_str).collect();
        return Err(not_found(format!(
            "target.indexes/target.ids: instance group {job} of deployment {deployment} has no instance {}",
            wanted.join(" or ")
        )));
    }
    Ok(matched)
}

fn not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, message)
}

/// `POST /v1/deployments/<name>/ssh`.
pub(in crate::server::api) async fn ssh(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Vec<SshEntry>>, ApiError> {
    check_deployment_name(&name)?;
    let req: SshRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "request body is not an ssh request",
            vec![format!("{e} (command: setup or cleanup; target: {{job, indexes, ids}})")],
        )
    })?;
    check_request(&req)?;
    let Some(director) = &st.director else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this API has no director attached",
        ));
    };
    st.store.get::<DeploymentSpec>(None, &name).await?;
    let instances = instances_of(&st, &name).await?;
    let selected = select(&name, &instances, &req.target)?;

    let verb = req.command.as_str();
    let task = tasks::create_task(&st.store, &format!("ssh: {verb}"), Some(&name), USER).await?;
    let id = task.spec.id;
    tasks::set_task_state(&st.store, id, TaskState::Processing, "").await?;
    let log = EventLog::new(st.store.clone(), id);
    let stage = format!("ssh {verb}");
    let runs = selected.iter().map(|i| {
        let agent = i.status.agent_id.clone().map(|a| director.agents.for_agent(a));
        let (req, log, stage) = (&req, &log, &stage);
        async move {
            let mut entry = SshEntry {
                command: req.command,
                status: SshStatus::Failure,
                job: i.spec.group.clone(),
                index: i.spec.index,
                id: instance_id(i).to_string(),
                ip: String::new(),
                host_public_key: String::new(),
                error: String::new(),
            };
            let object = format!("{}/{} ({})", entry.job, entry.id, entry.index);
            let result = match agent {
                None => Err("the instance has no VM".to_string()),
                Some(a) => {
                    match tokio::time::timeout(AGENT_TIMEOUT, a.ssh(verb, &req.params)).await {
                        Ok(Ok(r)) => Ok(r),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("the agent did not answer in {AGENT_TIMEOUT:?}")),
                    }
                }
            };
            match result {
                Ok(r) => {
                    entry.status = SshStatus::Success;
                    entry.host_public_key = r.host_public_key;
                    if req.command == SshCommand::Setup {
                        entry.ip = i.spec.networks.first().map(|n| n.ip.clone()).unwrap_or(r.ip);
                    }
                }
                Err(e) => entry.error = e,
            }
            let state = if entry.status == SshStatus::Success {
                EventState::Finished
            } else {
                EventState::Failed
            };
            if let Err(e) = log.record(stage, &object, state, &entry.error).await {
                tracing::warn!(task = id, error = %e, "could not record an ssh event");
            }
            entry
        }
    });
    let entries = futures::future::join_all(runs).await;
    let failed = entries.iter().filter(|e| e.status == SshStatus::Failure).count();
    let (state, result) = if failed == 0 {
        (TaskState::Done, format!("ssh {verb} on {} instance(s)", entries.len()))
    } else {
        (
            TaskState::Error,
            format!("ssh {verb} failed on {failed} of {} instance(s)", entries.len()),
        )
    };
    tasks::set_task_state(&st.store, id, state, &result).await.map_err(internal)?;
    Ok(Json(entries))
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::agent::SshParams;

    use super::*;

    fn inst(group: &str, id: &str, index: u32) -> Object<InstanceSpec> {
        Object::new(
            ObjectMeta::scoped("d", format!("{group}/{id}")),
            InstanceSpec { group: group.into(), id: id.into(), index, ..Default::default() },
        )
    }

    fn target(job: Option<&str>, indexes: &[&str], ids: &[&str]) -> SshTarget {
        SshTarget {
            job: job.map(str::to_string),
            indexes: indexes.iter().map(|s| s.to_string()).collect(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(v: Vec<&Object<InstanceSpec>>) -> Vec<String> {
        v.into_iter().map(|i| i.metadata.name.clone()).collect()
    }

    /// A target picks every instance, a group, or a group's instances by index or id, as the bosh CLI sends them.
    #[test]
    fn targets_pick_instances_as_bosh_does() {
        let all = [inst("web", "aaa", 0), inst("web", "bbb", 1), inst("db", "ccc", 0)];
        assert_eq!(select("d", &all, &target(None, &[], &[])).unwrap().len(), 3);
        assert_eq!(
            names(select("d", &all, &target(Some("web"), &[], &[])).unwrap()),
            ["web/aaa", "web/bbb"]
        );
        // `GROUP/1` arrives as both an index and an id.
        assert_eq!(
            names(select("d", &all, &target(Some("web"), &["1"], &["1"])).unwrap()),
            ["web/bbb"]
        );
        assert_eq!(
            names(select("d", &all, &target(Some("db"), &["ccc"], &["ccc"])).unwrap()),
            ["db/ccc"]
        );
    }

    /// A target that matches nothing is a 404 naming the field; indexes without a job are a 422.
    #[test]
    fn bad_targets_are_refused_naming_the_field() {
        let all = [inst("web", "aaa", 0)];
        let e = select("d", &all, &target(Some("api"), &[], &[])).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(e.error.starts_with("target.job: "), "{}", e.error);
        let e = select("d", &all, &target(Some("web"), &["7"], &["7"])).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(e.error.starts_with("target.indexes/target.ids: "), "{}", e.error);
        let e = select("d", &all, &target(None, &["0"], &[])).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.details[0].starts_with("target.job: "), "{:?}", e.details);
        assert_eq!(select("d", &[], &target(None, &[], &[])).unwrap_err().status, 404);
    }

    /// Setup needs a bosh_ user and a key; cleanup a ^bosh_ prefix; each refusal names its field.
    #[test]
    fn params_are_checked_naming_the_field() {
        let req = |command, params| SshRequest { command, target: SshTarget::default(), params };
        let ok = SshParams {
            user: "bosh_1f".into(),
            public_key: "ssh-ed25519 AAAA".into(),
            ..Default::default()
        };
        check_request(&req(SshCommand::Setup, ok.clone())).unwrap();
        let e =
            check_request(&req(SshCommand::Setup, SshParams { user: "root".into(), ..ok.clone() }))
                .unwrap_err();
        assert!(e.details[0].starts_with("params.user: "), "{:?}", e.details);
        let e = check_request(&req(SshCommand::Setup, SshParams { public_key: "".into(), ..ok }))
            .unwrap_err();
        assert!(e.details[0].starts_with("params.public_key: "), "{:?}", e.details);
        let clean = |r: &str| SshParams { user_regex: r.into(), ..Default::default() };
        check_request(&req(SshCommand::Cleanup, clean("^bosh_1f"))).unwrap();
        let e = check_request(&req(SshCommand::Cleanup, clean(".*"))).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.details[0].starts_with("params.user_regex: "), "{:?}", e.details);
    }
}

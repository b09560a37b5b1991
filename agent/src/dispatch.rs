//! From a parsed request to a reply: method lookup, argument decoding, and
//! running long operations as tasks.

use std::sync::Arc;

use bosh_api::agent::{ApplySpec, CompilePackage, Method, Reply, Request, SshParams, StateReport};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::Agent;
use crate::error::{Error, Result};
use crate::{apply, compile, disks, drain, logs, scripts, ssh};

/// Answers one request (long methods answer with a task handle).
pub async fn handle(agent: &Arc<Agent>, req: Request) -> Reply {
    let Some(method) = Method::parse(&req.method) else {
        return Reply::exception(format!("unknown method {:?}", req.method));
    };
    let args = req.arguments;
    if method.is_long() {
        let a = agent.clone();
        let handle = agent.tasks.spawn(method.as_str(), async move { run(&a, method, args).await });
        return Reply::Value(serde_json::to_value(handle).expect("serializable"));
    }
    match method {
        Method::GetTask => match arg::<String>(method, &args, 0) {
            Ok(id) => agent.tasks.get(&id),
            Err(e) => Reply::exception(e.chain()),
        },
        _ => match run(agent, method, args).await {
            Ok(v) => Reply::Value(v),
            Err(e) => Reply::exception(e.chain()),
        },
    }
}

/// Runs a method to completion.
async fn run(agent: &Arc<Agent>, method: Method, args: Vec<Value>) -> Result<Value> {
    let m = method;
    let v = match method {
        Method::Ping => "pong".into(),
        Method::Info => {
            serde_json::json!({"api_version": 1, "protocol": bosh_api::agent::PROTOCOL_VERSION})
        }
        Method::GetState => {
            let full = opt_arg::<String>(m, &args, 0)?.is_some_and(|s| s == "full");
            to_value(get_state(agent, full))
        }
        Method::Prepare => {
            apply::prepare(agent, &arg::<ApplySpec>(m, &args, 0)?).await?;
            "prepared".into()
        }
        Method::Apply => {
            apply::apply(agent, arg::<ApplySpec>(m, &args, 0)?).await?;
            "applied".into()
        }
        Method::Start => {
            let _l = agent.lifecycle.lock().await;
            agent.set_desired(true)?;
            agent.supervisor.start().await?;
            "started".into()
        }
        Method::Stop => {
            let _l = agent.lifecycle.lock().await;
            agent.set_desired(false)?;
            agent.supervisor.stop().await?;
            "stopped".into()
        }
        Method::Drain => {
            let kind = arg::<String>(m, &args, 0)?;
            let next = opt_arg::<ApplySpec>(m, &args, 1)?;
            Value::from(drain::drain(agent, &kind, next.as_ref()).await?)
        }
        Method::RunScript => {
            let name = arg::<String>(m, &args, 0)?;
            let opts = opt_arg::<scripts::Options>(m, &args, 1)?.unwrap_or_default();
            to_value(scripts::run_script(agent, &name, &opts).await?)
        }
        Method::CompilePackage => {
            to_value(compile::compile(agent, arg::<CompilePackage>(m, &args, 0)?).await?)
        }
        Method::FetchLogs => to_value(logs::fetch_logs(agent).await?),
        Method::RunErrand => {
            let opts = opt_arg::<scripts::ErrandOptions>(m, &args, 0)?.unwrap_or_default();
            to_value(scripts::run_errand(agent, opts.name.as_deref()).await?)
        }
        Method::Exec => to_value(scripts::exec(agent, arg(m, &args, 0)?).await?),
        Method::Ssh => {
            let command = arg::<String>(m, &args, 0)?;
            let params = opt_arg::<SshParams>(m, &args, 1)?.unwrap_or_default();
            to_value(ssh::ssh(&agent.settings, &command, &params).await?)
        }
        Method::MountDisk => {
            disks::mount(agent, &arg::<String>(m, &args, 0)?).await?;
            "mounted".into()
        }
        Method::UnmountDisk => {
            disks::unmount(agent, &arg::<String>(m, &args, 0)?).await?;
            "unmounted".into()
        }
        Method::ListDisk => to_value(disks::list(agent)),
        Method::MigrateDisk => {
            disks::migrate(agent, &arg::<String>(m, &args, 0)?, &arg::<String>(m, &args, 1)?)
                .await?;
            "migrated".into()
        }
        Method::GetTask => unreachable!("answered in handle"),
        Method::CancelTask => {
            agent.tasks.cancel(&arg::<String>(m, &args, 0)?)?;
            "canceled".into()
        }
    };
    Ok(v)
}

/// What `get_state` answers.
pub fn get_state(agent: &Agent, full: bool) -> StateReport {
    let (job_state, processes) = agent.supervisor.status();
    let vitals = full.then(|| agent.vitals.lock().expect("lock").sample(&agent.paths));
    StateReport {
        agent_id: agent.settings.agent_id.clone(),
        vm_cid: agent.settings.vm_cid.clone(),
        job_state,
        processes,
        vitals,
        spec: agent.spec.lock().expect("lock").clone(),
    }
}

fn to_value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("agent results serialize")
}

/// Decodes argument `i`.
fn arg<T: DeserializeOwned>(method: Method, args: &[Value], i: usize) -> Result<T> {
    opt_arg(method, args, i)?.ok_or_else(|| Error::Arguments {
        method: method.as_str(),
        message: format!("argument {i} is missing"),
    })
}

/// Decodes argument `i` if present (and not null).
fn opt_arg<T: DeserializeOwned>(method: Method, args: &[Value], i: usize) -> Result<Option<T>> {
    match args.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| Error::Arguments {
            method: method.as_str(),
            message: format!("argument {i}: {e}"),
        }),
    }
}

//! The NATS side: connecting with the agent's own credentials, serving
//! requests on `agent.<id>` and replying on the request's reply subject.
//!
//! Every message gets an answer, whatever it holds: an oversized or
//! malformed message and an unknown method are answered with an exception
//! and the agent carries on. Each request is handled in its own task, so a
//! slow method never delays a ping.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bosh_api::agent::Settings;
use bosh_api::agent::{MAX_MESSAGE_BYTES, Method, Reply, Request, request_subject};
use futures::StreamExt;

use crate::context::Agent;
use crate::dispatch;
use crate::error::{Error, Result};

/// Connects to NATS as this agent. The connection is retried in the
/// background, so an agent that boots before NATS is reachable still comes up.
pub async fn connect(settings: &Settings) -> Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("bosh-agent {}", settings.agent_id))
        .retry_on_initial_connect()
        .max_reconnects(None)
        // A VM usually boots moments after boshd added its user; if the
        // server has not applied that yet, retry soon (50 ms doubling to
        // 2 s) instead of the client's default multi-second wait.
        .reconnect_delay_callback(|attempts| {
            std::time::Duration::from_millis((50u64 << attempts.min(6)).min(2000))
        });
    if !settings.mbus.user.is_empty() {
        opts = opts.user_and_password(settings.mbus.user.clone(), settings.mbus.password.clone());
    }
    opts.connect(settings.mbus.url.as_str()).await.map_err(|e| Error::Nats(Box::new(e)))
}

/// Serves requests until `shutdown` resolves.
pub async fn serve(
    agent: Arc<Agent>,
    nats: async_nats::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let subject = request_subject(&agent.settings.agent_id);
    let mut sub = nats.subscribe(subject.clone()).await.map_err(|e| Error::Nats(Box::new(e)))?;
    tracing::info!(%subject, "serving requests");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                let (agent, nats) = (agent.clone(), nats.clone());
                tokio::spawn(async move {
                    let (json_reply_to, reply) = answer(&agent, &msg.payload).await;
                    let Some(to) = msg.reply.map(|s| s.to_string()).or(json_reply_to) else {
                        tracing::warn!("request without a reply subject dropped");
                        return;
                    };
                    let body = serde_json::to_vec(&reply).expect("replies serialize");
                    if let Err(e) = nats.publish(to, body.into()).await {
                        tracing::warn!(error = %e, "failed to publish reply");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    Ok(())
}

/// The reply to one raw message, and the `reply_to` it named (if any).
pub async fn answer(agent: &Arc<Agent>, payload: &[u8]) -> (Option<String>, Reply) {
    if payload.len() > MAX_MESSAGE_BYTES {
        tracing::warn!(bytes = payload.len(), "oversized request refused");
        let msg = format!(
            "message of {} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes",
            payload.len()
        );
        return (None, Reply::exception(msg));
    }
    let req: Request = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "malformed request refused");
            return (None, Reply::exception(format!("malformed request: {e}")));
        }
    };
    let reply_to = req.reply_to.clone();
    let (method, request_id) = (req.method.clone(), req.request_id.clone());
    let started = Instant::now();
    // Reads are answered fresh every time; anything that acts runs once per request id.
    let read_only = matches!(
        Method::parse(&req.method),
        Some(Method::Ping | Method::Info | Method::GetState | Method::GetTask | Method::ListDisk)
    );
    let reply = match req.request_id.clone() {
        Some(id) if !read_only => {
            let cell = agent.dedup.cell(&id);
            let mut first = false;
            let reply = cell
                .get_or_init(|| {
                    first = true;
                    // One line per request acted on, so a log shows what
                    // ran (and that a retry did not run it again).
                    tracing::info!(%method, request_id = %id, "acting on request");
                    dispatch::handle(agent, req)
                })
                .await
                .clone();
            if !first {
                tracing::info!(%method, request_id = %id, "repeated request answered from the first");
            }
            reply
        }
        _ => dispatch::handle(agent, req).await,
    };
    let ok = matches!(reply, Reply::Value(_));
    tracing::debug!(%method, request_id = ?request_id, ok, micros = started.elapsed().as_micros() as u64, "answered");
    (reply_to, reply)
}

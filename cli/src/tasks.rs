//! `boshctl tasks`, `task N [--follow]` and `events`, in the bosh CLI's
//! manner: one line per event with the task number, time, stage and object,
//! and durations for finished steps.

use std::collections::HashMap;

use anyhow::Result;
use bosh_api::objects::{CPI_LOG_STAGE, EventSpec, EventState, TaskSpec, TaskState};
use bosh_api::wire::{EmptyRequest, List, ListQuery, TaskCancellation, WatchEvent};
use bosh_api::{Kind, Object};
use comfy_table::{Table, presets::NOTHING};
use futures::StreamExt;

use crate::director::{Director, DirectorArgs};

/// Flags of `tasks`.
#[derive(Debug, clap::Args)]
pub struct TasksArgs {
    /// Show only the N most recent tasks.
    #[arg(short, long, num_args = 0..=1, default_missing_value = "30")]
    pub recent: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `task`.
#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    /// The task number.
    pub id: u64,
    /// Keep printing events until the task finishes.
    #[arg(long)]
    pub follow: bool,
    /// Print each event as JSON (CPI logs included).
    #[arg(long, conflicts_with = "cpi")]
    pub debug: bool,
    /// Print what the external CPI logged during the task (its stderr and
    /// its responses' `log`, secrets redacted), as `bosh task N --cpi`.
    #[arg(long)]
    pub cpi: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `cancel-task`.
#[derive(Debug, clap::Args)]
pub struct CancelTaskArgs {
    /// The task number.
    pub id: u64,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only this task's events.
    #[arg(long)]
    pub task: Option<u64>,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

pub(crate) fn task_name(id: u64) -> String {
    format!("{id:010}")
}

/// Lists objects of kind `S` whose names start with `prefix`.
async fn list<S: Kind>(d: &Director, prefix: &str) -> Result<List<Object<S>>> {
    d.get_with(&format!("/v1/{}", S::PLURAL), &ListQuery { prefix: prefix.into() }).await
}

/// A task state as the API and `tasks` write it: `queued`, `done`, ...
pub(crate) fn state_word(s: TaskState) -> &'static str {
    match s {
        TaskState::Queued => "queued",
        TaskState::Processing => "processing",
        TaskState::Done => "done",
        TaskState::Error => "error",
        TaskState::Cancelled => "cancelled",
    }
}

/// Runs `tasks`.
pub async fn tasks(args: TasksArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let mut ts = list::<TaskSpec>(&d, "").await?.items;
    ts.reverse();
    if let Some(n) = args.recent {
        ts.truncate(n);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ts)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["ID", "STATE", "STARTED", "DEPLOYMENT", "DESCRIPTION", "RESULT"]);
    for task in ts {
        t.add_row([
            task.spec.id.to_string(),
            state_word(task.status.state).to_string(),
            task.status.started_at.map(|s| s.format("%F %T").to_string()).unwrap_or_default(),
            task.spec.deployment.unwrap_or_default(),
            task.spec.description,
            task.status.result,
        ]);
    }
    println!("{t}");
    Ok(())
}

/// Which of a task's events are printed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Show {
    /// The event log (no CPI logs), one line per event.
    Events,
    /// Every event as JSON.
    Debug,
    /// Only the CPI logs, as text.
    Cpi,
}

/// Formats events as the bosh CLI does, pairing finished steps with their
/// start to show a duration.
struct Printer {
    started: HashMap<(String, String), chrono::DateTime<chrono::Utc>>,
    show: Show,
    /// The highest event `seq` printed: events arrive from a listing and a
    /// watch that may overlap, and each is printed once.
    seen: u64,
}

impl Printer {
    /// Prints the events newer than any printed, in order.
    fn print_new(&mut self, mut events: Vec<Object<EventSpec>>) -> Result<()> {
        events.sort_by_key(|e| e.spec.seq);
        for e in &events {
            if e.spec.seq > self.seen {
                self.print(e)?;
                self.seen = e.spec.seq;
            }
        }
        Ok(())
    }

    fn print(&mut self, e: &Object<EventSpec>) -> Result<()> {
        let s = &e.spec;
        let cpi_log = s.stage == CPI_LOG_STAGE;
        match self.show {
            Show::Debug => {
                println!("{}", serde_json::to_string(&e.spec)?);
                return Ok(());
            }
            Show::Cpi if cpi_log => {
                print!("{}", cpi_text(s));
                return Ok(());
            }
            Show::Cpi => return Ok(()),
            Show::Events if cpi_log => return Ok(()),
            Show::Events => {}
        }
        let key = (s.stage.clone(), s.object.clone());
        let time = s.time.format("%T");
        let what = if s.object.is_empty() {
            s.stage.clone()
        } else {
            format!("{}: {}", s.stage, s.object)
        };
        match s.state {
            EventState::Started => {
                self.started.insert(key, s.time);
                println!("Task {} | {time} | {what}", s.task);
            }
            EventState::Finished | EventState::Failed => {
                let took = self
                    .started
                    .remove(&key)
                    .map(|t0| {
                        let d = (s.time - t0).num_seconds().max(0);
                        format!(" ({:02}:{:02}:{:02})", d / 3600, d / 60 % 60, d % 60)
                    })
                    .unwrap_or_default();
                let failed = if s.state == EventState::Failed {
                    format!(" Failed: {}", s.error)
                } else {
                    String::new()
                };
                println!("Task {} | {time} | {what}{took}{failed}", s.task);
            }
            EventState::Info => println!("Task {} | {time} | {what} {}", s.task, s.error),
        }
        Ok(())
    }
}

/// One CPI call's log as `task N --cpi` prints it: a header naming the
/// call, then the text as the CPI wrote it.
fn cpi_text(s: &EventSpec) -> String {
    let mut out = format!("Task {} | {} | CPI {}\n", s.task, s.time.format("%T"), s.object);
    out.push_str(&s.error);
    if !s.error.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn is_finished(t: &Object<TaskSpec>) -> bool {
    t.status.state.is_finished()
}

/// The objects a watch event carries: the changed one, or all of a relist.
fn watched<O>(ev: WatchEvent<O>) -> Vec<O> {
    match ev {
        WatchEvent::Applied { object } => vec![object],
        WatchEvent::Relisted { objects, .. } => objects,
        WatchEvent::Deleted { .. }
        | WatchEvent::Quarantined { .. }
        | WatchEvent::Keepalive
        | WatchEvent::Unknown => Vec::new(),
    }
}

/// A change seen while following a task: of a task, or of an event.
enum Change {
    /// From the watch of tasks.
    Task(Result<WatchEvent<Object<TaskSpec>>>),
    /// From the watch of events.
    Event(Result<WatchEvent<Object<EventSpec>>>),
}

/// Runs `task N`; with `--follow`, until the task finishes. Exits non-zero
/// when the task ended in error, so scripts can chain on it.
///
/// Following reads the task and its events once, then watches tasks and
/// events (boshd's watch streams, with keep-alives) instead of polling, so
/// a long task costs the director nothing while it runs, no request
/// timeout cuts it short, and a director that stops answering is noticed
/// after `--idle-timeout`.
pub async fn task(args: TaskArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = task_name(args.id);
    let show = match (args.debug, args.cpi) {
        (true, _) => Show::Debug,
        (_, true) => Show::Cpi,
        _ => Show::Events,
    };
    let mut printer = Printer { started: HashMap::new(), show, seen: 0 };
    let mut t: Object<TaskSpec> = d.get(&format!("/v1/tasks/{name}")).await?;
    let events_prefix = format!("{name}/");
    let listed = list::<EventSpec>(&d, &events_prefix).await?;
    let events_rev = listed.revision;
    printer.print_new(listed.items)?;
    if args.follow && !is_finished(&t) {
        // Tasks are watched from a relist: a watch from a revision only
        // knows objects whose spec it saw change, and a task's state is
        // its status. The relist also covers a change since the read above.
        let tasks = d.watch_stream(TaskSpec::PLURAL, None).await?.map(Change::Task);
        let events =
            d.watch_stream(EventSpec::PLURAL, Some(events_rev + 1)).await?.map(Change::Event);
        let mut both = std::pin::pin!(futures::stream::select(tasks, events));
        while let Some(change) = both.next().await {
            match change {
                Change::Task(ev) => {
                    if let Some(now) = watched(ev?).into_iter().find(|o| o.metadata.name == name) {
                        t = now;
                    }
                    if is_finished(&t) {
                        break;
                    }
                }
                Change::Event(ev) => printer.print_new(
                    watched(ev?)
                        .into_iter()
                        .filter(|e| e.metadata.name.starts_with(&events_prefix))
                        .collect(),
                )?,
            }
        }
        if !is_finished(&t) {
            anyhow::bail!("the director ended the watch of task {} before it finished", args.id);
        }
        // The two watches are not ordered with each other: events written
        // just before the task finished may still be on their way.
        printer.print_new(list::<EventSpec>(&d, &events_prefix).await?.items)?;
    }
    println!(
        "\nTask {} {}{}",
        t.spec.id,
        state_word(t.status.state),
        if t.status.result.is_empty() { String::new() } else { format!(": {}", t.status.result) }
    );
    match t.status.state {
        TaskState::Error => anyhow::bail!("task {} failed: {}", t.spec.id, t.status.result),
        TaskState::Cancelled => anyhow::bail!("task {} cancelled: {}", t.spec.id, t.status.result),
        _ => Ok(()),
    }
}

/// Runs `cancel-task N`: asks the director to cancel the task, then says
/// so; the task ends as the controllers get to it (`task N --follow`).
pub async fn cancel_task(args: CancelTaskArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let _: TaskCancellation =
        d.post(&format!("/v1/task-cancellations/{}", args.id), &EmptyRequest {}).await?;
    println!("Task {} cancelling (follow with `boshctl task {} --follow`)", args.id, args.id);
    Ok(())
}

/// Runs `events`.
pub async fn events(args: EventsArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let prefix = args.task.map(|t| format!("{}/", task_name(t))).unwrap_or_default();
    let events = list::<EventSpec>(&d, &prefix).await?.items;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    let mut printer = Printer { started: HashMap::new(), show: Show::Events, seen: 0 };
    for e in &events {
        printer.print(e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--cpi` prints a CPI log event as a header and the CPI's own text.
    #[test]
    fn cpi_logs_print_as_text_under_a_header() {
        let e = EventSpec {
            task: 7,
            stage: CPI_LOG_STAGE.into(),
            object: "create_vm (req-1)".into(),
            state: EventState::Info,
            error: "INFO -- creating\nDEBUG -- done".into(),
            ..Default::default()
        };
        let t = cpi_text(&e);
        assert!(t.starts_with("Task 7 | ") && t.contains("| CPI create_vm (req-1)\n"), "{t}");
        assert!(t.ends_with("INFO -- creating\nDEBUG -- done\n"), "{t}");
    }
}

//! Which instances may take their new spec now: canaries first, then
//! batches of `max_in_flight`, instance group by instance group (serial
//! groups wait for every group before them), and nothing more once an
//! instance failed.
//!
//! Pure: the controller feeds it what it read and writes what it returns,
//! so a restarted director continues a rollout exactly where the store
//! says it is — an instance already holding its new spec but not yet ready
//! is in flight, whoever wrote it.

/// How far an instance is with the spec it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Its spec is applied and it is in the state asked for.
    Ready,
    /// The instance controller is still working on it.
    InFlight,
    /// The instance controller gave up on its current spec.
    Failed(String),
}

/// One instance of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `group/uuid`.
    pub name: String,
    /// Its instance group.
    pub group: String,
    /// Its index (lower first within a batch).
    pub index: u32,
    /// Whether the stored spec differs from the desired one (or is absent).
    pub changed: bool,
    /// How far it is with the spec stored now.
    pub progress: Progress,
}

/// An instance group's `update` block, resolved to counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupUpdate {
    /// The group's name.
    pub name: String,
    /// Canaries.
    pub canaries: u32,
    /// Instances updated at once after the canaries.
    pub max_in_flight: u32,
    /// Whether the group waits for every group before it.
    pub serial: bool,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Instances to give their new spec now, with whether each is a canary.
    pub write: Vec<(String, bool)>,
    /// The first failure found: the rollout halts.
    pub failed: Option<(String, String)>,
    /// Every instance holds its desired spec and is ready.
    pub done: bool,
}

/// Decides which instances take their new spec now.
pub fn decide(groups: &[GroupUpdate], members: &[Member]) -> Decision {
    let mut d = Decision::default();
    for m in members {
        if let (false, Progress::Failed(msg)) = (m.changed, &m.progress) {
            d.failed.get_or_insert_with(|| (m.name.clone(), msg.clone()));
        }
    }
    let settled = |m: &Member| !m.changed && m.progress == Progress::Ready;
    d.done = members.iter().all(settled);
    if d.failed.is_some() || d.done {
        return d;
    }
    let mut earlier_busy = false;
    for g in groups {
        let mut mine: Vec<&Member> = members.iter().filter(|m| m.group == g.name).collect();
        mine.sort_by_key(|m| m.index);
        let busy = !mine.iter().all(|m| settled(m));
        if g.serial && earlier_busy {
            break;
        }
        if busy {
            let done = mine.iter().filter(|m| settled(m)).count() as u32;
            let in_flight = mine.iter().filter(|m| !m.changed && !settled(m)).count() as u32;
            let todo: Vec<&&Member> = mine.iter().filter(|m| m.changed).collect();
            let canaries = g.canaries.min(mine.len() as u32);
            let (slots, canary) = if done < canaries {
                // Canaries go as one batch, and nothing follows until
                // every one of them is ready.
                (if in_flight == 0 { canaries - done } else { 0 }, true)
            } else {
                (g.max_in_flight.max(1).saturating_sub(in_flight), false)
            };
            for m in todo.into_iter().take(slots as usize) {
                d.write.push((m.name.clone(), canary));
            }
        }
        earlier_busy |= busy;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, canaries: u32, max: u32, serial: bool) -> GroupUpdate {
        GroupUpdate { name: name.into(), canaries, max_in_flight: max, serial }
    }

    fn member(group: &str, index: u32, changed: bool, progress: Progress) -> Member {
        Member { name: format!("{group}/{index}"), group: group.into(), index, changed, progress }
    }

    fn names(d: &Decision) -> Vec<&str> {
        d.write.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// One canary first, alone; then batches of max_in_flight.
    #[test]
    fn canary_then_batches() {
        let g = [group("web", 1, 2, true)];
        let all_changed: Vec<Member> =
            (0..5).map(|i| member("web", i, true, Progress::Ready)).collect();
        let d = decide(&g, &all_changed);
        assert_eq!(names(&d), ["web/0"]);
        assert!(d.write[0].1, "the first is a canary");

        // Canary in flight: nothing else moves.
        let mut m = all_changed.clone();
        m[0] = member("web", 0, false, Progress::InFlight);
        assert!(decide(&g, &m).write.is_empty());

        // Canary ready: two at once, lowest indexes first, not canaries.
        m[0] = member("web", 0, false, Progress::Ready);
        let d = decide(&g, &m);
        assert_eq!(names(&d), ["web/1", "web/2"]);
        assert!(d.write.iter().all(|(_, c)| !c));

        // One of the batch ready: one more slot opens.
        m[1] = member("web", 1, false, Progress::Ready);
        m[2] = member("web", 2, false, Progress::InFlight);
        assert_eq!(names(&decide(&g, &m)), ["web/3"]);
    }

    /// A failed canary halts everything, in every group.
    #[test]
    fn failure_halts() {
        let g = [group("web", 1, 2, true), group("db", 1, 1, false)];
        let m = vec![
            member("web", 0, false, Progress::Failed("pre-start exited 1".into())),
            member("web", 1, true, Progress::Ready),
            member("db", 0, true, Progress::Ready),
        ];
        let d = decide(&g, &m);
        assert!(d.write.is_empty());
        assert_eq!(d.failed, Some(("web/0".into(), "pre-start exited 1".into())));
        assert!(!d.done);
    }

    /// A failure of an old spec that is being replaced does not halt.
    #[test]
    fn failure_of_replaced_spec_does_not_halt() {
        let g = [group("web", 1, 1, true)];
        let m = vec![member("web", 0, true, Progress::Failed("old".into()))];
        let d = decide(&g, &m);
        assert_eq!(names(&d), ["web/0"]);
        assert!(d.failed.is_none());
    }

    /// A serial group waits for the groups before it; a parallel one does not.
    #[test]
    fn serial_and_parallel_groups() {
        let m = vec![
            member("a", 0, true, Progress::Ready),
            member("b", 0, true, Progress::Ready),
            member("c", 0, true, Progress::Ready),
        ];
        let serial = [group("a", 1, 1, true), group("b", 1, 1, true), group("c", 1, 1, true)];
        assert_eq!(names(&decide(&serial, &m)), ["a/0"]);
        let parallel = [group("a", 1, 1, true), group("b", 1, 1, false), group("c", 1, 1, false)];
        assert_eq!(names(&decide(&parallel, &m)), ["a/0", "b/0", "c/0"]);
        // A serial group after parallel ones waits for all of them.
        let mixed = [group("a", 1, 1, false), group("b", 1, 1, false), group("c", 1, 1, true)];
        assert_eq!(names(&decide(&mixed, &m)), ["a/0", "b/0"]);
    }

    /// Unchanged, ready instances are left alone and the rollout is done.
    #[test]
    fn steady_state_writes_nothing() {
        let g = [group("web", 1, 3, true)];
        let m: Vec<Member> = (0..3).map(|i| member("web", i, false, Progress::Ready)).collect();
        let d = decide(&g, &m);
        assert!(d.write.is_empty());
        assert!(d.done);
    }

    /// Two canaries go together; max_in_flight 0 still makes progress.
    #[test]
    fn several_canaries_and_zero_max() {
        let g = [group("web", 2, 0, true)];
        let mut m: Vec<Member> = (0..4).map(|i| member("web", i, true, Progress::Ready)).collect();
        assert_eq!(names(&decide(&g, &m)), ["web/0", "web/1"]);
        m[0] = member("web", 0, false, Progress::Ready);
        m[1] = member("web", 1, false, Progress::Ready);
        assert_eq!(names(&decide(&g, &m)), ["web/2"]);
    }
}

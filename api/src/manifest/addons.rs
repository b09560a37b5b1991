//! Addons: jobs the deployment's own `addons` and the runtime configs place
//! on the instance groups their filters select, as the director's
//! `Addon::Addon`, `Addon::Filter` and `RuntimeConfig::Release` do.
//!
//! - An addon applies to a group when its `include` selects the group and
//!   its `exclude` does not. Within a filter every criterion given must
//!   match (`lifecycle`, `azs`, `teams`, `stemcell`, `networks`,
//!   `deployments`, `jobs`, `instance_groups`); a missing or empty
//!   `include` selects every group, errands included, and a missing or
//!   empty `exclude` excludes none.
//! - An addon job takes its own `properties`, or the addon's when it has
//!   none (BOSH does not merge the two).
//! - Only the releases of addons that apply somewhere join the manifest; a
//!   release the manifest already names must have the same version.
//! - The deployment's own addons go first, then each runtime config in
//!   order, so a later addon's `jobs` filter sees the jobs earlier ones added.

use super::{Addon, AddonJob, Filter, InstanceGroup, Job, Manifest, Properties, RuntimeConfig};

/// Adds the jobs of every addon whose include/exclude filters select an
/// instance group to that group, and the runtime configs' releases to the
/// manifest's releases. Errors name the runtime config and path.
///
/// The manifest's own `addons` are applied too and then removed, so
/// applying twice cannot add a job twice. Team filters see no teams; use
/// [`apply_addons_for_teams`] when the deployment's teams are known. On
/// error the manifest is left unchanged.
pub fn apply_addons(
    manifest: &mut Manifest,
    runtime: &[(String, RuntimeConfig)],
) -> Result<(), Vec<String>> {
    apply_addons_for_teams(manifest, &[], runtime)
}

/// [`apply_addons`] for a deployment owned by `teams` (for `teams` filters
/// of runtime-config addons; deployment addons ignore teams, as in BOSH).
pub fn apply_addons_for_teams(
    manifest: &mut Manifest,
    teams: &[String],
    runtime: &[(String, RuntimeConfig)],
) -> Result<(), Vec<String>> {
    let mut m = manifest.clone();
    let mut errors = Vec::new();

    let own = std::mem::take(&mut m.addons);
    for (i, addon) in own.iter().enumerate() {
        let at = format!("deployment manifest: addons[{i}] ({})", addon.name);
        for (which, f) in [("include", &addon.include), ("exclude", &addon.exclude)] {
            if f.as_ref().is_some_and(|f| !f.deployments.is_empty()) {
                errors.push(format!(
                    "{at}.{which}.deployments: deployment filters are not allowed in a deployment's own addons"
                ));
            }
        }
        check_addon(
            addon,
            &at,
            |r| m.releases.iter().any(|x| x.name == r),
            "deployment",
            &mut errors,
        );
        // BOSH ignores team filters of a deployment's own addons.
        let strip = |f: &Option<Filter>| f.clone().map(|f| Filter { teams: Vec::new(), ..f });
        let addon = Addon {
            include: strip(&addon.include),
            exclude: strip(&addon.exclude),
            ..addon.clone()
        };
        add_to_groups(&mut m, &addon, &[], &at, &mut errors);
    }

    let mut tags_from: Option<&str> = None;
    for (config, rc) in runtime {
        let at = format!("runtime config '{config}'");
        for (i, r) in rc.releases.iter().enumerate() {
            if is_latest(&r.version.0) {
                errors.push(format!(
                    "{at}: releases[{i}] ({}): version '{}' must be an actual version",
                    r.name, r.version
                ));
            }
        }
        for (i, addon) in rc.addons.iter().enumerate() {
            let at = format!("{at}: addons[{i}] ({})", addon.name);
            check_addon(
                addon,
                &at,
                |r| rc.releases.iter().any(|x| x.name == r),
                "runtime config",
                &mut errors,
            );
        }

        // Releases of the addons that apply to some group, before the jobs.
        let applicable: Vec<&Addon> = rc
            .addons
            .iter()
            .filter(|a| m.instance_groups.iter().any(|g| applies(a, &m, teams, g)))
            .collect();
        for addon in applicable {
            for job in &addon.jobs {
                for r in rc.releases.iter().filter(|r| r.name == job.release) {
                    match m.releases.iter().find(|x| x.name == r.name) {
                        None => m.releases.push(r.clone()),
                        Some(x) if x.version != r.version => errors.push(format!(
                            "{at}: release '{}' version '{}' conflicts with version '{}' in the deployment manifest",
                            r.name, r.version, x.version
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        for (i, addon) in rc.addons.iter().enumerate() {
            add_to_groups(
                &mut m,
                addon,
                teams,
                &format!("{at}: addons[{i}] ({})", addon.name),
                &mut errors,
            );
        }

        for (i, v) in rc.variables.iter().enumerate() {
            if m.variables.iter().any(|x| x.name == v.name) {
                errors.push(format!("{at}: variables[{i}]: duplicate variable name '{}'", v.name));
            } else {
                m.variables.push(v.clone());
            }
        }

        if !rc.tags.is_empty() {
            if let Some(first) = tags_from {
                errors.push(format!(
                    "{at}: tags: tags cannot be defined in more than one runtime config (also in '{first}')"
                ));
            }
            tags_from = Some(config);
            for (k, v) in &rc.tags {
                m.tags.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }

    if errors.is_empty() {
        *manifest = m;
        Ok(())
    } else {
        Err(errors)
    }
}

/// Whether a release version asks for `latest` (BOSH: `(^|[._])latest$`).
fn is_latest(v: &str) -> bool {
    v.strip_suffix("latest").is_some_and(|rest| rest.is_empty() || rest.ends_with(['.', '_']))
}

/// Checks an addon's jobs name listed releases and its filters are complete.
fn check_addon(
    addon: &Addon,
    at: &str,
    listed: impl Fn(&str) -> bool,
    level: &str,
    errors: &mut Vec<String>,
) {
    for (j, job) in addon.jobs.iter().enumerate() {
        if !listed(&job.release) {
            errors.push(format!(
                "{at}.jobs[{j}] ({}): release '{}' is not listed in the {level} releases",
                job.name, job.release
            ));
        }
    }
    for (which, f) in [("include", &addon.include), ("exclude", &addon.exclude)] {
        let Some(f) = f else { continue };
        for (k, s) in f.jobs.iter().enumerate() {
            if s.name.is_empty() || s.release.is_empty() {
                errors.push(format!("{at}.{which}.jobs[{k}]: must have both name and release"));
            }
        }
        for (k, s) in f.stemcell.iter().enumerate() {
            if s.os.is_empty() {
                errors.push(format!("{at}.{which}.stemcell[{k}]: must have an os"));
            }
        }
    }
}

/// Whether `addon` applies to group `g` of manifest `m`.
fn applies(addon: &Addon, m: &Manifest, teams: &[String], g: &InstanceGroup) -> bool {
    let include = addon.include.as_ref().is_none_or(|f| matches(f, true, m, teams, g));
    let exclude = addon.exclude.as_ref().is_some_and(|f| matches(f, false, m, teams, g));
    include && !exclude
}

/// BOSH's `Filter#applies?`: every criterion given must match; a filter
/// with none matches everything as an include and nothing as an exclude.
fn matches(f: &Filter, include: bool, m: &Manifest, teams: &[String], g: &InstanceGroup) -> bool {
    if f.lifecycle.is_some_and(|l| l != g.lifecycle()) {
        return false;
    }
    if !f.azs.is_empty() && !f.azs.iter().any(|az| g.azs.contains(az)) {
        return false;
    }
    if !f.teams.is_empty() && !f.teams.iter().any(|t| teams.contains(t)) {
        return false;
    }
    if !f.stemcell.is_empty() {
        let os = m.stemcells.iter().find(|s| s.alias == g.stemcell).and_then(|s| s.os.as_deref());
        if !f.stemcell.iter().any(|s| Some(s.os.as_str()) == os) {
            return false;
        }
    }
    if !f.networks.is_empty() && !f.networks.iter().any(|n| g.networks.iter().any(|x| &x.name == n))
    {
        return false;
    }
    let (deployments, jobs, groups) =
        (!f.deployments.is_empty(), !f.jobs.is_empty(), !f.instance_groups.is_empty());
    if !deployments && !jobs && !groups {
        return include
            || f.lifecycle.is_some()
            || !f.azs.is_empty()
            || !f.teams.is_empty()
            || !f.stemcell.is_empty()
            || !f.networks.is_empty();
    }
    (!deployments || f.deployments.contains(&m.name))
        && (!jobs
            || f.jobs
                .iter()
                .any(|s| g.jobs.iter().any(|j| j.name == s.name && j.release == s.release)))
        && (!groups || f.instance_groups.contains(&g.name))
}

/// The job an addon job becomes on a group.
fn to_job(addon: &Addon, job: &AddonJob) -> Job {
    let properties: Properties =
        if job.properties.is_empty() { addon.properties.clone() } else { job.properties.clone() };
    Job {
        name: job.name.clone(),
        release: job.release.clone(),
        properties,
        consumes: job.consumes.clone(),
        provides: job.provides.clone(),
        custom_provider_definitions: Vec::new(),
    }
}

/// Appends `addon`'s jobs to every group it applies to; a job already on
/// a group is an error, as BOSH's "Colocated job ... is already added".
fn add_to_groups(
    m: &mut Manifest,
    addon: &Addon,
    teams: &[String],
    at: &str,
    errors: &mut Vec<String>,
) {
    let selected: Vec<usize> = (0..m.instance_groups.len())
        .filter(|&i| applies(addon, m, teams, &m.instance_groups[i]))
        .collect();
    for i in selected {
        let g = &mut m.instance_groups[i];
        for job in &addon.jobs {
            if g.jobs.iter().any(|j| j.name == job.name) {
                errors.push(format!(
                    "{at}: colocated job '{}' is already added to the instance group '{}'",
                    job.name, g.name
                ));
            } else {
                g.jobs.push(to_job(addon, job));
            }
        }
    }
}

#[cfg(test)]
mod tests;

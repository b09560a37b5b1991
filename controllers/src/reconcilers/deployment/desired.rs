//! The desired Instance spec of each planned instance: what its VM is made
//! from, what the agent installs, and the templates it renders.
//!
//! Everything the instance controller needs goes into the spec, so that it
//! never reads releases or configs, and two digests summarize it:
//! `vm_hash` (a change recreates the VM) and `config_hash` (a change
//! re-applies the jobs). Both are digests of canonical JSON, so the same
//! inputs always give the same spec and a steady deployment writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use bosh_api::Object;
use bosh_api::manifest::{CloudConfig, InstanceGroup, Manifest, NetworkDefault, NetworkType};
use bosh_api::objects::{
    BlobRef, CloudCheckSpec, DesiredState, DnsNumbersSpec, InstanceCloudCheck, InstanceJob,
    InstanceNetwork, InstanceOverride, InstancePackage, InstanceSpec, Reason, ReleaseSpec,
    StemcellSpec,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::numbers::{Addressing, dns_address};
use super::plan::Desired;
use crate::libs::lookup::{self, Blocked};
use crate::libs::render::{
    InstanceContext, JobTemplates, NetworkContext, ReleaseRef, RenderJob, RenderRequest,
};
use crate::reconcilers::compile;

/// What every instance of a deployment is built from.
pub struct Context<'a> {
    /// The deployment's name.
    pub deployment: &'a str,
    /// The manifest, variables interpolated and addons applied.
    pub manifest: &'a Manifest,
    /// The merged cloud config.
    pub cloud: &'a CloudConfig,
    /// Release objects by release name.
    pub releases: &'a BTreeMap<String, Object<ReleaseSpec>>,
    /// Every uploaded stemcell.
    pub stemcells: &'a [Object<StemcellSpec>],
    /// Compiled package blobs by compile key.
    pub compiled: &'a BTreeMap<String, BlobRef>,
    /// Job templates by (release name, job name).
    pub jobs: &'a BTreeMap<(String, String), Arc<JobTemplates>>,
    /// Operator requests, by group name or instance id.
    pub overrides: &'a BTreeMap<String, InstanceOverride>,
    /// Cloud-check requests (scan token, resolutions by problem id).
    pub cloud_check: &'a CloudCheckSpec,
    /// By group, the versions of the variables its `env` names
    /// (`variables::versions`): the spec keeps `env`'s placeholders, so
    /// these stand for its values in `vm_hash`.
    pub env_versions: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Consumed links by (group, job) ([`super::links::resolve`]).
    pub links: &'a super::links::ByJob,
    /// The director's DNS numbers (short addresses).
    pub dns: &'a DnsNumbersSpec,
}

/// The owned inputs of a [`Context`], so building the specs of many
/// instances can move to a blocking thread.
pub struct Inputs {
    /// The deployment's name.
    pub deployment: String,
    /// The manifest, variables interpolated and addons applied.
    pub manifest: Manifest,
    /// The merged cloud config.
    pub cloud: CloudConfig,
    /// Release objects by release name.
    pub releases: BTreeMap<String, Object<ReleaseSpec>>,
    /// Every uploaded stemcell.
    pub stemcells: Vec<Object<StemcellSpec>>,
    /// Compiled package blobs by compile key.
    pub compiled: BTreeMap<String, BlobRef>,
    /// Job templates by (release name, job name).
    pub jobs: BTreeMap<(String, String), Arc<JobTemplates>>,
    /// Operator requests, by group name or instance id.
    pub overrides: BTreeMap<String, InstanceOverride>,
    /// Cloud-check requests.
    pub cloud_check: CloudCheckSpec,
    /// By group, the versions of the variables its `env` names.
    pub env_versions: BTreeMap<String, BTreeMap<String, String>>,
    /// Consumed links by (group, job).
    pub links: super::links::ByJob,
    /// The director's DNS numbers.
    pub dns: DnsNumbersSpec,
}

impl Inputs {
    /// The context borrowing these inputs.
    pub fn context(&self) -> Context<'_> {
        Context {
            deployment: &self.deployment,
            manifest: &self.manifest,
            cloud: &self.cloud,
            releases: &self.releases,
            stemcells: &self.stemcells,
            compiled: &self.compiled,
            jobs: &self.jobs,
            overrides: &self.overrides,
            cloud_check: &self.cloud_check,
            env_versions: &self.env_versions,
            links: &self.links,
            dns: &self.dns,
        }
    }
}

/// The share of the deployment's cloud-check requests that concerns
/// instance `name` (`group/uuid`): the scan token and the resolutions of
/// problems whose id is `<name>/<type>`.
pub fn cloud_check_of(cc: &CloudCheckSpec, name: &str) -> InstanceCloudCheck {
    let prefix = format!("{name}/");
    let resolutions = cc
        .resolutions
        .iter()
        .filter_map(|(id, r)| {
            let t = id.strip_prefix(&prefix)?;
            bosh_api::objects::ProblemType::parse(t).map(|t| (t, *r))
        })
        .collect();
    InstanceCloudCheck { scan: cc.scan, resolutions }
}

/// A planned instance's spec (without rendered templates yet) and what
/// to render for it.
pub struct Built {
    /// The spec; [`finish`] completes it.
    pub spec: InstanceSpec,
    /// The templates to render.
    pub render: RenderRequest,
    /// The versions of the variables the spec's `env` names.
    pub env_versions: BTreeMap<String, String>,
}

fn obj(p: &bosh_api::manifest::Properties) -> Map<String, Value> {
    p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The update settings of a group: its own block over the deployment's.
pub fn update_of(m: &Manifest, g: &InstanceGroup) -> super::rollout::GroupUpdate {
    let own = g.update.as_ref();
    let top = m.update.as_ref();
    let pick = |f: &dyn Fn(&bosh_api::manifest::Update) -> Option<bosh_api::manifest::Count>| {
        own.and_then(f).or_else(|| top.and_then(f))
    };
    let total = g.instances;
    super::rollout::GroupUpdate {
        name: g.name.clone(),
        canaries: pick(&|u| u.canaries).map(|c| c.resolve(total, 0)).unwrap_or(1),
        max_in_flight: pick(&|u| u.max_in_flight).map(|c| c.resolve(total, 1)).unwrap_or(1),
        serial: own.and_then(|u| u.serial).or_else(|| top.and_then(|u| u.serial)).unwrap_or(true),
    }
}

/// (min, max) watch time of a group, in ms: the larger of canary and
/// update watch times, so a canary is never cut short.
fn watch_of(m: &Manifest, g: &InstanceGroup) -> (u64, u64) {
    let own = g.update.as_ref();
    let top = m.update.as_ref();
    let canary =
        own.and_then(|u| u.canary_watch_time).or_else(|| top.and_then(|u| u.canary_watch_time));
    let update =
        own.and_then(|u| u.update_watch_time).or_else(|| top.and_then(|u| u.update_watch_time));
    let times: Vec<_> = [canary, update].into_iter().flatten().collect();
    if times.is_empty() {
        return (0, 60_000);
    }
    (
        times.iter().map(|t| t.min_ms).min().unwrap_or(0),
        times.iter().map(|t| t.max_ms).max().unwrap_or(60_000),
    )
}

/// Builds the spec of planned instance `d`.
pub fn build(cx: &Context, d: &Desired) -> Result<Built, Blocked> {
    let m = cx.manifest;
    let g = m
        .instance_groups
        .iter()
        .find(|g| g.name == d.group)
        .expect("planned instances belong to a group of the manifest");
    let sc = lookup::stemcell(m, &g.stemcell, cx.stemcells)?;
    let cloud_properties = cloud_properties_of(cx, g, d)?;
    let networks = networks_of(cx, g, d)?;
    let jobs = jobs_of(cx, g)?;
    let packages = packages_of(cx, jobs.needed, sc)?;
    let disk = persistent_disk_of(cx, g)?;
    let ov = override_of(cx, g, d);
    let (watch_min, watch_max) = watch_of(m, g);
    let spec = InstanceSpec {
        group: g.name.clone(),
        id: d.id.clone(),
        index: d.index,
        az: d.az.clone(),
        cpi: cpi_of(cx, d),
        bootstrap: d.bootstrap,
        desired_state: ov.state.unwrap_or(DesiredState::Started),
        stemcell: sc.metadata.name.clone(),
        vm_type: g.vm_type.clone().unwrap_or_default(),
        cloud_properties: Value::Object(cloud_properties),
        env: if g.env.is_empty() { Value::Null } else { Value::Object(obj(&g.env)) },
        networks,
        jobs: jobs.placed,
        packages,
        rendered_templates: None,
        persistent_disk_mb: disk.size_mb,
        persistent_disk_type: disk.type_,
        persistent_disk_cloud_properties: disk.cloud_properties,
        recreate_token: ov.recreate,
        restart_token: ov.restart,
        watch_min_ms: watch_min,
        watch_time_ms: watch_max,
        config_hash: String::new(),
        vm_hash: String::new(),
        cloud_check: cloud_check_of(cx.cloud_check, &format!("{}/{}", g.name, d.id)),
    };
    let mut instance = template_context(cx.deployment, &spec);
    instance.address = dns_address_of(cx, &spec);
    let render = RenderRequest { instance, jobs: jobs.render };
    let env_versions = cx.env_versions.get(&g.name).cloned().unwrap_or_default();
    Ok(Built { spec, render, env_versions })
}

/// The CPI of the instance's AZ (`None`: the default CPI).
pub fn cpi_of(cx: &Context, d: &Desired) -> Option<String> {
    let az = d.az.as_deref()?;
    cx.cloud.azs.iter().find(|a| a.name == az)?.cpi.clone()
}

/// Cloud properties: AZ, then vm_type (or vm_resources), then extensions.
fn cloud_properties_of(
    cx: &Context,
    g: &InstanceGroup,
    d: &Desired,
) -> Result<Map<String, Value>, Blocked> {
    let mut cloud_properties = Map::new();
    if let Some(az) = d.az.as_deref().and_then(|az| cx.cloud.azs.iter().find(|a| a.name == az)) {
        cloud_properties.extend(obj(&az.cloud_properties));
    }
    if let Some(name) = &g.vm_type {
        let vt = cx.cloud.vm_types.iter().find(|v| &v.name == name).ok_or_else(|| {
            Blocked::new(
                Reason::VmTypeMissing,
                format!("instance group {}: no vm_type {name:?}", g.name),
            )
        })?;
        cloud_properties.extend(obj(&vt.cloud_properties));
    } else if let Some(r) = &g.vm_resources {
        cloud_properties.insert("cpu".into(), json!(r.cpu));
        cloud_properties.insert("ram".into(), json!(r.ram));
        cloud_properties.insert("ephemeral_disk_size".into(), json!(r.ephemeral_disk_size));
    }
    for ext in &g.vm_extensions {
        let e = cx.cloud.vm_extensions.iter().find(|v| &v.name == ext).ok_or_else(|| {
            Blocked::new(
                Reason::VmExtensionMissing,
                format!("instance group {}: no vm_extension {ext:?}", g.name),
            )
        })?;
        cloud_properties.extend(obj(&e.cloud_properties));
    }
    Ok(cloud_properties)
}

/// Networks, with the subnet each address is in.
fn networks_of(
    cx: &Context,
    g: &InstanceGroup,
    d: &Desired,
) -> Result<Vec<InstanceNetwork>, Blocked> {
    let mut networks = Vec::new();
    for (i, nref) in g.networks.iter().enumerate() {
        let net = cx.cloud.networks.iter().find(|n| n.name == nref.name).ok_or_else(|| {
            Blocked::new(
                Reason::NetworkMissing,
                format!("instance group {}: no network {:?}", g.name, nref.name),
            )
        })?;
        let ip = d.ips.get(&nref.name).copied().flatten();
        let subnet = net.subnets.iter().find(|s| match (ip, crate::libs::ipam::Pools::of(s)) {
            (Some(ip), Ok(p)) => p.is_dynamic(ip) || p.is_static(ip),
            _ => {
                d.az.as_deref()
                    .is_none_or(|az| s.az_names().is_empty() || s.az_names().contains(&az))
            }
        });
        let default: Vec<String> = if nref.default.is_empty() {
            if i == 0 { vec!["dns".into(), "gateway".into()] } else { vec![] }
        } else {
            nref.default
                .iter()
                .map(|x| match x {
                    NetworkDefault::Dns => "dns",
                    NetworkDefault::Gateway => "gateway",
                    NetworkDefault::Addressable => "addressable",
                })
                .map(str::to_string)
                .collect()
        };
        let type_ = match net.network_type() {
            NetworkType::Manual => "manual",
            NetworkType::Dynamic => "dynamic",
            NetworkType::Vip => "vip",
        };
        networks.push(InstanceNetwork {
            name: nref.name.clone(),
            type_: type_.into(),
            ip: ip.map(|i| i.to_string()).unwrap_or_default(),
            netmask: subnet
                .and_then(|s| s.range.as_deref())
                .map(crate::libs::ipam::netmask)
                .unwrap_or_default(),
            gateway: subnet.and_then(|s| s.gateway.clone()).unwrap_or_default(),
            dns: subnet.map(|s| s.dns.clone()).unwrap_or_else(|| net.dns.clone()),
            default,
            cloud_properties: subnet
                .map(|s| Value::Object(obj(&s.cloud_properties)))
                .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                .unwrap_or(Value::Null),
        });
    }
    Ok(networks)
}

/// A group's jobs, the packages they need and the templates to render.
struct Jobs {
    /// The jobs as the spec lists them.
    placed: Vec<InstanceJob>,
    /// By release name, the packages the jobs name, each with the job that wants it.
    needed: BTreeMap<String, Vec<(String, String)>>,
    /// The templates to render, with each job's properties.
    render: Vec<RenderJob>,
}

/// Jobs and the compiled packages they need (with their dependencies).
fn jobs_of(cx: &Context, g: &InstanceGroup) -> Result<Jobs, Blocked> {
    let m = cx.manifest;
    let mut jobs = Vec::new();
    let mut needed: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut render_jobs = Vec::new();
    for job in &g.jobs {
        let rel = cx.releases.get(&job.release).ok_or_else(|| {
            Blocked::new(
                Reason::ReleaseMissing,
                format!("job {} names release {:?}", job.name, job.release),
            )
        })?;
        let rj = rel.spec.jobs.iter().find(|j| j.name == job.name).ok_or_else(|| {
            Blocked::new(
                Reason::JobMissing,
                format!("release {} has no job {:?}", rel.metadata.name, job.name),
            )
        })?;
        jobs.push(InstanceJob {
            name: job.name.clone(),
            release: rel.metadata.name.clone(),
            fingerprint: rj.fingerprint.clone(),
        });
        let w = needed.entry(job.release.clone()).or_default();
        w.extend(rj.packages.iter().map(|p| (p.clone(), format!("job {}", job.name))));
        let templates = cx.jobs.get(&(job.release.clone(), job.name.clone())).ok_or_else(|| {
            Blocked::new(
                Reason::JobMissing,
                format!("templates of job {} are not loaded", job.name),
            )
        })?;
        // BOSH: job-level properties, else the group's, else the deployment's.
        let properties = if !job.properties.is_empty() {
            obj(&job.properties)
        } else if !g.properties.is_empty() {
            obj(&g.properties)
        } else {
            obj(&m.properties)
        };
        render_jobs.push(RenderJob {
            job: templates.clone(),
            properties: Value::Object(properties),
            links: cx.links.get(&(g.name.clone(), job.name.clone())).cloned().unwrap_or_default(),
            release: Some(ReleaseRef {
                name: rel.spec.name.clone(),
                version: rel.spec.version.clone(),
            }),
        });
    }
    Ok(Jobs { placed: jobs, needed, render: render_jobs })
}

/// The compiled packages `needed` (by release) comes to on stemcell `sc`,
/// with their dependencies, each once, by name.
fn packages_of(
    cx: &Context,
    needed: BTreeMap<String, Vec<(String, String)>>,
    sc: &Object<StemcellSpec>,
) -> Result<Vec<InstancePackage>, Blocked> {
    let needed: Vec<(&ReleaseSpec, Vec<(String, String)>)> =
        needed.into_iter().map(|(r, w)| (&cx.releases[&r].spec, w)).collect();
    let plan = compile::plan::plan(&needed, &sc.spec.operating_system, &sc.spec.version)
        .map_err(|e| Blocked::new(Reason::PlanFailed, e.to_string()))?;
    let mut packages = Vec::new();
    for p in &plan.packages {
        let blob = cx.compiled.get(&p.key).ok_or_else(|| {
            Blocked::new(
                Reason::PackageNotCompiled,
                format!("package {} ({}) is not compiled", p.name, p.key),
            )
        })?;
        if packages.iter().any(|x: &InstancePackage| x.name == p.name) {
            continue;
        }
        packages.push(InstancePackage {
            name: p.name.clone(),
            version: p.fingerprint.clone(),
            compile_key: p.key.clone(),
            blob: blob.clone(),
        });
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(packages)
}

/// A group's persistent disk.
struct PersistentDisk {
    /// Size in MB (0: none).
    size_mb: u64,
    /// The cloud config's disk type, when the group names one.
    type_: Option<String>,
    /// That disk type's cloud properties (null without one).
    cloud_properties: Value,
}

/// Persistent disk: the group's size, or its disk type's.
fn persistent_disk_of(cx: &Context, g: &InstanceGroup) -> Result<PersistentDisk, Blocked> {
    let mut disk = PersistentDisk {
        size_mb: g.persistent_disk.unwrap_or(0),
        type_: None,
        cloud_properties: Value::Null,
    };
    if let Some(t) = &g.persistent_disk_type {
        let dt = cx.cloud.disk_types.iter().find(|d| &d.name == t).ok_or_else(|| {
            Blocked::new(
                Reason::DiskTypeMissing,
                format!("instance group {}: no disk_type {t:?}", g.name),
            )
        })?;
        disk.size_mb = dt.disk_size;
        disk.type_ = Some(t.clone());
        disk.cloud_properties = Value::Object(obj(&dt.cloud_properties));
    }
    Ok(disk)
}

/// Operator requests: the instance's own, else its group's.
fn override_of(cx: &Context, g: &InstanceGroup, d: &Desired) -> InstanceOverride {
    cx.overrides.get(&d.id).or_else(|| cx.overrides.get(&g.name)).cloned().unwrap_or_default()
}

/// `spec.address` when the deployment uses DNS addresses: the instance's
/// DNS name on its addressable network (the director's `network_address`),
/// short with `use_short_dns_addresses`; `None` (its IP) otherwise.
fn dns_address_of(cx: &Context, s: &InstanceSpec) -> Option<String> {
    let how = Addressing::of(cx.manifest);
    if !how.dns {
        return None;
    }
    let with = |d: &str| s.networks.iter().find(|n| n.default.iter().any(|x| x == d));
    let net = with("addressable").or_else(|| with("gateway")).or(s.networks.first())?;
    Some(dns_address(how, cx.dns, &s.id, &s.group, &net.name, cx.deployment, "bosh"))
}

/// The instance its templates' `spec` is derived from; the renderer derives
/// the address, the DNS record names and dynamic placeholders from it
/// (`bosh_render::template_spec`), as it does for `boshctl render`.
fn template_context(deployment: &str, s: &InstanceSpec) -> InstanceContext {
    let networks = s
        .networks
        .iter()
        .map(|n| {
            let set = |v: &String| Some(v.clone()).filter(|v| !v.is_empty());
            let network = NetworkContext {
                ip: set(&n.ip),
                netmask: set(&n.netmask),
                gateway: set(&n.gateway),
                default: n.default.clone(),
                dns: n.dns.clone(),
                type_: Some(n.type_.clone()),
            };
            (n.name.clone(), network)
        })
        .collect();
    InstanceContext {
        deployment: deployment.to_string(),
        name: s.group.clone(),
        index: s.index,
        id: s.id.clone(),
        az: s.az.clone(),
        bootstrap: s.bootstrap,
        address: None,
        networks,
        job: None,
        dns_domain_name: "bosh".into(),
        persistent_disk: s.persistent_disk_mb,
    }
}

pub(crate) fn digest(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).expect("json values serialize");
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Completes a spec with its rendered templates and both digests.
/// `env_versions` are the versions of the variables `env` names: a
/// regenerated password recreates the VM, as a changed one in the
/// manifest does, though the spec holds only its placeholder.
pub fn finish(spec: &mut InstanceSpec, env_versions: &BTreeMap<String, String>, rendered: BlobRef) {
    spec.rendered_templates = Some(rendered);
    let networks = serde_json::to_value(&spec.networks).expect("networks serialize");
    let mut vm = json!({
        "stemcell": spec.stemcell,
        "cloud_properties": spec.cloud_properties,
        "env": spec.env,
        "networks": networks,
    });
    if !env_versions.is_empty() {
        vm["env_versions"] = json!(env_versions);
    }
    // Another CPI is another VM (only named when not the default, so the
    // digests of a single-CPI director stay as they were).
    if let Some(cpi) = &spec.cpi {
        vm["cpi"] = json!(cpi);
    }
    spec.vm_hash = digest(&vm);
    spec.config_hash = digest(&json!({
        "jobs": serde_json::to_value(&spec.jobs).expect("jobs serialize"),
        "packages": serde_json::to_value(&spec.packages).expect("packages serialize"),
        "rendered": serde_json::to_value(&spec.rendered_templates).expect("blob serializes"),
        "networks": networks,
    }));
}

/// Digest of a render request, to reuse a rendering whose inputs did not change.
pub fn render_key(r: &RenderRequest) -> String {
    let jobs: Vec<Value> = r
        .jobs
        .iter()
        .map(|j| {
            json!({
                "name": j.job.name,
                "monit": j.job.monit,
                "templates": j.job.templates,
                "spec": serde_json::to_value(&j.job.spec).unwrap_or(Value::Null),
                "properties": j.properties,
                "links": j.links,
                "release": j.release,
            })
        })
        .collect();
    digest(&json!({
        "instance": serde_json::to_value(&r.instance).expect("context serializes"),
        "jobs": jobs,
    }))
}

#[cfg(test)]
mod tests {
    use bosh_api::objects::InstanceNetwork;

    use super::*;

    /// Render = deploy: the instance the director hands the renderer is the
    /// one `boshctl render --spec` reads from the same description, so both
    /// derive the same template `spec` (address from the `addressable`
    /// network, a dynamic network's placeholders, record names).
    #[test]
    fn director_instance_context_matches_boshctl_render_spec() {
        let spec = InstanceSpec {
            group: "Web_Group".into(),
            id: "uuid-3".into(),
            index: 3,
            az: Some("z2".into()),
            persistent_disk_mb: 1024,
            networks: vec![
                InstanceNetwork {
                    name: "private".into(),
                    type_: "manual".into(),
                    ip: "10.0.0.5".into(),
                    netmask: "255.255.255.0".into(),
                    gateway: "10.0.0.1".into(),
                    dns: vec!["8.8.8.8".into()],
                    default: vec!["dns".into(), "gateway".into()],
                    cloud_properties: Value::Null,
                },
                InstanceNetwork {
                    name: "public".into(),
                    type_: "dynamic".into(),
                    default: vec!["addressable".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let director = template_context("My_Dep", &spec);
        let cli: InstanceContext = bosh_api::yaml::from_str(
            "deployment: My_Dep\nname: Web_Group\nindex: 3\nid: uuid-3\naz: z2\n\
             persistent_disk: 1024\nnetworks:\n  \
             private: {type: manual, ip: 10.0.0.5, netmask: 255.255.255.0, gateway: 10.0.0.1, \
             default: [dns, gateway], dns: [8.8.8.8]}\n  \
             public: {type: dynamic, default: [addressable]}\n",
            "spec.yml",
        )
        .unwrap();
        assert_eq!(director, cli);
        let t = crate::libs::render::template_spec(&director);
        assert_eq!(t["ip"], "127.0.0.1");
        assert_eq!(t["networks"]["private"]["dns_record_name"], "3.web-group.private.my-dep.bosh");
        assert_eq!(t["persistent_disk"], 1024);
    }
}

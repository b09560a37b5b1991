//! The deployment manifest tests and benchmarks deploy: one instance group
//! `web` of one job, on the harness's cloud config (AZ `z1`, vm type
//! `small`, network `default`). One builder, so a change of the manifest
//! format is made once.

use serde_json::{Value, json};

/// A one-group manifest; start from [`WebManifest::hello`] and change fields.
#[derive(Debug, Clone)]
pub struct WebManifest {
    /// Deployment name.
    pub name: String,
    /// Release (at `latest`) the job comes from.
    pub release: String,
    /// The job.
    pub job: String,
    /// Instances of `web`.
    pub instances: u32,
    /// `update.max_in_flight` (one canary first).
    pub max_in_flight: u32,
    /// `update.canary_watch_time` and `update_watch_time` (`"300-20000"`, or a number).
    pub watch_time: Value,
    /// `persistent_disk` in MiB (0: none).
    pub persistent_disk_mb: u64,
    /// The job's properties.
    pub properties: Value,
}

impl WebManifest {
    /// `instances` of the example release's `hello` job on port 8080 of
    /// the instance's own IP (`listen_on_instance_ip`), so it runs on
    /// process VMs, which share the host's network, as on containers.
    pub fn hello(name: &str, instances: u32) -> WebManifest {
        WebManifest {
            name: name.into(),
            release: "hello".into(),
            job: "hello".into(),
            instances,
            max_in_flight: 2,
            watch_time: json!("300-20000"),
            persistent_disk_mb: 0,
            properties: json!({"port": 8080, "listen_on_instance_ip": true}),
        }
    }

    /// `job` of `release`, one instance, no properties.
    pub fn job(name: &str, release: &str, job: &str) -> WebManifest {
        WebManifest {
            release: release.into(),
            job: job.into(),
            properties: json!({}),
            ..WebManifest::hello(name, 1)
        }
    }

    /// The manifest, as a Deployment's `spec.manifest`.
    pub fn value(&self) -> Value {
        let mut group = json!({
            "name": "web",
            "instances": self.instances,
            "azs": ["z1"],
            "vm_type": "small",
            "stemcell": "default",
            "networks": [{"name": "default"}],
            "jobs": [{"name": self.job, "release": self.release, "properties": self.properties}],
        });
        if self.persistent_disk_mb > 0 {
            group["persistent_disk"] = self.persistent_disk_mb.into();
        }
        json!({
            "name": self.name,
            "releases": [{"name": self.release, "version": "latest"}],
            "stemcells": [{"alias": "default", "os": "local", "version": "latest"}],
            "update": {
                "canaries": 1,
                "max_in_flight": self.max_in_flight,
                "canary_watch_time": self.watch_time,
                "update_watch_time": self.watch_time,
            },
            "instance_groups": [group],
        })
    }
}

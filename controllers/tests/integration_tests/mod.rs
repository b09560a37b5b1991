//! Integration tests against a real etcd.

mod agent_client;
mod api;
mod api_deployments;
mod api_limits;
mod api_ssh;
mod boshd;
mod boshd_containers;
mod boshd_deploy;
mod bus;
mod cck;
mod compile;
mod compiled_release;
mod containers;
mod cpi;
mod deploy;
mod dns;
mod dns_health;
mod errands;
mod external_cpi;
#[cfg(feature = "failpoints")]
mod faults;
mod ha;
mod health;
mod kv_example;
mod leader;
mod lifecycle;
mod links;
mod multi_cpi;
mod resurrect;
mod runtime;
mod runtime_helpers;
mod task_lifecycle;
mod tasks;
mod uploads;
mod vms;

use std::time::Duration;

use bosh_api::objects::{ConfigSpec, ConfigType};
use bosh_api::store::Store;
use bosh_api::{Object, ObjectMeta};
use bosh_test_utils::TestEnv;

/// A private etcd and a store on it.
pub async fn setup() -> (TestEnv, Store) {
    let env = TestEnv::etcd_only().await.expect("start etcd");
    let store = Store::connect(&env.store_config(), "/bosh").await.expect("connect");
    (env, store)
}

/// A config object carrying a number.
pub fn config(name: &str, n: i64) -> Object<ConfigSpec> {
    Object::new(
        ObjectMeta::named(name),
        ConfigSpec { type_: ConfigType::Cloud, content: serde_json::json!({ "n": n }) },
    )
}

/// Generous deadline for conditions that normally hold within milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(20);

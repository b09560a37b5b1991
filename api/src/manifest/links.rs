//! A job's `consumes`/`provides` entries in a manifest, read once for the
//! validator (which refuses a malformed one at the door, with its path)
//! and the director's link resolution (which acts on it).

use serde_json::Value;

/// What a manifest says about one consumed link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumeRef {
    /// `nil` (or `~`): the job does without it.
    pub blocked: bool,
    /// `from`: the provider's `as` or link name.
    pub from: Option<String>,
    /// `deployment`: the deployment whose shared link to take.
    pub deployment: Option<String>,
    /// `network`: the provider's network whose addresses to hand out.
    pub network: Option<String>,
    /// `ip_addresses`: IPs even when the deployment uses DNS addresses.
    pub ip_addresses: Option<bool>,
    /// A manual link's `instances`, `properties` and `address`, as written.
    pub manual: Option<serde_json::Map<String, Value>>,
}

/// What a manifest says about one provided link it does not opt out of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvideRef {
    /// `as`: the name consumers' `from` uses.
    pub alias: Option<String>,
    /// `shared`: other deployments may consume it.
    pub shared: bool,
}

/// Keys of a manual link.
const MANUAL: [&str; 3] = ["instances", "properties", "address"];

/// Whether a manifest value opts a link out: `~` or the word `nil`.
fn is_nil(v: &Value) -> bool {
    v.is_null() || v.as_str() == Some("nil")
}

fn string(
    m: &serde_json::Map<String, Value>,
    path: &str,
    k: &str,
    errors: &mut Vec<(String, String)>,
) -> Option<String> {
    match m.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push((format!("{path}.{k}"), "expected a string".into()));
            None
        }
    }
}

fn boolean(
    m: &serde_json::Map<String, Value>,
    path: &str,
    k: &str,
    errors: &mut Vec<(String, String)>,
) -> Option<bool> {
    match m.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.push((format!("{path}.{k}"), "expected a boolean".into()));
            None
        }
    }
}

/// Reads `consumes.<link>` at `path` (`instance_groups[1].jobs[0].consumes.db`),
/// pushing (path, message) for each problem.
pub fn parse_consume(v: &Value, path: &str, errors: &mut Vec<(String, String)>) -> ConsumeRef {
    if is_nil(v) {
        return ConsumeRef { blocked: true, ..Default::default() };
    }
    let Some(m) = v.as_object() else {
        errors.push((path.to_string(), "expected a map or nil".into()));
        return ConsumeRef::default();
    };
    let c = ConsumeRef {
        blocked: false,
        from: string(m, path, "from", errors),
        deployment: string(m, path, "deployment", errors),
        network: string(m, path, "network", errors),
        ip_addresses: boolean(m, path, "ip_addresses", errors),
        manual: None,
    };
    for k in m.keys() {
        let known = ["from", "deployment", "network", "ip_addresses"];
        if !known.contains(&k.as_str()) && !MANUAL.contains(&k.as_str()) {
            errors.push((
                format!("{path}.{k}"),
                "unknown key (expected from, deployment, network, ip_addresses, or a manual \
                 link's instances, properties, address)"
                    .into(),
            ));
        }
    }
    if !MANUAL.iter().any(|k| m.contains_key(*k)) {
        return c;
    }
    if c.from.is_some() || c.deployment.is_some() {
        errors.push((
            path.to_string(),
            "a manual link (instances, properties, address) takes no from or deployment".into(),
        ));
    }
    string(m, path, "address", errors);
    match m.get("properties") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => errors.push((format!("{path}.properties"), "expected a map".into())),
    }
    match m.get("instances") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let keys = ["name", "index", "id", "az", "address", "bootstrap"];
            for (i, item) in items.iter().enumerate() {
                let ip = format!("{path}.instances[{i}]");
                let Some(o) = item.as_object() else {
                    errors.push((ip, "expected a map".into()));
                    continue;
                };
                for k in o.keys().filter(|k| !keys.contains(&k.as_str())) {
                    errors.push((
                        format!("{ip}.{k}"),
                        "unknown key (expected name, index, id, az, address, bootstrap)".into(),
                    ));
                }
            }
        }
        Some(_) => errors.push((format!("{path}.instances"), "expected a list".into())),
    }
    let manual = m.iter().filter(|(k, _)| MANUAL.contains(&k.as_str()));
    ConsumeRef { manual: Some(manual.map(|(k, v)| (k.clone(), v.clone())).collect()), ..c }
}

/// Reads `provides.<link>` at `path`: `None` when it opts out (`nil`).
pub fn parse_provide(
    v: &Value,
    path: &str,
    errors: &mut Vec<(String, String)>,
) -> Option<ProvideRef> {
    if is_nil(v) {
        return None;
    }
    let Some(m) = v.as_object() else {
        errors.push((path.to_string(), "expected a map or nil".into()));
        return Some(ProvideRef::default());
    };
    for k in m.keys().filter(|k| !["as", "shared"].contains(&k.as_str())) {
        errors.push((format!("{path}.{k}"), "unknown key (expected as, shared)".into()));
    }
    Some(ProvideRef {
        alias: string(m, path, "as", errors),
        shared: boolean(m, path, "shared", errors).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Each shape problem of a consumes entry is reported at its path.
    #[test]
    fn consume_errors_name_their_path() {
        let cases = [
            (json!(3), "c: expected a map or nil"),
            (json!({"from": 3}), "c.from: expected a string"),
            (json!({"ip_addresses": "yes"}), "c.ip_addresses: expected a boolean"),
            (json!({"form": "x"}), "c.form: unknown key"),
            (json!({"address": "a", "from": "x"}), "c: a manual link (instances, properties"),
            (json!({"instances": {}}), "c.instances: expected a list"),
            (json!({"instances": [{"ip": "1"}]}), "c.instances[0].ip: unknown key"),
            (json!({"properties": []}), "c.properties: expected a map"),
        ];
        for (v, want) in cases {
            let mut errors = Vec::new();
            parse_consume(&v, "c", &mut errors);
            let got: Vec<String> = errors.iter().map(|(p, m)| format!("{p}: {m}")).collect();
            assert!(got.iter().any(|e| e.starts_with(want)), "{v}: {want:?} not in {got:?}");
        }
    }

    /// `nil`, `~`, a plain map and a manual link read as they mean.
    #[test]
    fn consume_reads_nil_from_and_manual() {
        let mut errors = Vec::new();
        assert!(parse_consume(&json!("nil"), "c", &mut errors).blocked);
        assert!(parse_consume(&Value::Null, "c", &mut errors).blocked);
        let c = parse_consume(&json!({"from": "db", "deployment": "d"}), "c", &mut errors);
        assert_eq!((c.from.as_deref(), c.deployment.as_deref()), (Some("db"), Some("d")));
        let c = parse_consume(&json!({"address": "x.example"}), "c", &mut errors);
        assert_eq!(c.manual.unwrap()["address"], "x.example");
        assert!(errors.is_empty(), "{errors:?}");
    }

    /// A provides entry: `nil` opts out, `as`/`shared` are read, others refused.
    #[test]
    fn provide_reads_as_and_shared() {
        let mut errors = Vec::new();
        assert_eq!(parse_provide(&json!("nil"), "p", &mut errors), None);
        let p = parse_provide(&json!({"as": "x", "shared": true}), "p", &mut errors).unwrap();
        assert_eq!(p, ProvideRef { alias: Some("x".into()), shared: true });
        parse_provide(&json!({"shared": "yes", "az": 1}), "p", &mut errors);
        let got: Vec<String> = errors.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        assert_eq!(
            got,
            ["p.az: unknown key (expected as, shared)", "p.shared: expected a boolean"]
        );
    }
}

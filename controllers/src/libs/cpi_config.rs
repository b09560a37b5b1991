//! The CPI config, as BOSH's: `cpis: [{name, type, properties, exec_path}]`.
//!
//! Each entry is a CPI the director can reach besides the one boshd was
//! started with (its default CPI); a cloud config's `azs[].cpi` names one.
//! Type `local` is the embedded local CPI (properties `data_dir` and
//! `image_cache`, both optional: without them it shares the directory of
//! boshd's own local CPI). Every other type is an external executable
//! speaking BOSH's CPI protocol, and must say where it is: `exec_path`
//! (BOSH finds it as the `bin/cpi` of the CPI release's job; bosh-rs runs
//! no CPI releases, so the path is given). `properties` go into every
//! call's `context`, as BOSH passes them.
//!
//! Parsed by hand rather than through serde so that every error names its
//! path (`cpis[1].type`), as the other configs' errors do, and all of them
//! are reported at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

/// The built-in type: the embedded local CPI.
pub const LOCAL: &str = "local";

/// One CPI of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct CpiEntry {
    /// What AZs name it by; keys stemcell cids.
    pub name: String,
    /// `local`, or any other (an external executable).
    pub type_: String,
    /// Passed to the CPI (external: in every request's `context`).
    pub properties: Map<String, Value>,
    /// The executable of an external CPI.
    pub exec_path: Option<PathBuf>,
}

/// Parses a CPI config's content; every error names its path in `file`.
pub fn parse(content: &Value, file: &str) -> Result<Vec<CpiEntry>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let Some(top) = content.as_object() else {
        return Err(vec![format!("{file}: expected a mapping with key cpis")]);
    };
    for k in top.keys().filter(|k| k.as_str() != "cpis") {
        errors.push(format!("{file}: {k}: unknown key (a CPI config has only cpis)"));
    }
    let cpis = match top.get("cpis") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            errors.push(format!("{file}: cpis: expected a list"));
            return Err(errors);
        }
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, c) in cpis.iter().enumerate() {
        let path = format!("{file}: cpis[{i}]");
        let Some(c) = c.as_object() else {
            errors.push(format!("{path}: expected a mapping"));
            continue;
        };
        for k in c.keys() {
            if !["name", "type", "properties", "exec_path"].contains(&k.as_str()) {
                errors.push(format!("{path}.{k}: unknown key"));
            }
        }
        let mut text = |key: &str, required: bool| match c.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            None | Some(Value::Null) if !required => None,
            None | Some(Value::Null) => {
                errors.push(format!("{path}.{key}: missing"));
                None
            }
            Some(_) => {
                errors.push(format!("{path}.{key}: expected a non-empty string"));
                None
            }
        };
        let name = text("name", true);
        let type_ = text("type", true);
        let exec_path = text("exec_path", false).map(PathBuf::from);
        let properties = match c.get("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                errors.push(format!("{path}.properties: expected a mapping"));
                Map::new()
            }
        };
        if let Some(name) = &name
            && let Some(first) = seen.insert(name.clone(), i)
        {
            errors.push(format!("{path}.name: {name:?} is also the name of cpis[{first}]"));
        }
        match type_.as_deref() {
            Some(LOCAL) => {
                if exec_path.is_some() {
                    errors.push(format!(
                        "{path}.exec_path: type local is the embedded CPI and runs no executable"
                    ));
                }
                for key in ["data_dir", "image_cache"] {
                    if properties.get(key).is_some_and(|v| !v.is_string()) {
                        errors.push(format!("{path}.properties.{key}: expected a path"));
                    }
                }
            }
            Some(t) if exec_path.is_none() && c.get("exec_path").is_none() => errors.push(format!(
                "{path}.exec_path: missing (type {t:?} is not built in: an external CPI needs its executable)"
            )),
            _ => {}
        }
        if let (Some(name), Some(type_)) = (name, type_) {
            out.push(CpiEntry { name, type_, properties, exec_path });
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A well-formed config parses entry for entry; each kind of mistake
    /// is reported at its path, all at once.
    #[test]
    fn cpi_config_errors_name_their_paths() {
        let good = json!({"cpis": [
            {"name": "a", "type": "local", "properties": {"data_dir": "/d"}},
            {"name": "b", "type": "aws", "exec_path": "/bin/cpi", "properties": {"k": 1}},
        ]});
        let cpis = parse(&good, "config cpi/default").unwrap();
        assert_eq!(cpis.len(), 2);
        assert_eq!(cpis[0].type_, "local");
        assert_eq!(cpis[1].exec_path.as_deref(), Some(std::path::Path::new("/bin/cpi")));
        assert_eq!(cpis[1].properties["k"], json!(1));
        assert_eq!(parse(&json!({}), "f").unwrap(), []);

        let bad = json!({"cpis": [
            {"name": "a", "type": "local", "exec_path": "/x", "properties": {"data_dir": 3}},
            {"name": "a", "properties": []},
            {"name": "c", "type": "aws"},
            {"name": "", "type": "aws", "exec_path": "/x", "migrated_from": []},
            "d",
        ], "extra": 1});
        let errors = parse(&bad, "config cpi/default").unwrap_err();
        let f = "config cpi/default";
        assert_eq!(
            errors,
            [
                format!("{f}: extra: unknown key (a CPI config has only cpis)"),
                format!(
                    "{f}: cpis[0].exec_path: type local is the embedded CPI and runs no executable"
                ),
                format!("{f}: cpis[0].properties.data_dir: expected a path"),
                format!("{f}: cpis[1].type: missing"),
                format!("{f}: cpis[1].properties: expected a mapping"),
                format!("{f}: cpis[1].name: \"a\" is also the name of cpis[0]"),
                format!(
                    "{f}: cpis[2].exec_path: missing (type \"aws\" is not built in: an external CPI needs its executable)"
                ),
                format!("{f}: cpis[3].migrated_from: unknown key"),
                format!("{f}: cpis[3].name: expected a non-empty string"),
                format!("{f}: cpis[4]: expected a mapping"),
            ]
        );
        assert_eq!(
            parse(&json!({"cpis": {}}), "f").unwrap_err(),
            ["f: cpis: expected a list".to_string()]
        );
    }
}

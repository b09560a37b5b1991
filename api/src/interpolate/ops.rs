//! Ops files: `replace`, `remove` and `test` operations applied in order,
//! with go-patch's semantics and error wording, so ops files written for
//! `bosh interpolate` behave the same here.

use serde_json::{Map, Value};

use super::{
    Error,
    pointer::{Modifier, Pointer, Token},
};

/// What an operation does.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// Set the value at the path (creating optional parts).
    Replace(Value),
    /// Delete the value at the path.
    Remove,
    /// Fail unless the value at the path equals this (or is absent, for `None`).
    Test(Option<Value>),
}

/// One operation of an ops file.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// What to do.
    pub kind: OpKind,
    /// Where.
    pub path: Pointer,
    /// The op's `error:` text, shown in front of a failure.
    pub description: Option<String>,
}

impl Op {
    fn type_name(&self) -> &'static str {
        match self.kind {
            OpKind::Replace(_) => "replace",
            OpKind::Remove => "remove",
            OpKind::Test(_) => "test",
        }
    }
}

/// The operations of one ops file, with the file's name for errors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ops {
    /// The file the ops came from.
    pub file: String,
    /// The operations, applied in order.
    pub ops: Vec<Op>,
}

impl Ops {
    /// Parses an ops file (a YAML list of `{type, path, value}`); an empty file has no ops.
    pub fn parse(src: &str, file: &str) -> Result<Ops, Error> {
        let v = crate::yaml::parse_value(src, file)?;
        Ops::from_value(&v, file)
    }

    /// Reads ops from an already parsed value.
    pub fn from_value(v: &Value, file: &str) -> Result<Ops, Error> {
        let def_err = |index: Option<usize>, message: String| Error::OpDefinition {
            file: file.to_string(),
            index,
            message,
        };
        let items = match v {
            Value::Null => return Ok(Ops { file: file.to_string(), ops: Vec::new() }),
            Value::Array(items) => items,
            _ => return Err(def_err(None, "expected a list of operations".to_string())),
        };
        let mut ops = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Some(def) = item.as_object() else {
                return Err(def_err(Some(i), "expected an operation (a map)".to_string()));
            };
            ops.push(op_from_def(def).map_err(|m| def_err(Some(i), m))?);
        }
        Ok(Ops { file: file.to_string(), ops })
    }

    /// Applies every operation in order to `doc`.
    pub fn apply(&self, mut doc: Value) -> Result<Value, Error> {
        for (index, op) in self.ops.iter().enumerate() {
            let res = match &op.kind {
                OpKind::Replace(value) => replace(&mut doc, &op.path, value.clone()),
                OpKind::Remove => remove(&mut doc, &op.path),
                OpKind::Test(expected) => test(&doc, &op.path, expected.as_ref()),
            };
            if let Err(message) = res {
                let message = match &op.description {
                    Some(d) => format!("{d}: {message}"),
                    None => message,
                };
                return Err(Error::Op {
                    file: self.file.clone(),
                    index,
                    op: op.type_name(),
                    path: op.path.to_string(),
                    message,
                });
            }
        }
        Ok(doc)
    }
}

fn op_from_def(def: &Map<String, Value>) -> Result<Op, String> {
    for k in def.keys() {
        if !["type", "path", "value", "absent", "error"].contains(&k.as_str()) {
            return Err(format!("unknown key {k:?} (expected type, path, value, absent, error)"));
        }
    }
    let ty = def.get("type").and_then(Value::as_str).unwrap_or_default();
    let path = match def.get("path") {
        None => return Err(format!("{} operation: Missing path", title(ty))),
        Some(Value::String(p)) => {
            Pointer::parse(p).map_err(|e| format!("{} operation: Invalid path: {e}", title(ty)))?
        }
        Some(_) => return Err("expected the path to be a string".to_string()),
    };
    let value = def.get("value");
    let kind = match ty {
        "replace" => OpKind::Replace(value.cloned().ok_or("Replace operation: Missing value")?),
        "remove" if value.is_some() => return Err("Remove operation: Cannot specify value".into()),
        "remove" => OpKind::Remove,
        "test" => match (value, def.get("absent")) {
            (Some(v), _) => OpKind::Test(Some(v.clone())),
            (None, Some(Value::Bool(true))) => OpKind::Test(None),
            _ => return Err("Test operation: Missing value or absent".into()),
        },
        other => {
            return Err(format!(
                "Unknown operation with type {other:?} (expected \"replace\", \"remove\" or \"test\")"
            ));
        }
    };
    let description = def.get("error").and_then(Value::as_str).map(str::to_string);
    Ok(Op { kind, path, description })
}

fn title(ty: &str) -> String {
    let mut c = ty.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_else(|| "Unknown".into())
}

/// Go's name for a decoded YAML value's type, as go-patch prints it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[interface {}]interface {}",
    }
}

fn mismatch(what: &str, path: &Pointer, v: &Value) -> String {
    format!("Expected to find {what} at path '{path}' but found '{}'", go_type(v))
}

fn missing_key(key: &str, path: &Pointer, map: &Map<String, Value>) -> String {
    let others = if map.is_empty() {
        "found no other map keys".to_string()
    } else {
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        keys.sort_unstable();
        format!("found map keys: '{}'", keys.join("', '"))
    };
    format!("Expected to find a map key '{key}' for path '{path}' ({others})")
}

/// Resolves an index with `:prev`/`:next` to a position in an array of `len` items.
fn concrete_index(
    index: i64,
    mods: &[Modifier],
    len: usize,
    path: &Pointer,
) -> Result<usize, String> {
    let mut n = index;
    for m in mods {
        match m {
            Modifier::Prev => n -= 1,
            Modifier::Next => n += 1,
            _ => {
                return Err(format!(
                    "Expected to find one of the following modifiers: 'prev', 'next', but found modifier '{m:?}'"
                ));
            }
        }
    }
    let len_i = len as i64;
    if n >= len_i || -n > len_i {
        return Err(format!(
            "Expected to find array index '{n}' but found array of length '{len}' for path '{path}'"
        ));
    }
    Ok(if n < 0 { (len_i + n) as usize } else { n as usize })
}

/// Where a replace puts its value in an array: over an item, or inserted.
fn insertion(
    index: i64,
    mods: &[Modifier],
    len: usize,
    path: &Pointer,
) -> Result<(usize, bool), String> {
    let (mut before, mut after) = (false, false);
    let mut rest = Vec::new();
    for m in mods {
        if before || after {
            let which = if before { "before" } else { "after" };
            return Err(format!(
                "Expected to not find any modifiers after '{which}' modifier, but found modifier '{m:?}'"
            ));
        }
        match m {
            Modifier::Before => before = true,
            Modifier::After => after = true,
            other => rest.push(*other),
        }
    }
    let mut n = concrete_index(index, &rest, len, path)?;
    if after {
        n += 1;
    }
    Ok((n, before || after))
}

/// Indexes of the array items that are maps whose `key` is the string `value`.
fn matching(items: &[Value], key: &str, value: &str) -> Vec<usize> {
    (0..items.len()).filter(|i| items[*i].get(key).and_then(Value::as_str) == Some(value)).collect()
}

fn exactly_one(idxs: &[usize], path: &Pointer) -> Result<usize, String> {
    match idxs {
        [one] => Ok(*one),
        _ => Err(format!(
            "Expected to find exactly one matching array item for path '{path}' but found {}",
            idxs.len()
        )),
    }
}

fn replace(doc: &mut Value, ptr: &Pointer, value: Value) -> Result<(), String> {
    if ptr.tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    replace_at(doc, ptr, 0, value)
}

fn replace_at(node: &mut Value, ptr: &Pointer, i: usize, value: Value) -> Result<(), String> {
    let is_last = i + 1 == ptr.tokens.len();
    let here = ptr.prefix(i + 1);
    match &ptr.tokens[i] {
        Token::Index { index, modifiers } => {
            let Value::Array(items) = node else { return Err(mismatch("an array", &here, node)) };
            if is_last {
                let (n, insert) = insertion(*index, modifiers, items.len(), &here)?;
                if insert {
                    items.insert(n, value)
                } else {
                    items[n] = value
                }
                Ok(())
            } else {
                let n = concrete_index(*index, modifiers, items.len(), &here)?;
                replace_at(&mut items[n], ptr, i + 1, value)
            }
        }
        Token::AfterLast => {
            let Value::Array(items) = node else { return Err(mismatch("an array", &here, node)) };
            if !is_last {
                return Err(format!("Expected after last index token to be last in path '{ptr}'"));
            }
            items.push(value);
            Ok(())
        }
        Token::Match { key, value: want, optional, modifiers } => {
            let Value::Array(items) = node else { return Err(mismatch("an array", &here, node)) };
            let idxs = matching(items, key, want);
            if *optional && idxs.is_empty() {
                if is_last {
                    items.push(value);
                    return Ok(());
                }
                let mut created = Map::new();
                created.insert(key.clone(), Value::String(want.clone()));
                items.push(Value::Object(created));
                let last = items.len() - 1;
                return replace_at(&mut items[last], ptr, i + 1, value);
            }
            let found = exactly_one(&idxs, &here)?;
            if is_last {
                let (n, insert) = insertion(found as i64, modifiers, items.len(), &here)?;
                if insert {
                    items.insert(n, value)
                } else {
                    items[n] = value
                }
                Ok(())
            } else {
                let n = concrete_index(found as i64, modifiers, items.len(), &here)?;
                replace_at(&mut items[n], ptr, i + 1, value)
            }
        }
        Token::Key { key, optional } => {
            let Value::Object(map) = node else { return Err(mismatch("a map", &here, node)) };
            if !map.contains_key(key) && !optional {
                return Err(missing_key(key, &here, map));
            }
            if is_last {
                map.insert(key.clone(), value);
                return Ok(());
            }
            if !map.contains_key(key) {
                let created = match &ptr.tokens[i + 1] {
                    Token::AfterLast | Token::Match { .. } => Value::Array(Vec::new()),
                    Token::Key { .. } => Value::Object(Map::new()),
                    Token::Index { .. } => {
                        return Err(format!(
                            "Expected to find key, matching index or after last index token at path '{}'",
                            ptr.prefix(i + 2)
                        ));
                    }
                };
                map.insert(key.clone(), created);
            }
            replace_at(map.get_mut(key).expect("present or just inserted"), ptr, i + 1, value)
        }
    }
}

fn remove(doc: &mut Value, ptr: &Pointer) -> Result<(), String> {
    if ptr.tokens.is_empty() {
        return Err("Cannot remove entire document".to_string());
    }
    remove_at(doc, ptr, 0)
}

fn remove_at(node: &mut Value, ptr: &Pointer, i: usize) -> Result<(), String> {
    let is_last = i + 1 == ptr.tokens.len();
    let here = ptr.prefix(i + 1);
    match &ptr.tokens[i] {
        Token::Index { index, modifiers } => {
            let Value::Array(items) = node else { return Err(mismatch("an array", &here, node)) };
            let n = concrete_index(*index, modifiers, items.len(), &here)?;
            if is_last {
                items.remove(n);
                Ok(())
            } else {
                remove_at(&mut items[n], ptr, i + 1)
            }
        }
        Token::AfterLast => {
            Err(format!("Expected not to find after last index token in path '{ptr}'"))
        }
        Token::Match { key, value, optional, modifiers } => {
            let Value::Array(items) = node else { return Err(mismatch("an array", &here, node)) };
            let idxs = matching(items, key, value);
            if *optional && idxs.is_empty() {
                return Ok(());
            }
            let found = exactly_one(&idxs, &here)?;
            let n = concrete_index(found as i64, modifiers, items.len(), &here)?;
            if is_last {
                items.remove(n);
                Ok(())
            } else {
                remove_at(&mut items[n], ptr, i + 1)
            }
        }
        Token::Key { key, optional } => {
            let Value::Object(map) = node else { return Err(mismatch("a map", &here, node)) };
            if !map.contains_key(key) {
                return if *optional { Ok(()) } else { Err(missing_key(key, &here, map)) };
            }
            if is_last {
                map.shift_remove(key);
                Ok(())
            } else {
                remove_at(map.get_mut(key).expect("checked above"), ptr, i + 1)
            }
        }
    }
}

/// The value at a path (`bosh interpolate --path`); a missing optional part gives `None`.
pub fn find<'a>(doc: &'a Value, ptr: &Pointer) -> Result<Option<&'a Value>, String> {
    let mut node = doc;
    for (i, token) in ptr.tokens.iter().enumerate() {
        let here = ptr.prefix(i + 1);
        node = match token {
            Token::Index { index, modifiers } => {
                let Value::Array(items) = node else {
                    return Err(mismatch("an array", &here, node));
                };
                &items[concrete_index(*index, modifiers, items.len(), &here)?]
            }
            Token::AfterLast => {
                return Err(format!(
                    "Expected not to find after last index token in path '{ptr}' (not supported in find operations)"
                ));
            }
            Token::Match { key, value, optional, modifiers } => {
                let Value::Array(items) = node else {
                    return Err(mismatch("an array", &here, node));
                };
                let idxs = matching(items, key, value);
                if *optional && idxs.is_empty() {
                    return Ok(None);
                }
                let found = exactly_one(&idxs, &here)?;
                &items[concrete_index(found as i64, modifiers, items.len(), &here)?]
            }
            Token::Key { key, optional } => {
                let Value::Object(map) = node else { return Err(mismatch("a map", &here, node)) };
                match map.get(key) {
                    Some(v) => v,
                    None if *optional => return Ok(None),
                    None => return Err(missing_key(key, &here, map)),
                }
            }
        };
    }
    Ok(Some(node))
}

fn test(doc: &Value, ptr: &Pointer, expected: Option<&Value>) -> Result<(), String> {
    let found = match find(doc, ptr) {
        Ok(v) => v,
        Err(_) if expected.is_none() => None,
        Err(e) => return Err(e),
    };
    match (expected, found) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(format!("Expected to not find '{ptr}'")),
        (Some(want), Some(got)) if want == got => Ok(()),
        (Some(_), _) => Err(format!("Found value does not match expected value at '{ptr}'")),
    }
}

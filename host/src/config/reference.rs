//! The configuration reference (`docs/configuration.md`), generated from the config
//! structs' doc comments and defaults through their JSON schema, so that docs and code
//! cannot drift: `flowenrich config-reference` prints it, and a test fails when the
//! committed file differs.

use super::PipelineConfig;
use serde_json::Value;
use std::fmt::Write;

/// The reference as Markdown.
pub fn markdown() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator();
    let schema = generator.into_root_schema_for::<PipelineConfig>();
    let root = schema.as_value();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every key of a pipeline file, generated from the code (`flowenrich config-reference`);\n\
         a test fails when this file is stale. Relative paths are resolved against the\n\
         pipeline file's directory. Unknown keys are refused, naming the key.\n\n\
         ## The pipeline\n\nTop-level keys.\n\n",
    );
    let top = properties(root);
    let globals: Vec<(String, Value)> = top
        .iter()
        .filter(|(name, _)| !super::SECTIONS.contains(&name.as_str()))
        .cloned()
        .collect();
    table(&mut out, "", &globals, &required(root));
    let sections = [
        ("metadata", "Metadata tables", "[metadata.<name>]"),
        ("sources", "Sources", "[sources.<id>]"),
        ("transforms", "Transforms", "[transforms.<id>]"),
        ("sinks", "Sinks", "[sinks.<id>]"),
    ];
    for (name, title, header) in sections {
        let Some((_, section)) = top.iter().find(|(key, _)| key == name) else {
            continue;
        };
        let _ = write!(out, "## {title}\n\n{}\n\n", description(section));
        let kinds = section
            .get("additionalProperties")
            .map(variants)
            .unwrap_or_default();
        for kind in kinds {
            let tag = properties(&kind)
                .iter()
                .find(|(key, _)| key == "type")
                .and_then(|(_, tag)| allowed(tag).first().cloned())
                .unwrap_or_default()
                .replace('`', "");
            let _ = write!(
                out,
                "### `type = {tag}`\n\n`{header}`: {}\n\n",
                description(&kind)
            );
            let keys: Vec<(String, Value)> = properties(&kind)
                .into_iter()
                .filter(|(key, _)| key != "type")
                .collect();
            table(&mut out, header, &keys, &required(&kind));
        }
    }
    out
}

/// A table of `keys`, then a sub-table for each key that is itself a table.
fn table(out: &mut String, header: &str, keys: &[(String, Value)], needed: &[String]) {
    out.push_str("| key | type | default | description |\n|---|---|---|---|\n");
    let mut nested = Vec::new();
    for (key, schema) in keys {
        let schema = non_null(schema);
        let kind = type_of(&schema);
        let default = match schema.get("default").filter(|d| !d.is_null()) {
            Some(default) => format!("`{}`", toml_value(default)),
            None if needed.contains(key) => "required".to_string(),
            None => String::new(),
        };
        let mut text = description(&schema);
        let values = allowed(&schema);
        if values.len() > 1 {
            let _ = write!(text, " One of {}.", values.join(", "));
        }
        let _ = writeln!(
            out,
            "| `{key}` | {kind} | {default} | {} |",
            text.replace('|', "\\|")
        );
        if kind == "table" {
            nested.push((key.clone(), schema));
        }
    }
    out.push('\n');
    for (key, schema) in nested {
        let sub = if header.is_empty() {
            format!("[{key}]")
        } else {
            format!("{}.{key}]", header.trim_end_matches(']'))
        };
        let _ = write!(out, "#### `{sub}`\n\n");
        table(out, &sub, &properties(&schema), &required(&schema));
    }
}

/// The schema's description, on one line.
fn description(schema: &Value) -> String {
    let text = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The object's properties, with those of its `allOf` parts (flattened structs), in
/// declaration order.
fn properties(schema: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(Value::Object(properties)) = schema.get("properties") {
        out.extend(properties.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(Value::Array(parts)) = schema.get("allOf") {
        for sub in parts {
            out.extend(properties(sub));
        }
    }
    out
}

/// The keys the object requires, with those of its `allOf` parts.
fn required(schema: &Value) -> Vec<String> {
    let mut out: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Array(parts)) = schema.get("allOf") {
        for sub in parts {
            out.extend(required(sub));
        }
    }
    out
}

/// The variants of an enum schema (`oneOf` / `anyOf`).
fn variants(schema: &Value) -> Vec<Value> {
    ["oneOf", "anyOf"]
        .iter()
        .find_map(|key| schema.get(*key).and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// An optional value's schema without its `null` alternative.
fn non_null(schema: &Value) -> Value {
    let options = variants(schema);
    let mut rest: Vec<&Value> = options
        .iter()
        .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
        .collect();
    if !options.is_empty() && rest.len() == 1 && options.len() == 2 {
        let mut inner = rest.remove(0).clone();
        if let (Value::Object(inner), Value::Object(outer)) = (&mut inner, schema) {
            for key in ["description", "default"] {
                if let Some(value) = outer.get(key) {
                    inner.entry(key).or_insert(value.clone());
                }
            }
        }
        return inner;
    }
    schema.clone()
}

/// The values a string enum allows, quoted as TOML.
fn allowed(schema: &Value) -> Vec<String> {
    if let Some(value) = schema.get("const") {
        return vec![format!("`{}`", toml_value(value))];
    }
    if let Some(Value::Array(values)) = schema.get("enum") {
        return values
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| format!("`{}`", toml_value(v)))
            .collect();
    }
    variants(schema).iter().flat_map(allowed).collect()
}

/// The TOML type of a value's schema.
fn type_of(schema: &Value) -> String {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let named = |t: &str| match t {
        "integer" => "integer".to_string(),
        "string" => "string".to_string(),
        "boolean" => "boolean".to_string(),
        "object" => "table".to_string(),
        "array" => {
            let items = schema.get("items").map(type_of).unwrap_or_default();
            format!("array of {items}s")
        }
        other => other.to_string(),
    };
    match types.iter().find(|t| **t != "null") {
        Some(t) => named(t),
        None if !allowed(schema).is_empty() => "string".to_string(),
        None => String::new(),
    }
}

/// A JSON value written as TOML.
fn toml_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{s}\""),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".to_string(),
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_value(v)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = super::markdown();
        if std::env::var_os("FLOWENRICH_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
            return;
        }
        assert!(
            committed == generated,
            "docs/configuration.md is stale: run `cargo run -p flowenrich -- config-reference > docs/configuration.md` (or set FLOWENRICH_BLESS=1 and run this test)"
        );
    }

    #[test]
    fn every_key_is_documented() {
        let text = super::markdown();
        for key in [
            "`drain_timeout_secs`",
            "`type = \"aws_kinesis_streams\"`",
            "`max_in_flight_mib`",
            "`table_name`",
            "`holdback_secs`",
            "`granularity_secs`",
            "`retention_secs`",
            "`partition_key_field`",
            "`address`",
        ] {
            assert!(text.contains(key), "{key} missing from the reference");
        }
        for line in text.lines().filter(|l| l.starts_with("| `")) {
            assert!(
                !line.ends_with("|  |"),
                "a key without a description: {line}"
            );
        }
    }
}

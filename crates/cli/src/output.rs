//! Human-readable tables (Vault's `Key  Value` layout) and JSON output.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(" ")),
        Value::Object(_) => v.to_string(),
        other => other.to_string(),
    }
}

pub(crate) fn table(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(3).max(3);
    let mut out = format!(
        "{:<width$}    {}\n{:<width$}    {}\n",
        "Key", "Value", "---", "-----"
    );
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}    {v}\n"));
    }
    out
}

pub(crate) fn object_rows(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Object(m) => {
            let mut rows: Vec<(String, String)> =
                m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect();
            rows.sort();
            rows
        }
        _ => Vec::new(),
    }
}

pub(crate) fn print(format: Format, json: &Value, rows: Vec<(String, String)>) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(json).unwrap_or_default()),
        Format::Table => print!("{}", table(&rows)),
    }
}

pub(crate) fn list(format: Format, keys: &Value) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(keys).unwrap_or_default()),
        Format::Table => {
            println!("Keys\n----");
            if let Value::Array(a) = keys {
                for k in a {
                    println!("{}", scalar(k));
                }
            }
        }
    }
}

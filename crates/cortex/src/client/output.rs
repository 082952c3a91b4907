//! Plain-text rendering of API objects for the terminal.

use serde_json::Value;

/// A string field or `-`.
pub fn text(value: &Value, field: &str) -> String {
    match &value[field] {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Renders rows as aligned columns under a header.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (idx, cell) in row.iter().enumerate() {
            widths[idx] = widths[idx].max(cell.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(
                |(idx, cell)| {
                    if idx + 1 == cells.len() { cell.clone() } else { format!("{cell:<width$}", width = widths[idx]) }
                },
            )
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![render(headers.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.into_iter().map(render));
    out.join("\n")
}

/// `key: value` lines for one object.
pub fn fields(value: &Value, names: &[&str]) -> String {
    names.iter().map(|name| format!("{name:<16} {}", text(value, name))).collect::<Vec<_>>().join("\n")
}

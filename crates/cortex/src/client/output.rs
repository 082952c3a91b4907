//! Plain-text rendering of API objects for the terminal.

use serde_json::Value;

/// A string field or `-`, safe to print ([`escape`], line breaks included: a cell is one line).
pub fn text(value: &Value, field: &str) -> String {
    match &value[field] {
        Value::Null => "-".into(),
        Value::String(text) => escape(text, false),
        other => escape(&other.to_string(), false),
    }
}

/// Server data made safe for a terminal: control characters (ESC, NUL, C1…) and bidirectional controls
/// are shown as `\u{…}` instead of being interpreted, so stored text cannot move the cursor, recolour the
/// screen or reorder what is shown. With `keep_lines`, tab and line feed stay as they are (prose).
pub fn escape(text: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
        if (c.is_control() && !(keep_lines && matches!(c, '\n' | '\t'))) || bidi {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_interpreted() {
        assert_eq!(escape("a\u{1b}[2Jb", true), "a\\u{1b}[2Jb");
        assert_eq!(escape("x\u{202e}y\0", false), "x\\u{202e}y\\u{0}");
        assert_eq!(escape("one\ntwo\t3", true), "one\ntwo\t3");
        assert_eq!(escape("one\ntwo", false), "one\\u{a}two");
        assert_eq!(text(&serde_json::json!({"name": "evil\u{1b}]0;title\u{7}"}), "name"), "evil\\u{1b}]0;title\\u{7}");
    }
}

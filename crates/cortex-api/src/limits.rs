//! Sizes and characters of text fields, in one place (issue 12, points 14 and 18): every string a client
//! stores has a length limit (documented as `maxLength` in the OpenAPI document), identifiers and names
//! refuse control characters and bidirectional overrides (they would rewrite a terminal or reorder what a
//! reader sees), and free text refuses control characters other than tab and line breaks. List answers are
//! bounded in bytes as well as in items.

use serde::Serialize;

use crate::views::List;

/// Names shown to people: agents, keys, servers, tools.
pub const NAME: usize = 100;
/// Short free-text labels such as an agent's role.
pub const LABEL: usize = 200;
/// Descriptions of agents and tools.
pub const DESCRIPTION: usize = 4_000;
/// Provider and model names, tool references, skill and sub-agent names.
pub const REFERENCE: usize = 200;
/// URLs of webhooks and MCP servers.
pub const URL: usize = 2_048;
/// Header and environment variable names.
pub const HEADER_NAME: usize = 256;
/// Header and environment variable values, commands and arguments.
pub const HEADER_VALUE: usize = 8_192;
/// Items in a list field (tools, skills, arguments, headers…).
pub const LIST_ITEMS: usize = 256;
/// Largest list answer: beyond it the page ends early and `next_cursor` continues it.
pub const LIST_BYTES: usize = 1024 * 1024;

/// How a text field may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Identifiers and names: no control characters at all, no bidirectional controls.
    Name,
    /// Prose: tab, line feed and carriage return allowed; other control characters refused.
    Free,
}

/// Collects the problems of a request's fields for one `validation_failed` answer.
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(&'static str, String)>);

impl Fields {
    /// Checks `value` of `field` against `max` characters and the character rules of `text`.
    pub fn text(&mut self, field: &'static str, value: &str, max: usize, text: Text) -> &mut Self {
        if value.chars().count() > max {
            self.0.push((field, format!("must be at most {max} characters")));
        } else if let Some(bad) = value.chars().find(|c| !allowed(*c, text)) {
            self.0.push((field, format!("must not contain control character U+{:04X}", u32::from(bad))));
        }
        self
    }

    /// [`Fields::text`] when the value is present.
    pub fn optional(&mut self, field: &'static str, value: Option<&str>, max: usize, text: Text) -> &mut Self {
        if let Some(value) = value {
            self.text(field, value, max, text);
        }
        self
    }

    /// Checks a list of names: at most [`LIST_ITEMS`] entries of at most `max` characters each.
    pub fn names<'a>(
        &mut self,
        field: &'static str,
        values: impl IntoIterator<Item = &'a String>,
        max: usize,
    ) -> &mut Self {
        let values: Vec<&String> = values.into_iter().collect();
        if values.len() > LIST_ITEMS {
            self.0.push((field, format!("must have at most {LIST_ITEMS} entries")));
            return self;
        }
        for value in values {
            let before = self.0.len();
            self.text(field, value, max, Text::Name);
            if self.0.len() > before {
                break;
            }
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `c` may appear in a field written as `text`.
pub fn allowed(c: char, text: Text) -> bool {
    let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
    match text {
        Text::Name => !c.is_control() && !bidi,
        Text::Free => !c.is_control() || matches!(c, '\t' | '\n' | '\r'),
    }
}

impl<T: utoipa::ToSchema + Serialize> List<T> {
    /// Ends the page early once its items would exceed [`LIST_BYTES`] of JSON (at least one item is always
    /// kept); the cursor (`cursor` of the last item kept) then continues after it.
    pub(crate) fn within_budget(mut self, cursor: impl Fn(&T) -> String) -> Self {
        let mut total = 0;
        let mut keep = self.items.len();
        for (index, item) in self.items.iter().enumerate() {
            total += serde_json::to_vec(item).map_or(0, |bytes| bytes.len());
            if total > LIST_BYTES && index > 0 {
                keep = index;
                break;
            }
        }
        if keep < self.items.len() {
            self.items.truncate(keep);
            self.next_cursor = self.items.last().map(cursor);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_terminal_and_bidi_controls_free_text_keeps_line_breaks() {
        for c in ['\u{1b}', '\0', '\u{7f}', '\u{85}', '\u{202E}', '\u{2066}', '\n', '\t'] {
            assert!(!allowed(c, Text::Name), "{:?} in a name", c);
        }
        for c in ['\t', '\n', '\r', 'é', '\u{202E}', 'א'] {
            assert!(allowed(c, Text::Free), "{:?} in free text", c);
        }
        for c in ['\u{1b}', '\0', '\u{9b}'] {
            assert!(!allowed(c, Text::Free), "{:?} in free text", c);
        }
    }

    #[test]
    fn the_first_problem_of_a_field_is_named_with_its_limit() {
        let mut fields = Fields::default();
        fields.text("description", &"x".repeat(DESCRIPTION + 1), DESCRIPTION, Text::Free);
        fields.text("name", "evil\u{1b}[2J", NAME, Text::Name);
        fields.text("role", "fine", LABEL, Text::Free);
        assert_eq!(fields.0.len(), 2);
        assert_eq!(fields.0[0], ("description", format!("must be at most {DESCRIPTION} characters")));
        assert!(fields.0[1].1.contains("U+001B"));
    }
}

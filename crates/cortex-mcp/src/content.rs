//! The result of a `tools/call`, reduced to what a model can consume (SPEC §6.4): text, images for
//! vision-capable models, and resources as short summaries.
//!
//! Parsing works on the wire JSON of `CallToolResult` rather than on rmcp's content enums, so new
//! content kinds in a later protocol revision degrade to a placeholder instead of breaking the build.

use serde_json::Value;

/// One item of a tool result's `content` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
    /// Passed to vision-capable models as is.
    Image {
        mime_type: String,
        data_base64: String,
    },
    /// An embedded resource or a resource link; `summary` is its text, or a description when binary.
    Resource {
        uri: String,
        summary: String,
    },
}

/// What a tool call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub parts: Vec<ContentPart>,
    /// The tool reported a failure (`isError: true`); the parts explain it.
    pub is_error: bool,
}

impl CallOutcome {
    /// Builds the outcome from a `CallToolResult` JSON object. Falls back to `structuredContent` when a
    /// server returns no content parts.
    pub(crate) fn from_result_json(result: &Value) -> Self {
        let mut parts: Vec<ContentPart> =
            result.get("content").and_then(Value::as_array).into_iter().flatten().map(content_part).collect();
        if parts.is_empty()
            && let Some(structured) = result.get("structuredContent").filter(|value| !value.is_null())
        {
            parts.push(ContentPart::Text(structured.to_string()));
        }
        let is_error = result.get("isError").and_then(Value::as_bool).unwrap_or(false);
        Self { parts, is_error }
    }

    /// The result as one text for models without vision: parts joined with newlines, resources
    /// summarised, images as `[image <mime>, <n> bytes]`.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                ContentPart::Text(text) => text.clone(),
                ContentPart::Image { mime_type, data_base64 } => {
                    format!("[image {mime_type}, {} bytes]", decoded_len(data_base64))
                }
                ContentPart::Resource { uri, summary } if summary.is_empty() => {
                    format!("[resource {uri}]")
                }
                ContentPart::Resource { uri, summary } => format!("[resource {uri}]\n{summary}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn content_part(item: &Value) -> ContentPart {
    let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    match item.get("type").and_then(Value::as_str).unwrap_or_default() {
        "text" => ContentPart::Text(field("text")),
        "image" => ContentPart::Image { mime_type: field("mimeType"), data_base64: field("data") },
        "audio" => ContentPart::Text(format!("[audio {}, {} bytes]", field("mimeType"), decoded_len(&field("data")))),
        "resource" => embedded_resource(item.get("resource").unwrap_or(&Value::Null)),
        "resource_link" => {
            let description = [field("name"), field("description")]
                .into_iter()
                .filter(|text| !text.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            ContentPart::Resource { uri: field("uri"), summary: description }
        }
        other => ContentPart::Text(format!("[unsupported content type `{other}`]")),
    }
}

fn embedded_resource(resource: &Value) -> ContentPart {
    let field = |name: &str| resource.get(name).and_then(Value::as_str);
    let uri = field("uri").unwrap_or_default().to_owned();
    let summary = match (field("text"), field("blob")) {
        (Some(text), _) => text.to_owned(),
        (None, Some(blob)) => {
            format!("[binary {}, {} bytes]", field("mimeType").unwrap_or("application/octet-stream"), decoded_len(blob))
        }
        (None, None) => String::new(),
    };
    ContentPart::Resource { uri, summary }
}

/// Size of the bytes a base64 string encodes, without decoding it.
fn decoded_len(data_base64: &str) -> usize {
    let significant = data_base64.bytes().filter(|byte| !byte.is_ascii_whitespace() && *byte != b'=').count();
    significant * 3 / 4
}

#[cfg(test)]
mod tests;

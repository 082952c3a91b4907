//! Reading a response body as a stream up to a cap, and deciding whether it is text.

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use url::Url;

use super::{GuardedResponse, error_chain};
use crate::ToolError;

/// Reads at most `cap` bytes of the body; the rest is never downloaded.
pub(super) async fn read(mut response: reqwest::Response, url: Url, cap: usize) -> Result<GuardedResponse, ToolError> {
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = BytesMut::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(|error| {
        ToolError::Failed(format!("reading the response body failed: {}", error_chain(&error.without_url())))
    })? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(GuardedResponse { status, url, headers, body: body.freeze(), truncated })
}

/// The lowercased media type of the `Content-Type` header, without parameters.
pub(super) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

/// Whether a body is text a model can read. Without a content type, UTF-8 without NUL bytes counts as text.
pub(super) fn is_textual(media_type: Option<&str>, body: &Bytes) -> bool {
    match media_type {
        Some(media_type) => {
            let (kind, subtype) = media_type.split_once('/').unwrap_or((media_type, ""));
            kind == "text"
                || subtype.ends_with("+json")
                || subtype.ends_with("+xml")
                || (kind == "application"
                    && matches!(
                        subtype,
                        "json"
                            | "xml"
                            | "javascript"
                            | "ecmascript"
                            | "x-www-form-urlencoded"
                            | "yaml"
                            | "x-yaml"
                            | "x-ndjson"
                            | "graphql"
                            | "toml"
                            | "csv"
                            | "sql"
                    ))
        }
        None => !body.contains(&0) && is_utf8(body),
    }
}

/// The body as UTF-8 text, replacing invalid sequences; a character cut off by the cap is dropped.
pub(super) fn decode_text(body: &[u8]) -> String {
    let cut = match std::str::from_utf8(body) {
        Ok(text) => return text.to_owned(),
        Err(error) if error.error_len().is_none() => &body[..error.valid_up_to()],
        Err(_) => body,
    };
    String::from_utf8_lossy(cut).into_owned()
}

/// Whether `body` is UTF-8, allowing a last character cut off by the cap.
fn is_utf8(body: &[u8]) -> bool {
    match std::str::from_utf8(body) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none(),
    }
}

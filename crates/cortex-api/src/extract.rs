//! Request extractors that answer bad input with the error envelope instead of axum's plain text.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use cortex_store::Cursor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::error::{ApiError, Code};

/// JSON body; malformed JSON, wrong types, missing or unknown fields → 400, too large → 413.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(err) => {
            // serde's message names the field and the problem ("unknown field `x`", "invalid type…").
            let detail = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_else(|| err.body_text());
            ApiError::new(Code::ValidationFailed, format!("invalid request body: {detail}"))
        }
        JsonRejection::JsonSyntaxError(err) => {
            let detail = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_else(|| err.body_text());
            ApiError::bad_request(format!("malformed JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("expected a JSON body with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(err) if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(Code::PayloadTooLarge, "request body is larger than the 1 MiB limit")
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

/// Query string; unparsable values → 400.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                Err(ApiError::bad_request(format!("invalid query string: {}", err.body_text())))
            }
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// The pagination parameters every list accepts (SPEC §2.3).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageParams {
    /// Validated `(cursor, limit)`.
    pub fn parse(&self) -> Result<(Option<Cursor>, usize), ApiError> {
        self.parse_with(Cursor::decode)
    }

    /// Validated `(key after which the page starts, limit)` of a list ordered by text keys
    /// ([`crate::views::List::from_all`]).
    pub fn parse_key(&self) -> Result<(Option<String>, usize), ApiError> {
        self.parse_with(|text| String::from_utf8(hex::decode(text).ok()?).ok())
    }

    fn parse_with<C>(&self, decode: impl FnOnce(&str) -> Option<C>) -> Result<(Option<C>, usize), ApiError> {
        let limit = match self.limit {
            None => 50,
            Some(limit @ 1..=200) => limit as usize,
            Some(other) => {
                return Err(ApiError::validation(&[("limit", format!("must be between 1 and 200, got {other}"))]));
            }
        };
        let cursor = match &self.cursor {
            None => None,
            Some(text) => Some(
                decode(text)
                    .ok_or_else(|| ApiError::validation(&[("cursor", "is not a cursor from this API".into())]))?,
            ),
        };
        Ok((cursor, limit))
    }
}

/// The cursor continuing a list ordered by text keys after `key` (opaque to clients, URL-safe).
pub fn encode_key(key: &str) -> String {
    hex::encode(key)
}

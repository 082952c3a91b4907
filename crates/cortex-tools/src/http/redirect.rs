//! Manual redirect following, so that every hop passes the SSRF check before it is contacted.

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use url::Url;

use crate::ToolError;

/// What is sent on one hop of the redirect chain.
pub(super) struct Hop {
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) body: Option<Bytes>,
}

/// The next hop if `response` is a redirect with a `Location`, resolved against the current URL. Like
/// browsers, 303 (and 301/302 after a POST) turn into a GET without body; 307/308 repeat the request.
pub(super) fn next_hop(hop: &Hop, response: &reqwest::Response) -> Result<Option<Hop>, ToolError> {
    let status = response.status();
    if !matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return Ok(None);
    }
    let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
        return Ok(None);
    };
    let invalid = || ToolError::Failed(format!("HTTP {status} with an invalid Location header"));
    let location = location.to_str().map_err(|_| invalid())?;
    let url = hop.url.join(location).map_err(|_| invalid())?;
    let becomes_get = (status == StatusCode::SEE_OTHER && hop.method != Method::HEAD)
        || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND) && hop.method == Method::POST);
    Ok(Some(if becomes_get {
        Hop { method: Method::GET, url, body: None }
    } else {
        Hop { method: hop.method.clone(), url, body: hop.body.clone() }
    }))
}

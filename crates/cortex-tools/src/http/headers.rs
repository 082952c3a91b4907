//! Turning caller-supplied header pairs into a header map, refusing headers the transport must own.

use reqwest::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHORIZATION};

/// Headers that frame or route the request; letting a caller set them would allow request smuggling or
/// virtual-host confusion, so they are refused.
const TRANSPORT_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "expect",
    "proxy-connection",
];

/// Validates and collects `pairs`. With `secret`, values are marked sensitive; values are never quoted
/// in errors.
pub(crate) fn build(pairs: &[(String, String)], secret: bool) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let header =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a valid header name"))?;
        if TRANSPORT_HEADERS.contains(&header.as_str()) {
            return Err(format!("the `{header}` header is set by the client and cannot be overridden"));
        }
        let mut value =
            HeaderValue::from_str(value).map_err(|_| format!("the value of header `{header}` is not valid"))?;
        value.set_sensitive(secret);
        map.append(header, value);
    }
    Ok(map)
}

/// `headers` minus credentials, for hops that left the original origin.
pub(super) fn without_credentials(headers: &HeaderMap) -> HeaderMap {
    let mut rest = headers.clone();
    for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
        rest.remove(name);
    }
    rest
}

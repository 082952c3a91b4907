//! The one constructor of the session cookie (SPEC §11.1): `cortex_session`, `HttpOnly`, `SameSite=Lax`,
//! `Path=/`, `Secure` when the dashboard is served over https.

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cortex_session";

/// The `Set-Cookie` value that stores `token` for `max_age_seconds`.
pub fn session(token: &str, secure: bool, max_age_seconds: i64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear(secure: bool) -> String {
    session("", secure, 0)
}

/// The session token in a `Cookie` request header, if present and non-empty.
pub fn read_session(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_has_every_attribute_and_reads_back() {
        let cookie = session("abc", true, 604_800);
        for part in ["cortex_session=abc", "Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=604800", "Secure"] {
            assert!(cookie.contains(part), "{cookie} lacks {part}");
        }
        assert!(!session("abc", false, 1).contains("Secure"));
        assert_eq!(read_session("theme=dark; cortex_session=tok; x=y"), Some("tok"));
        assert_eq!(read_session("cortex_session="), None);
        assert_eq!(read_session("other=1"), None);
    }
}

//! Same-origin check for cookie-authenticated unsafe requests (SPEC Appendix B "Dashboard sessions"): the
//! request must carry an `Origin` equal to the server's own origin (from `Host`) or `CORTEX_PUBLIC_URL`,
//! or, without `Origin`, `Sec-Fetch-Site: same-origin`. Anything else is treated as cross-site.

/// The headers a browser sends that tell where a request came from.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOrigin<'a> {
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub host: Option<&'a str>,
}

/// True when the request demonstrably came from this server's pages.
pub fn is_same_origin(request: RequestOrigin<'_>, public_url: Option<&url::Url>) -> bool {
    match request.origin {
        Some(origin) if origin != "null" => {
            let Ok(parsed) = url::Url::parse(origin) else {
                return false;
            };
            let Some(origin_host) = parsed.host_str() else {
                return false;
            };
            let origin_authority = match parsed.port() {
                Some(port) => format!("{origin_host}:{port}"),
                None => origin_host.to_owned(),
            };
            let own = request.host.is_some_and(|host| host.eq_ignore_ascii_case(&origin_authority));
            let public = public_url.is_some_and(|public| public.origin() == parsed.origin());
            own || public
        }
        Some(_) => false,
        None => request.sec_fetch_site.is_some_and(|site| site.eq_ignore_ascii_case("same-origin")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(origin: Option<&str>, site: Option<&str>) -> bool {
        let public = url::Url::parse("https://cortex.example.com").ok();
        is_same_origin(RequestOrigin { origin, sec_fetch_site: site, host: Some("127.0.0.1:4000") }, public.as_ref())
    }

    #[test]
    fn own_and_public_origins_pass_everything_else_fails() {
        assert!(check(Some("http://127.0.0.1:4000"), None));
        assert!(check(Some("https://cortex.example.com"), Some("cross-site")));
        assert!(!check(Some("http://127.0.0.1:4001"), None));
        assert!(!check(Some("https://evil.example"), Some("same-origin")));
        assert!(!check(Some("null"), Some("same-origin")));
        assert!(check(None, Some("same-origin")));
        assert!(!check(None, Some("same-site")));
        assert!(!check(None, None));
    }
}

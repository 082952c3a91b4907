//! Unit tests of the `ssrf` module.
use std::net::IpAddr;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn url(text: &str) -> Url {
    Url::parse(text).unwrap()
}

fn denied_ip(text: &str) -> String {
    SsrfPolicy::default().check_ip(ip(text)).expect_err(text).reason
}

fn denied_url(text: &str) -> String {
    SsrfPolicy::default().check_url(&url(text)).expect_err(text).reason
}

#[test]
fn refuses_every_non_public_range_with_the_rule_named() {
    let cases = [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("127.255.0.9", "loopback"),
        ("0.0.0.0", "0.0.0.0 is an unspecified"),
        ("0.1.2.3", "unspecified"),
        ("10.0.0.1", "10.0.0.1 is a private address"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "169.254.169.254 is the cloud metadata endpoint (link-local)"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "100.64.0.1 is a carrier-grade NAT address"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "::1 is a loopback address"),
        ("::", "unspecified"),
        ("fe80::1", "fe80::1 is a link-local address"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1 is IPv4-mapped 127.0.0.1, a loopback address"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::127.0.0.1", "::7f00:1 embeds 127.0.0.1, a loopback address"),
        ("::10.0.0.1", "embeds 10.0.0.1, a private address"),
        ("64:ff9b::a9fe:a9fe", "embeds 169.254.169.254"),
        ("2002:7f00:1::", "embeds 127.0.0.1"),
    ];
    for (addr, expected) in cases {
        let reason = denied_ip(addr);
        assert!(reason.contains(expected), "{addr}: {reason}");
    }
}

#[test]
fn public_addresses_pass() {
    for addr in [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "2002:808:808::",
    ] {
        assert_eq!(SsrfPolicy::default().check_ip(ip(addr)), Ok(()), "{addr}");
    }
}

#[test]
fn only_http_and_https_schemes() {
    assert_eq!(denied_url("file:///etc/passwd"), "the `file` scheme is not allowed (only http and https)");
    assert!(denied_url("ftp://example.com/").contains("`ftp` scheme"));
    assert!(denied_url("gopher://example.com/").contains("`gopher` scheme"));
    assert_eq!(SsrfPolicy::default().check_url(&url("https://example.com/a")), Ok(()));
}

#[test]
fn numeric_ipv4_spellings_are_normalised_and_refused() {
    // The url crate normalises these for http(s); the guard then sees 127.0.0.1.
    for literal in [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://017700000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0x7f000001/",
        "http://127.0.0.%31/",
    ] {
        assert_eq!(denied_url(literal), "127.0.0.1 is a loopback address", "{literal}");
    }
    assert!(denied_url("http://0/").contains("0.0.0.0"));
    assert!(denied_url("http://[::ffff:7f00:1]/").contains("127.0.0.1"));
}

#[test]
fn reserved_names_are_refused() {
    for (name, rule) in [
        ("http://localhost/", "localhost is a loopback name"),
        ("http://LOCALHOST./", "loopback name"),
        ("http://ｌｏｃａｌｈｏｓｔ/", "localhost is a loopback name"),
        ("http://locaLhost%2e/", "loopback name"),
        ("http://foo.localhost:8080/", "foo.localhost is a loopback name"),
        ("http://metadata.google.internal/", "cloud metadata endpoint"),
        ("http://metadata.google.internal./", "cloud metadata endpoint"),
        ("http://db.corp.internal/", "internal name"),
    ] {
        assert!(denied_url(name).contains(rule), "{name}: {}", denied_url(name));
    }
    assert_eq!(SsrfPolicy::default().check_url(&url("http://localhost.example.com/")), Ok(()));
}

#[test]
fn resolved_addresses_are_all_checked() {
    let policy = SsrfPolicy::default();
    assert_eq!(policy.check_resolved("example.com", &[ip("93.184.216.34")]), Ok(()));
    let reason = policy.check_resolved("mixed.example", &[ip("93.184.216.34"), ip("10.0.0.1")]).unwrap_err().reason;
    assert_eq!(reason, "mixed.example resolves to a blocked address: 10.0.0.1 is a private address");
    assert!(policy.check_resolved("empty.example", &[]).unwrap_err().reason.contains("did not resolve"));
    assert!(policy.check_resolved("localhost", &[ip("8.8.8.8")]).unwrap_err().reason.contains("loopback name"));
}

#[test]
fn allow_rules_parse_from_csv() {
    let policy =
        SsrfPolicy::parse(" 10.0.0.0/8, Internal.Example. ,127.0.0.1/32,::1/128,[fd00::1],192.168.1.5 ,,").unwrap();
    let rules: Vec<String> = policy.allow_rules().iter().map(ToString::to_string).collect();
    assert_eq!(rules, ["10.0.0.0/8", "internal.example", "127.0.0.1/32", "::1/128", "fd00::1/128", "192.168.1.5/32"]);
    assert_eq!(SsrfPolicy::parse("").unwrap(), SsrfPolicy::default());
    assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
}

#[test]
fn bad_allow_rules_are_clear_errors() {
    for (csv, reason) in [
        ("*.example.com", "wildcards are not supported"),
        ("http://example.com", "not a URL"),
        ("10.0.0.0/33", "prefix /33 is longer than /32"),
        ("10.0.0.0/x", "`x` is not a prefix length"),
        ("300.0.0.0/8", "is not an IP address"),
        ("exa mple.com", "not a valid host name"),
        ("a..b", "not a valid host name"),
    ] {
        let error = SsrfPolicy::parse(csv).unwrap_err();
        assert!(error.reason.contains(reason), "{csv}: {error}");
        assert!(error.to_string().contains("expected a host name, an IP address or a CIDR"));
    }
    let from_env = SsrfPolicy::from_env(|name| (name == SSRF_ALLOW_ENV).then(|| "nope/1".to_owned()));
    assert!(from_env.is_err());
    assert_eq!(SsrfPolicy::from_env(|_| None).unwrap(), SsrfPolicy::default());
}

#[test]
fn cidr_exceptions_open_exactly_their_range() {
    let policy = SsrfPolicy::parse("127.0.0.1/32,10.1.0.0/16,::1/128").unwrap();
    assert_eq!(policy.check_url(&url("http://127.0.0.1:8080/")), Ok(()));
    assert_eq!(policy.check_url(&url("http://[::ffff:127.0.0.1]/")), Ok(()));
    assert_eq!(policy.check_url(&url("http://[::1]/")), Ok(()));
    assert_eq!(policy.check_ip(ip("10.1.200.3")), Ok(()));
    assert!(policy.check_ip(ip("127.0.0.2")).is_err());
    assert!(policy.check_ip(ip("10.2.0.1")).is_err());
    assert!(policy.check_url(&url("http://localhost/")).is_err(), "an address exception does not open names");
}

#[test]
fn host_exceptions_skip_name_and_address_checks() {
    let policy = SsrfPolicy::parse("localhost,api.corp.internal").unwrap();
    assert_eq!(policy.check_url(&url("http://localhost:3000/")), Ok(()));
    assert_eq!(policy.check_url(&url("http://API.corp.internal./x")), Ok(()));
    assert_eq!(policy.check_resolved("api.corp.internal", &[ip("10.0.0.7")]), Ok(()));
    assert!(policy.check_resolved("other.corp.internal", &[ip("10.0.0.7")]).is_err());
}

#[test]
fn data_scope_adds_exceptions() {
    let scope = DataScope {
        allowed_hosts: vec!["10.0.0.0/24".into(), "wiki.lan".into(), "*.bad".into()],
        ..DataScope::default()
    };
    let policy = SsrfPolicy::default().with_extra_hosts(&scope);
    assert_eq!(policy.allow_rules().len(), 2, "the invalid entry grants nothing");
    assert_eq!(policy.check_ip(ip("10.0.0.9")), Ok(()));
    assert_eq!(policy.check_resolved("wiki.lan", &[ip("192.168.0.2")]), Ok(()));
    assert!(scope.validate().unwrap_err().to_string().contains("*.bad"));
    assert_eq!(DataScope::default().validate(), Ok(()));
}

#[test]
fn data_scope_rejects_unknown_fields() {
    let parsed: DataScope = serde_json::from_value(serde_json::json!({"allowed_hosts": ["a.example"]})).unwrap();
    assert_eq!(parsed.allowed_hosts, ["a.example"]);
    assert!(serde_json::from_value::<DataScope>(serde_json::json!({"allowed_host": []})).is_err());
}

#[test]
fn the_egress_allow_list_matches_listed_hosts_and_addresses_only() {
    let scope = DataScope {
        allowed_hosts: vec!["API.example.com".into(), "127.0.0.2".into(), "10.1.0.0/16".into()],
        ..DataScope::default()
    };
    for vouched in
        ["https://api.example.com/v1?q=1", "http://api.example.com.:8080/", "http://127.0.0.2:9/x", "http://10.1.2.3/"]
    {
        assert!(scope.vouches_for(&url(vouched)), "{vouched}");
    }
    for other in [
        "https://attacker.example/?q=secret",
        "https://sub.api.example.com/",
        "http://127.0.0.1:9/x",
        "http://[::1]/",
        "http://10.2.0.1/",
    ] {
        assert!(!scope.vouches_for(&url(other)), "{other}");
    }
    assert!(!DataScope::default().vouches_for(&url("https://api.example.com/")), "an empty list vouches for nothing");
}

//! Tool references and the names models see (SPEC §5.2, §6).
//!
//! A tool ref is how operators and policies name a tool: `echo`, `webhook:deploy`, `mcp:<server>:<tool>`.
//! Providers only accept `^[a-zA-Z0-9_-]{1,64}$`, so refs are mapped to wire names for the request and
//! mapped back when the model calls one.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Longest function name providers accept.
pub const MAX_WIRE_NAME_LEN: usize = 64;

/// The name sent to a model for `tool_ref`: `:` becomes `__`, other invalid characters become `_`, and names
/// longer than 64 characters are cut and suffixed with a short hash of the full ref so they stay unique.
pub fn wire_name(tool_ref: &str) -> String {
    let lossless = tool_ref.chars().all(|c| c == ':' || is_wire_char(c));
    let name: String = tool_ref
        .chars()
        .flat_map(|c| match c {
            ':' => vec!['_', '_'],
            c if is_wire_char(c) => vec![c],
            _ => vec!['_'],
        })
        .collect();
    if lossless && name.len() <= MAX_WIRE_NAME_LEN {
        return name;
    }
    let digest = hex::encode(&Sha256::digest(tool_ref.as_bytes())[..4]);
    let keep = MAX_WIRE_NAME_LEN - digest.len() - 1;
    format!("{}_{digest}", &name[..name.len().min(keep)])
}

fn is_wire_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Maps wire names back to tool refs for one request.
#[derive(Debug, Default, Clone)]
pub struct WireNames {
    to_ref: HashMap<String, String>,
}

impl WireNames {
    /// Registers `tool_ref` and returns its wire name.
    pub fn insert(&mut self, tool_ref: &str) -> String {
        let name = wire_name(tool_ref);
        self.to_ref.insert(name.clone(), tool_ref.to_owned());
        name
    }

    /// The tool ref a model meant, if the name was offered.
    pub fn resolve(&self, wire_name: &str) -> Option<&str> {
        self.to_ref.get(wire_name).map(String::as_str)
    }
}

/// The MCP server slug and tool name of an `mcp:<server>:<tool>` ref.
pub fn parse_mcp_ref(tool_ref: &str) -> Option<(&str, &str)> {
    let rest = tool_ref.strip_prefix("mcp:")?;
    let (server, tool) = rest.split_once(':')?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// The `mcp:<server>:<tool>` ref of a discovered MCP tool.
pub fn mcp_ref(server_slug: &str, tool_name: &str) -> String {
    format!("mcp:{server_slug}:{tool_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_valid(name: &str) -> bool {
        !name.is_empty() && name.len() <= MAX_WIRE_NAME_LEN && name.chars().all(is_wire_char)
    }

    #[test]
    fn simple_names_pass_through() {
        assert_eq!(wire_name("http_request"), "http_request");
        assert_eq!(wire_name("mcp:github:create_issue"), "mcp__github__create_issue");
    }

    #[test]
    fn odd_and_long_names_stay_valid_and_distinct() {
        let a = wire_name("mcp:files:read.file");
        let b = wire_name("mcp:files:read_file");
        assert!(is_valid(&a) && is_valid(&b));
        assert_ne!(a, b);
        let long_a = wire_name(&format!("mcp:server:{}a", "x".repeat(80)));
        let long_b = wire_name(&format!("mcp:server:{}b", "x".repeat(80)));
        assert!(is_valid(&long_a) && is_valid(&long_b));
        assert_ne!(long_a, long_b);
    }

    #[test]
    fn round_trip_through_the_map() {
        let mut names = WireNames::default();
        let wire = names.insert("mcp:everything:echo");
        assert_eq!(names.resolve(&wire), Some("mcp:everything:echo"));
        assert_eq!(names.resolve("unknown"), None);
        assert_eq!(parse_mcp_ref("mcp:everything:echo"), Some(("everything", "echo")));
        assert_eq!(parse_mcp_ref("echo"), None);
    }
}

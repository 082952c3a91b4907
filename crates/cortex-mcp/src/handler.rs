//! Our side of the MCP session: who we are in `initialize` and what we do with server notifications.
//!
//! We offer no client capabilities (no sampling, roots or elicitation), so servers never call back into
//! us; the only notification acted on is `notifications/tools/list_changed`, which raises a flag the
//! pool and runtime use to re-list tools (SPEC §6.4).

use std::sync::Arc;

use rmcp::ClientHandler;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::{NotificationContext, RoleClient};
use tokio::sync::watch;

/// The protocol version we ask for; servers that only know an older one answer with it and we accept.
pub(crate) const PREFERRED_PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V_2025_06_18;
/// `clientInfo.name` sent in `initialize`.
pub(crate) const CLIENT_NAME: &str = "cortex";

/// Shared "the tool list changed" flag: raised by the notification, lowered by whoever re-lists.
pub(crate) type ToolsChanged = Arc<watch::Sender<bool>>;

pub(crate) struct Handler {
    tools_changed: ToolsChanged,
}

impl Handler {
    pub fn new(tools_changed: ToolsChanged) -> Self {
        Self { tools_changed }
    }
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::debug!("mcp server announced a changed tool list");
        self.tools_changed.send_replace(true);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new(CLIENT_NAME, env!("CARGO_PKG_VERSION")))
            .with_protocol_version(PREFERRED_PROTOCOL_VERSION)
    }
}

//! MCP tools as [`Tool`]s (SPEC §6.4): a discovered `mcp_tool` row bound to its server's decrypted
//! configuration, called through the process-wide connection pool.
//!
//! A failure after the request reached the server leaves the outcome unknown; it is returned as an error
//! result flagged `interrupted` so the ledger records `interrupted` and the model is told to verify before
//! retrying (SPEC §4.9), instead of being retried blindly.

use std::collections::BTreeMap;
use std::sync::Arc;

use cortex_core::approval::RiskTier;
use cortex_mcp::{Pool, ServerConfig, ToolInfo, Transport};
use cortex_store::mcp::{McpServerRecord, McpToolRecord};
use cortex_store::secrets::{Cipher, SecretRef};
use cortex_tools::{DataScope, Tool, ToolContext, ToolError, ToolOutput};
use serde_json::{Value, json};

/// Text the model gets when a call's outcome is unknown (SPEC §4.9).
pub(crate) const OUTCOME_UNKNOWN: &str = "interrupted; outcome unknown — verify before retrying";

/// One MCP tool ready to call.
pub(crate) struct McpTool {
    tool_ref: String,
    info: ToolInfo,
    server: ServerConfig,
    /// An operator vouches for the server (its annotations never do).
    trusted: bool,
    pool: Arc<Pool>,
}

impl McpTool {
    /// Binds a discovered tool to its server's configuration (secrets decrypted).
    pub(crate) fn build(
        record: McpToolRecord,
        server: &McpServerRecord,
        cipher: &Cipher,
        pool: Arc<Pool>,
    ) -> Result<McpTool, String> {
        let secrets = |column: &'static str, stored: &Option<String>| -> Result<BTreeMap<String, String>, String> {
            match stored {
                Some(stored) => cipher
                    .decrypt_json(&SecretRef::new("mcp_server", column, server.id), stored)
                    .map_err(|err| format!("{column}: {err}")),
                None => Ok(BTreeMap::new()),
            }
        };
        let transport = match server.transport.as_str() {
            "stdio" => Transport::Stdio {
                command: server.command.clone().ok_or("stdio server without a command")?,
                args: server.args.clone(),
                env: secrets("env_enc", &server.env_enc)?,
            },
            "http" => Transport::Http {
                url: server.url.clone().ok_or("http server without a url")?,
                headers: secrets("headers_enc", &server.headers_enc)?,
            },
            other => return Err(format!("unknown transport `{other}`")),
        };
        Ok(McpTool {
            tool_ref: record.tool_ref,
            info: ToolInfo {
                name: record.name,
                description: record.description,
                input_schema: record.input_schema,
                annotations: record.annotations,
            },
            server: ServerConfig::new(server.id, server.slug.clone(), transport),
            trusted: server.trusted,
            pool,
        })
    }

    /// The server marked the tool `destructiveHint` (deny-listed at p1, SPEC §7.1).
    pub(crate) fn is_destructive(&self) -> bool {
        self.info.is_destructive()
    }
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn tool_ref(&self) -> &str {
        &self.tool_ref
    }

    fn description(&self) -> &str {
        &self.info.description
    }

    fn input_schema(&self) -> &Value {
        &self.info.input_schema
    }

    fn default_risk(&self, _input: &Value) -> RiskTier {
        self.info.hints().default_risk()
    }

    fn is_idempotent(&self, _input: &Value) -> bool {
        self.info.is_idempotent()
    }

    /// Whatever the tool claims (`readOnlyHint`), arguments reach a server: only an operator's trust
    /// makes that safe after untrusted content.
    fn sends_data_out(&self, _input: &Value, _scope: &DataScope) -> bool {
        !self.trusted
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let call = self.pool.call(&self.server, &self.info.name, input);
        let result = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
            result = call => result,
        };
        match result {
            Ok(outcome) => {
                let data = json!({"is_error": outcome.is_error, "parts": outcome.parts.len()});
                let text = outcome.text();
                Ok(if outcome.is_error { ToolOutput::error(text, data) } else { ToolOutput::ok(text, data) })
            }
            Err(err) if err.request_was_sent() => Ok(ToolOutput::error(
                format!("{OUTCOME_UNKNOWN} ({err})"),
                json!({"interrupted": true, "code": err.code()}),
            )),
            Err(err) => Err(ToolError::Failed(err.to_string())),
        }
    }
}

//! Questions about tool configuration across agents, which the per-agent methods of [`crate::tools`]
//! cannot answer (for example: may this webhook tool be deleted?).

use uuid::Uuid;

use crate::engine::read;
use crate::{Result, Store};

impl Store {
    /// The agents with an enabled policy for `tool_ref`, so removing the tool would silently take it
    /// away from them.
    pub async fn agents_enabling_tool(&self, tool_ref: &str) -> Result<Vec<Uuid>> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT agent_id FROM agent_tool_policy WHERE tool_ref = $1 AND enabled ORDER BY agent_id",
            )
            .bind(tool_ref)
            .fetch_all(conn)
            .await?
        }))
    }
}

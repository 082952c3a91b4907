//! Registered MCP servers and the tools discovered on them (SPEC §3.2, §6.4). Secret `env`/`headers`
//! values are stored encrypted by the caller (the row id is part of the ciphertext's associated data,
//! so ids are chosen before insert); only their names are readable.

use cortex_core::Timestamp;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::page::{Cursor, Page};
use crate::rows::{ms, opt_ms, opt_time, time};
use crate::{Result, Store, StoreError, Tx};

/// A registered MCP server.
#[derive(Debug, Clone)]
pub struct McpServerRecord {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    /// `stdio` or `http`.
    pub transport: String,
    pub command: Option<String>,
    pub args: Vec<String>,
    pub env_enc: Option<String>,
    pub env_keys: Vec<String>,
    pub url: Option<String>,
    pub headers_enc: Option<String>,
    pub header_keys: Vec<String>,
    /// `pending`, `active`, `degraded`, `error` or `disabled`.
    pub status: String,
    pub protocol_version: Option<String>,
    pub server_info: Option<Value>,
    pub capabilities: Option<Value>,
    pub probe_interval_seconds: i64,
    pub last_healthy_at: Option<Timestamp>,
    pub last_error: Option<String>,
    /// An operator vouches for the server: its tools stay callable without a human after untrusted
    /// content entered a job's context. Its own annotations never set this.
    pub trusted: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct ServerRow {
    id: Uuid,
    name: String,
    slug: String,
    transport: String,
    command: Option<String>,
    args: Json<Vec<String>>,
    env_enc: Option<String>,
    env_keys: Json<Vec<String>>,
    url: Option<String>,
    headers_enc: Option<String>,
    header_keys: Json<Vec<String>>,
    status: String,
    protocol_version: Option<String>,
    server_info: Option<Json<Value>>,
    capabilities: Option<Json<Value>>,
    probe_interval_seconds: i64,
    last_healthy_at: Option<i64>,
    last_error: Option<String>,
    trusted: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<ServerRow> for McpServerRecord {
    fn from(row: ServerRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            slug: row.slug,
            transport: row.transport,
            command: row.command,
            args: row.args.0,
            env_enc: row.env_enc,
            env_keys: row.env_keys.0,
            url: row.url,
            headers_enc: row.headers_enc,
            header_keys: row.header_keys.0,
            status: row.status,
            protocol_version: row.protocol_version,
            server_info: row.server_info.map(|json| json.0),
            capabilities: row.capabilities.map(|json| json.0),
            probe_interval_seconds: row.probe_interval_seconds,
            last_healthy_at: opt_time(row.last_healthy_at),
            last_error: row.last_error,
            trusted: row.trusted,
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
        }
    }
}

macro_rules! server_columns {
    () => {
        "id, name, slug, transport, command, args, env_enc, env_keys, url, headers_enc, header_keys, status, protocol_version, \
         server_info, capabilities, probe_interval_seconds, last_healthy_at, last_error, trusted, created_at, updated_at"
    };
}

/// A discovered tool as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct McpToolRecord {
    pub server_id: Uuid,
    pub name: String,
    pub tool_ref: String,
    pub description: String,
    #[sqlx(json)]
    pub input_schema: Value,
    #[sqlx(json(nullable))]
    pub annotations: Option<Value>,
    pub available: bool,
}

/// A tool reported by discovery, to upsert.
#[derive(Debug, Clone)]
pub struct DiscoveredTool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub annotations: Option<Value>,
}

/// Result of a discovery run, to persist.
#[derive(Debug, Clone)]
pub struct DiscoveryRecord {
    pub protocol_version: String,
    pub server_info: Value,
    pub capabilities: Value,
    pub tools: Vec<DiscoveredTool>,
}

impl Store {
    /// A server by id or slug.
    pub async fn get_mcp_server(&self, id_or_slug: &str) -> Result<McpServerRecord> {
        let row: Option<ServerRow> = match Uuid::parse_str(id_or_slug) {
            Ok(id) => read!(self, |conn| {
                sqlx::query_as(concat!("SELECT ", server_columns!(), " FROM mcp_server WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(conn)
                    .await?
            }),
            Err(_) => read!(self, |conn| {
                sqlx::query_as(concat!("SELECT ", server_columns!(), " FROM mcp_server WHERE slug = $1"))
                    .bind(id_or_slug)
                    .fetch_optional(conn)
                    .await?
            }),
        };
        Ok(row.ok_or(StoreError::NotFound { entity: "mcp server" })?.into())
    }

    /// The server behind a tool call (runtime path).
    pub async fn mcp_server_config(&self, server_id: Uuid) -> Result<McpServerRecord> {
        self.get_mcp_server(&server_id.to_string()).await
    }

    pub async fn list_mcp_servers(&self, cursor: Option<Cursor>, limit: usize) -> Result<Page<McpServerRecord>> {
        let rows: Vec<ServerRow> = read!(self, |conn| {
            let mut query =
                sqlx::QueryBuilder::new(concat!("SELECT ", server_columns!(), " FROM mcp_server WHERE 1 = 1"));
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        Ok(Page::from_overfetch(rows.into_iter().map(McpServerRecord::from).collect(), limit, |server| server.id))
    }

    /// Every server that is not disabled (for the health prober).
    pub async fn probed_mcp_servers(&self) -> Result<Vec<McpServerRecord>> {
        let rows: Vec<ServerRow> = read!(self, |conn| {
            sqlx::query_as(concat!(
                "SELECT ",
                server_columns!(),
                " FROM mcp_server WHERE status <> 'disabled' ORDER BY id"
            ))
            .fetch_all(conn)
            .await?
        });
        Ok(rows.into_iter().map(McpServerRecord::from).collect())
    }

    pub async fn mcp_tools_of_server(&self, server_id: Uuid) -> Result<Vec<McpToolRecord>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(
                "SELECT server_id, name, tool_ref, description, input_schema, annotations, available FROM mcp_tool \
                 WHERE server_id = $1 ORDER BY name",
            )
            .bind(server_id)
            .fetch_all(conn)
            .await?
        }))
    }

    /// A discovered tool by its `mcp:<server>:<tool>` ref.
    pub async fn mcp_tool(&self, tool_ref: &str) -> Result<Option<McpToolRecord>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(
                "SELECT server_id, name, tool_ref, description, input_schema, annotations, available FROM mcp_tool WHERE tool_ref = $1",
            )
            .bind(tool_ref)
            .fetch_optional(conn)
            .await?
        }))
    }
}

/// A server to register; `id` is chosen by the caller (it binds the encrypted secrets to the row).
#[derive(Debug, Clone)]
pub struct NewMcpServer {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub transport: String,
    pub command: Option<String>,
    pub args: Vec<String>,
    pub env_enc: Option<String>,
    pub env_keys: Vec<String>,
    pub url: Option<String>,
    pub headers_enc: Option<String>,
    pub header_keys: Vec<String>,
    pub probe_interval_seconds: i64,
    pub trusted: bool,
}

impl Tx {
    pub async fn insert_mcp_server(&mut self, new: &NewMcpServer) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO mcp_server (id, name, slug, transport, command, args, env_enc, env_keys, url, headers_enc, header_keys, \
                 status, probe_interval_seconds, trusted, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13, $14, $14)",
            )
            .bind(new.id)
            .bind(&new.name)
            .bind(&new.slug)
            .bind(&new.transport)
            .bind(new.command.as_deref())
            .bind(Json(&new.args))
            .bind(new.env_enc.as_deref())
            .bind(Json(&new.env_keys))
            .bind(new.url.as_deref())
            .bind(new.headers_enc.as_deref())
            .bind(Json(&new.header_keys))
            .bind(new.probe_interval_seconds)
            .bind(new.trusted)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Marks a server trusted or not (an operator's decision, SPEC Appendix B).
    pub async fn set_mcp_trusted(&mut self, id: Uuid, trusted: bool) -> Result<bool> {
        let now = ms(self.now());
        let changed = write!(self, |conn| {
            sqlx::query("UPDATE mcp_server SET trusted = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(trusted)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    pub async fn delete_mcp_server(&mut self, id: Uuid) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM mcp_server WHERE id = $1").bind(id).execute(conn).await?.rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Stores a successful discovery: server details, tools upserted, vanished tools marked unavailable,
    /// status `active`.
    pub async fn record_mcp_discovery(&mut self, server: &McpServerRecord, discovery: &DiscoveryRecord) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "UPDATE mcp_server SET status = 'active', protocol_version = $2, server_info = $3, capabilities = $4, \
                 last_healthy_at = $5, last_error = NULL, updated_at = $5 WHERE id = $1",
            )
            .bind(server.id)
            .bind(&discovery.protocol_version)
            .bind(Json(&discovery.server_info))
            .bind(Json(&discovery.capabilities))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        write!(self, |conn| {
            sqlx::query("UPDATE mcp_tool SET available = FALSE, updated_at = $2 WHERE server_id = $1")
                .bind(server.id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        for tool in &discovery.tools {
            let tool_ref = cortex_core::tool_ref::mcp_ref(&server.slug, &tool.name);
            write!(self, |conn| {
                sqlx::query(
                    "INSERT INTO mcp_tool (id, server_id, name, tool_ref, description, input_schema, annotations, available, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, $8) \
                     ON CONFLICT (server_id, name) DO UPDATE SET description = excluded.description, \
                     input_schema = excluded.input_schema, annotations = excluded.annotations, available = TRUE, \
                     updated_at = excluded.updated_at",
                )
                .bind(cortex_core::new_id())
                .bind(server.id)
                .bind(&tool.name)
                .bind(&tool_ref)
                .bind(&tool.description)
                .bind(Json(&tool.input_schema))
                .bind(tool.annotations.as_ref().map(Json))
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
            });
        }
        Ok(())
    }

    /// Records the health of a server (`active`, `degraded`, `error`) and the last error, if any.
    pub async fn set_mcp_status(
        &mut self,
        server_id: Uuid,
        status: &str,
        error: Option<&str>,
        healthy_at: Option<Timestamp>,
    ) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "UPDATE mcp_server SET status = $2, last_error = COALESCE($3, last_error), \
                 last_healthy_at = COALESCE($4, last_healthy_at), updated_at = $5 WHERE id = $1 AND status <> 'disabled'",
            )
            .bind(server_id)
            .bind(status)
            .bind(error)
            .bind(opt_ms(healthy_at))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }
}

//! Tool configuration and the tool-call ledger (SPEC §3.2, §4.9, §6).

use cortex_core::Timestamp;
use cortex_core::approval::{ApprovalMode, RiskTier};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::rows::{ms, parse, time};
use crate::{Result, Store, Tx};

impl Store {
    /// True when `tool_ref` names a configured webhook tool or an available discovered MCP tool.
    pub async fn external_tool_exists(&self, tool_ref: &str) -> Result<bool> {
        if let Some(name) = tool_ref.strip_prefix("webhook:") {
            return Ok(read!(self, |conn| {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhook_tool WHERE name = $1)")
                    .bind(name)
                    .fetch_one(conn)
                    .await?
            }));
        }
        if tool_ref.starts_with("mcp:") {
            return Ok(read!(self, |conn| {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM mcp_tool WHERE tool_ref = $1 AND available)")
                    .bind(tool_ref)
                    .fetch_one(conn)
                    .await?
            }));
        }
        Ok(false)
    }
}

/// Per agent and tool: whether the model may use it and under which approval rule (SPEC §3.2, §6.1).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolPolicy {
    pub agent_id: Uuid,
    pub tool_ref: String,
    pub enabled: bool,
    pub approval: ApprovalMode,
    pub risk: Option<RiskTier>,
    pub condition: Option<Value>,
    pub rate_limit: Option<Value>,
    pub cost_budget: Option<Value>,
    pub data_scope: Option<Value>,
    pub updated_at: Timestamp,
}

impl ToolPolicy {
    /// The policy created for a name listed in an agent's `tools`: enabled, approval by risk.
    pub fn enabled_by_risk(agent_id: Uuid, tool_ref: &str) -> Self {
        Self {
            agent_id,
            tool_ref: tool_ref.to_owned(),
            enabled: true,
            approval: ApprovalMode::Risk,
            risk: None,
            condition: None,
            rate_limit: None,
            cost_budget: None,
            data_scope: None,
            updated_at: Timestamp::default(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    agent_id: Uuid,
    tool_ref: String,
    enabled: bool,
    approval: String,
    risk: Option<String>,
    condition: Option<Json<Value>>,
    rate_limit: Option<Json<Value>>,
    cost_budget: Option<Json<Value>>,
    data_scope: Option<Json<Value>>,
    updated_at: i64,
}

impl PolicyRow {
    fn into_policy(self) -> Result<ToolPolicy> {
        Ok(ToolPolicy {
            agent_id: self.agent_id,
            tool_ref: self.tool_ref,
            enabled: self.enabled,
            approval: parse("agent_tool_policy.approval", &self.approval)?,
            risk: self.risk.map(|risk| parse("agent_tool_policy.risk", &risk)).transpose()?,
            condition: self.condition.map(|json| json.0),
            rate_limit: self.rate_limit.map(|json| json.0),
            cost_budget: self.cost_budget.map(|json| json.0),
            data_scope: self.data_scope.map(|json| json.0),
            updated_at: time(self.updated_at),
        })
    }
}

impl Store {
    /// Every policy of an agent, by tool ref.
    pub async fn tool_policies(&self, agent_id: Uuid) -> Result<Vec<ToolPolicy>> {
        let rows: Vec<PolicyRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT agent_id, tool_ref, enabled, approval, risk, condition, rate_limit, cost_budget, data_scope, updated_at \
                 FROM agent_tool_policy WHERE agent_id = $1 ORDER BY tool_ref",
            )
            .bind(agent_id)
            .fetch_all(conn)
            .await?
        });
        rows.into_iter().map(PolicyRow::into_policy).collect()
    }
}

impl Tx {
    /// Creates or replaces the policy of one (agent, tool).
    pub async fn upsert_tool_policy(&mut self, policy: &ToolPolicy) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO agent_tool_policy (id, agent_id, tool_ref, enabled, approval, risk, condition, rate_limit, cost_budget, \
                 data_scope, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                 ON CONFLICT (agent_id, tool_ref) DO UPDATE SET enabled = excluded.enabled, approval = excluded.approval, \
                 risk = excluded.risk, condition = excluded.condition, rate_limit = excluded.rate_limit, \
                 cost_budget = excluded.cost_budget, data_scope = excluded.data_scope, updated_at = excluded.updated_at",
            )
            .bind(cortex_core::new_id())
            .bind(policy.agent_id)
            .bind(&policy.tool_ref)
            .bind(policy.enabled)
            .bind(policy.approval.as_str())
            .bind(policy.risk.map(RiskTier::as_str))
            .bind(policy.condition.as_ref().map(Json))
            .bind(policy.rate_limit.as_ref().map(Json))
            .bind(policy.cost_budget.as_ref().map(Json))
            .bind(policy.data_scope.as_ref().map(Json))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Removes the policy of one (agent, tool); `false` when there was none.
    pub async fn delete_tool_policy(&mut self, agent_id: Uuid, tool_ref: &str) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM agent_tool_policy WHERE agent_id = $1 AND tool_ref = $2")
                .bind(agent_id)
                .bind(tool_ref)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }
}

/// An operator-defined webhook tool (SPEC §6.3); header values are encrypted (`headers_enc`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookToolRecord {
    pub id: Uuid,
    pub agent_id: Option<Uuid>,
    pub name: String,
    pub description: String,
    #[sqlx(json)]
    pub input_schema: Value,
    pub url: String,
    pub method: String,
    pub headers_enc: Option<String>,
    #[sqlx(json)]
    pub header_keys: Vec<String>,
    pub timeout_ms: i64,
    pub risk: String,
    /// The endpoint honours `Idempotency-Key`: a call interrupted by a crash is sent again.
    pub idempotent: bool,
    /// `tool_secret` credentials injected at call time (SPEC §6.3): `[{credential, inject_as,
    /// header_name, format}]`, validated by the API.
    #[sqlx(json)]
    pub credential_refs: Value,
}

impl WebhookToolRecord {
    /// The ref policies and models use.
    pub fn tool_ref(&self) -> String {
        format!("webhook:{}", self.name)
    }
}

impl Store {
    pub async fn webhook_tool(&self, name: &str) -> Result<Option<WebhookToolRecord>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, agent_id, name, description, input_schema, url, method, headers_enc, header_keys, timeout_ms, risk, \
                 idempotent, credential_refs FROM webhook_tool WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(conn)
            .await?
        }))
    }

    pub async fn list_webhook_tools(&self) -> Result<Vec<WebhookToolRecord>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(
                "SELECT id, agent_id, name, description, input_schema, url, method, headers_enc, header_keys, timeout_ms, risk, \
                 idempotent, credential_refs FROM webhook_tool ORDER BY name",
            )
            .fetch_all(conn)
            .await?
        }))
    }
}

impl Tx {
    /// Stores a validated webhook tool; its id must be the one its headers were encrypted for.
    pub async fn insert_webhook_tool(&mut self, tool: &WebhookToolRecord) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO webhook_tool (id, agent_id, name, description, input_schema, url, method, headers_enc, header_keys, \
                 timeout_ms, risk, idempotent, created_at, updated_at, credential_refs) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14)",
            )
            .bind(tool.id)
            .bind(tool.agent_id)
            .bind(&tool.name)
            .bind(&tool.description)
            .bind(Json(&tool.input_schema))
            .bind(&tool.url)
            .bind(&tool.method)
            .bind(tool.headers_enc.as_deref())
            .bind(Json(&tool.header_keys))
            .bind(tool.timeout_ms)
            .bind(&tool.risk)
            .bind(tool.idempotent)
            .bind(now)
            .bind(Json(&tool.credential_refs))
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn delete_webhook_tool(&mut self, name: &str) -> Result<bool> {
        let deleted = write!(self, |conn| {
            sqlx::query("DELETE FROM webhook_tool WHERE name = $1").bind(name).execute(conn).await?.rows_affected()
        });
        Ok(deleted == 1)
    }
}

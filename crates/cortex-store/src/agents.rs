//! Agent definitions (SPEC §3.2).

use cortex_core::Timestamp;
use cortex_core::agent::{
    AccessMode, AgentStatus, ApprovalTarget, HealthState, MemorySettings, ModelConfig, ResourceLimits,
};
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::page::{Cursor, Page};
use crate::rows::{from_json, ms, opt_ms, opt_time, parse, time, to_json};
use crate::{Result, Store, StoreError, Tx};

/// A stored agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub role: String,
    pub description: String,
    pub system_prompt: String,
    pub model_config: ModelConfig,
    pub resource_limits: ResourceLimits,
    pub access_mode: AccessMode,
    pub skills: Vec<String>,
    pub subagents: Vec<String>,
    pub memory: MemorySettings,
    /// Chats that also get this agent's approval notices (set with [`Tx::set_approval_notify`]).
    pub approval_notify: Vec<ApprovalTarget>,
    pub status: AgentStatus,
    pub health_state: HealthState,
    pub quarantine_reason: Option<String>,
    pub health_reset_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The editable definition of an agent, used for create and for whole-document updates.
#[derive(Debug, Clone)]
pub struct AgentDefinition {
    pub name: String,
    pub slug: String,
    pub role: String,
    pub description: String,
    pub system_prompt: String,
    pub model_config: ModelConfig,
    pub resource_limits: ResourceLimits,
    pub access_mode: AccessMode,
    pub skills: Vec<String>,
    pub subagents: Vec<String>,
    pub memory: MemorySettings,
    pub status: AgentStatus,
}

impl AgentDefinition {
    /// An active agent named `name` (slug derived from it) on `provider`/`model`, every other field at
    /// its default: no prompt, bound chats, default limits, no tools. Callers that need more (benchmarks,
    /// tests, seeds) change fields with struct update syntax instead of spelling the whole definition.
    pub fn new(name: &str, provider: &str, model: &str) -> Self {
        Self {
            name: name.to_owned(),
            slug: cortex_core::agent::slugify(name),
            role: String::new(),
            description: String::new(),
            system_prompt: String::new(),
            model_config: ModelConfig {
                provider: provider.to_owned(),
                model: model.to_owned(),
                temperature: None,
                max_tokens: None,
                fallbacks: vec![],
                extraction_model: None,
                requires_approval: false,
                credential: None,
            },
            resource_limits: ResourceLimits::default(),
            access_mode: AccessMode::BoundChats,
            skills: vec![],
            subagents: vec![],
            memory: MemorySettings::default(),
            status: AgentStatus::Active,
        }
    }
}

impl Agent {
    /// The editable part, to apply a patch onto.
    pub fn definition(&self) -> AgentDefinition {
        AgentDefinition {
            name: self.name.clone(),
            slug: self.slug.clone(),
            role: self.role.clone(),
            description: self.description.clone(),
            system_prompt: self.system_prompt.clone(),
            model_config: self.model_config.clone(),
            resource_limits: self.resource_limits.clone(),
            access_mode: self.access_mode,
            skills: self.skills.clone(),
            subagents: self.subagents.clone(),
            memory: self.memory,
            status: self.status,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: Uuid,
    name: String,
    slug: String,
    role: String,
    description: String,
    system_prompt: String,
    model_config: Json<serde_json::Value>,
    resource_limits: Json<serde_json::Value>,
    access_mode: String,
    skills: Json<serde_json::Value>,
    subagents: Json<serde_json::Value>,
    memory: Json<serde_json::Value>,
    approval_notify: Json<serde_json::Value>,
    status: String,
    health_state: String,
    quarantine_reason: Option<String>,
    health_reset_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl AgentRow {
    fn into_agent(self) -> Result<Agent> {
        Ok(Agent {
            id: self.id,
            name: self.name,
            slug: self.slug,
            role: self.role,
            description: self.description,
            system_prompt: self.system_prompt,
            model_config: from_json("agent.model_config", self.model_config.0)?,
            resource_limits: from_json("agent.resource_limits", self.resource_limits.0)?,
            access_mode: parse("agent.access_mode", &self.access_mode)?,
            skills: from_json("agent.skills", self.skills.0)?,
            subagents: from_json("agent.subagents", self.subagents.0)?,
            memory: from_json("agent.memory", self.memory.0)?,
            approval_notify: from_json("agent.approval_notify", self.approval_notify.0)?,
            status: parse("agent.status", &self.status)?,
            health_state: parse("agent.health_state", &self.health_state)?,
            quarantine_reason: self.quarantine_reason,
            health_reset_at: opt_time(self.health_reset_at),
            created_at: time(self.created_at),
            updated_at: time(self.updated_at),
        })
    }
}

const COLUMNS: &str = "id, name, slug, role, description, system_prompt, model_config, resource_limits, access_mode, skills, \
     subagents, memory, approval_notify, status, health_state, quarantine_reason, health_reset_at, created_at, updated_at";

impl Store {
    /// Looks an agent up by UUID or by slug.
    pub async fn get_agent(&self, id_or_slug: &str) -> Result<Agent> {
        let row: Option<AgentRow> = match Uuid::parse_str(id_or_slug) {
            Ok(id) => read!(self, |conn| {
                sqlx::query_as(
                    "SELECT id, name, slug, role, description, system_prompt, model_config, resource_limits, access_mode, \
                     skills, subagents, memory, approval_notify, status, health_state, quarantine_reason, health_reset_at, created_at, updated_at \
                     FROM agent WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(conn)
                .await?
            }),
            Err(_) => read!(self, |conn| {
                sqlx::query_as(
                    "SELECT id, name, slug, role, description, system_prompt, model_config, resource_limits, access_mode, \
                     skills, subagents, memory, approval_notify, status, health_state, quarantine_reason, health_reset_at, created_at, updated_at \
                     FROM agent WHERE slug = $1",
                )
                .bind(id_or_slug)
                .fetch_optional(conn)
                .await?
            }),
        };
        row.ok_or(StoreError::NotFound { entity: "agent" })?.into_agent()
    }

    pub async fn get_agent_by_id(&self, id: Uuid) -> Result<Agent> {
        self.get_agent(&id.to_string()).await
    }

    /// Agents newest first. Archived agents are listed only when asked for by status.
    pub async fn list_agents(
        &self,
        status: Option<AgentStatus>,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<Agent>> {
        let rows: Vec<AgentRow> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM agent WHERE "));
            match status {
                Some(status) => query.push("status = ").push_bind(status.as_str()),
                None => query.push("status <> 'archived'"),
            };
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        let agents = rows.into_iter().map(AgentRow::into_agent).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(agents, limit, |agent| agent.id))
    }

    /// The names of the agents with these ids (archived ones too), for labelling rows that name an agent
    /// by id: one `IN (…)` over the ids of a page, not a read of every agent.
    pub async fn agent_names(&self, ids: &[Uuid]) -> Result<std::collections::HashMap<Uuid, String>> {
        self.labels_by_id("SELECT id, name FROM agent WHERE id IN (", ids).await
    }

    /// Ids and names of up to `limit` agents that are not archived, newest first (filter pickers).
    pub async fn agent_choices(&self, limit: usize) -> Result<Vec<(Uuid, String)>> {
        Ok(read!(self, |conn| {
            sqlx::query_as("SELECT id, name FROM agent WHERE status <> 'archived' ORDER BY id DESC LIMIT $1")
                .bind(limit as i64)
                .fetch_all(conn)
                .await?
        }))
    }

    /// Agents that are not archived (the dashboard's overview count).
    pub async fn count_agents(&self) -> Result<i64> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar("SELECT COUNT(*) FROM agent WHERE status <> 'archived'").fetch_one(conn).await?
        }))
    }

    /// Jobs of the agent currently running or waiting (used to refuse archive/purge).
    pub async fn count_active_jobs(&self, agent_id: Uuid) -> Result<i64> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM job WHERE agent_id = $1 AND status IN ('running', 'waiting_for_approval', 'scheduled', 'pending', 'retrying')",
            )
            .bind(agent_id)
            .fetch_one(conn)
            .await?
        }))
    }
}

impl Tx {
    pub async fn insert_agent(&mut self, def: &AgentDefinition) -> Result<Uuid> {
        let id = cortex_core::new_id();
        self.write_definition(
            "INSERT INTO agent (id, name, slug, role, description, system_prompt, model_config, resource_limits, \
             max_concurrent_jobs, access_mode, skills, subagents, status, health_state, created_at, updated_at, memory) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'healthy', $14, $14, $15)",
            id,
            def,
        )
        .await?;
        Ok(id)
    }

    /// Replaces the editable definition.
    pub async fn update_agent(&mut self, id: Uuid, def: &AgentDefinition) -> Result<()> {
        let updated = self
            .write_definition(
                "UPDATE agent SET name = $2, slug = $3, role = $4, description = $5, system_prompt = $6, \
                 model_config = $7, resource_limits = $8, max_concurrent_jobs = $9, access_mode = $10, skills = $11, \
                 subagents = $12, status = $13, updated_at = $14, memory = $15 WHERE id = $1",
                id,
                def,
            )
            .await?;
        if updated == 0 {
            return Err(StoreError::NotFound { entity: "agent" });
        }
        Ok(())
    }

    /// Runs `sql` with the parameters both agent writes share, in order: the id ($1), the definition's
    /// columns ($2–$13), the current time ($14) and the memory switches ($15), so the two statements cannot bind differently.
    async fn write_definition(&mut self, sql: &'static str, id: Uuid, def: &AgentDefinition) -> Result<u64> {
        let now = ms(self.now());
        Ok(write!(self, |conn| {
            sqlx::query(sql)
                .bind(id)
                .bind(&def.name)
                .bind(&def.slug)
                .bind(&def.role)
                .bind(&def.description)
                .bind(&def.system_prompt)
                .bind(to_json(&def.model_config))
                .bind(to_json(&def.resource_limits))
                .bind(i64::from(def.resource_limits.max_concurrent_jobs))
                .bind(def.access_mode.as_str())
                .bind(to_json(&def.skills))
                .bind(to_json(&def.subagents))
                .bind(def.status.as_str())
                .bind(now)
                .bind(to_json(&def.memory))
                .execute(conn)
                .await?
                .rows_affected()
        }))
    }

    /// Replaces the chats that also get the agent's approval notices (SPEC §3.2 `approval_notify[]`).
    pub async fn set_approval_notify(&mut self, id: Uuid, targets: &[ApprovalTarget]) -> Result<()> {
        let now = ms(self.now());
        let updated = write!(self, |conn| {
            sqlx::query("UPDATE agent SET approval_notify = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(to_json(&targets))
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound { entity: "agent" });
        }
        Ok(())
    }

    /// Sets the system-derived health. `reset_at` starts a new breaker window (release).
    pub async fn set_agent_health(
        &mut self,
        id: Uuid,
        health: HealthState,
        reason: Option<&str>,
        reset_at: Option<Timestamp>,
    ) -> Result<()> {
        let now = ms(self.now());
        write!(self, |conn| {
            sqlx::query(
                "UPDATE agent SET health_state = $2, quarantine_reason = $3, health_reset_at = COALESCE($4, health_reset_at), \
                 updated_at = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(health.as_str())
            .bind(reason)
            .bind(opt_ms(reset_at))
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Deletes the agent and, by cascade, everything that belongs only to it.
    pub async fn purge_agent(&mut self, id: Uuid) -> Result<()> {
        write!(self, |conn| sqlx::query("DELETE FROM agent WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected());
        Ok(())
    }
}

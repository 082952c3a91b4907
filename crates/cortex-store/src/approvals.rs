//! Approval requests and their hash-chained audit trail (SPEC §3.4, §7).
//!
//! Decisions are guarded updates (`WHERE status = 'pending' AND expires_at > now`), so two racing
//! approvers cannot both win. Execution of an approved call is claimed once with
//! [`Tx::claim_approved_execution`], which makes an approval good for at most one run even across a crash.
//! Only the SHA-256 of the one-time token is stored.

use base64::Engine as _;
use cortex_core::Timestamp;
use cortex_core::approval::{ApprovalStatus, DecidedVia, Decision, RiskTier};
use cortex_core::event::{Actor, EventType};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use crate::engine::{read, write};
use crate::events::NewEvent;
use crate::page::{Cursor, Page};
use crate::rows::{ms, opt_time, parse, time};
use crate::{Result, Store, StoreError, Tx};

/// Prefix of approval tokens (SPEC §19).
pub const TOKEN_PREFIX: &str = "cortex_apr_1_";

/// A stored approval request.
#[derive(Debug, Clone)]
pub struct Approval {
    pub id: Uuid,
    pub job_id: Uuid,
    pub tool_call_id: Option<Uuid>,
    pub agent_id: Uuid,
    pub action_type: String,
    pub action_summary: String,
    pub action_detail: Value,
    pub tool_ref: Option<String>,
    pub args_hash: Option<String>,
    pub risk: RiskTier,
    pub status: ApprovalStatus,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    pub decided_by: Option<Uuid>,
    pub decided_by_key: Option<Uuid>,
    pub decided_via: Option<DecidedVia>,
    pub reason: Option<String>,
    pub approver_user_id: Option<Uuid>,
    pub executed_at: Option<Timestamp>,
}

/// A request to create.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub job_id: Uuid,
    pub tool_call_id: Option<Uuid>,
    pub agent_id: Uuid,
    /// `tool`, `job` or `request`.
    pub action_type: &'static str,
    /// What the approver reads first (≤ 500 chars).
    pub action_summary: String,
    /// The exact action, e.g. `{tool_ref, arguments, args_hash}` with secrets redacted.
    pub action_detail: Value,
    pub tool_ref: Option<String>,
    pub args_hash: Option<String>,
    pub risk: RiskTier,
    pub expires_at: Timestamp,
}

/// Why a decision was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideRefusal {
    AlreadyDecided(ApprovalStatus),
    Expired,
}

/// Who decided and how.
#[derive(Debug, Clone)]
pub struct Decider {
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub via: DecidedVia,
    /// Audit actor description (name, role, surface, ip…).
    pub actor: Value,
}

/// One entry of an approval's audit trail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApprovalAuditEntry {
    pub seq: i64,
    pub event: String,
    pub actor: Value,
    pub details: Value,
    pub entry_hash: String,
    pub prev_hash: String,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    event: String,
    actor: Json<Value>,
    details: Json<Value>,
    entry_hash: String,
    prev_hash: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct ApprovalRow {
    id: Uuid,
    job_id: Uuid,
    tool_call_id: Option<Uuid>,
    agent_id: Uuid,
    action_type: String,
    action_summary: String,
    action_detail: Json<Value>,
    tool_ref: Option<String>,
    args_hash: Option<String>,
    risk: String,
    status: String,
    requested_at: i64,
    expires_at: i64,
    decided_at: Option<i64>,
    decided_by: Option<Uuid>,
    decided_by_key: Option<Uuid>,
    decided_via: Option<String>,
    reason: Option<String>,
    approver_user_id: Option<Uuid>,
    executed_at: Option<i64>,
}

impl ApprovalRow {
    fn into_approval(self) -> Result<Approval> {
        Ok(Approval {
            id: self.id,
            job_id: self.job_id,
            tool_call_id: self.tool_call_id,
            agent_id: self.agent_id,
            action_type: self.action_type,
            action_summary: self.action_summary,
            action_detail: self.action_detail.0,
            tool_ref: self.tool_ref,
            args_hash: self.args_hash,
            risk: parse("approval_request.risk", &self.risk)?,
            status: parse("approval_request.status", &self.status)?,
            requested_at: time(self.requested_at),
            expires_at: time(self.expires_at),
            decided_at: opt_time(self.decided_at),
            decided_by: self.decided_by,
            decided_by_key: self.decided_by_key,
            decided_via: self.decided_via.map(|via| parse("approval_request.decided_via", &via)).transpose()?,
            reason: self.reason,
            approver_user_id: self.approver_user_id,
            executed_at: opt_time(self.executed_at),
        })
    }
}

macro_rules! approval_columns {
    () => {
        "id, job_id, tool_call_id, agent_id, action_type, action_summary, action_detail, tool_ref, args_hash, risk, status, \
         requested_at, expires_at, decided_at, decided_by, decided_by_key, decided_via, reason, approver_user_id, executed_at"
    };
}

/// SHA-256 hex of an approval token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Hash of one audit entry: SHA-256 of the canonical JSON of its content and the previous hash.
fn entry_hash(
    approval_id: Uuid,
    event: &str,
    actor: &Value,
    details: &Value,
    created_at_ms: i64,
    prev_hash: &str,
) -> String {
    let content = json!({
        "approval_id": approval_id,
        "event": event,
        "actor": actor,
        "details": details,
        "created_at": time(created_at_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "prev_hash": prev_hash,
    });
    hex::encode(Sha256::digest(cortex_core::checkpoint::canonical_json(&content).as_bytes()))
}

/// Filters for [`Store::list_approvals`].
#[derive(Debug, Default, Clone)]
pub struct ApprovalFilter {
    pub status: Option<ApprovalStatus>,
    pub agent_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
}

impl Store {
    /// Requests waiting for a human, for the `cortex_approvals_pending` gauge.
    pub async fn count_pending_approvals(&self) -> Result<i64> {
        Ok(read!(self, |conn| {
            sqlx::query_scalar("SELECT COUNT(*) FROM approval_request WHERE status = 'pending'").fetch_one(conn).await?
        }))
    }

    pub async fn get_approval(&self, id: Uuid) -> Result<Approval> {
        let row: Option<ApprovalRow> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", approval_columns!(), " FROM approval_request WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        });
        row.ok_or(StoreError::NotFound { entity: "approval" })?.into_approval()
    }

    /// The approval a token belongs to, if any.
    pub async fn find_approval_by_token(&self, token: &str) -> Result<Option<Approval>> {
        let row: Option<ApprovalRow> = read!(self, |conn| {
            sqlx::query_as(concat!("SELECT ", approval_columns!(), " FROM approval_request WHERE token_hash = $1"))
                .bind(token_hash(token))
                .fetch_optional(conn)
                .await?
        });
        row.map(ApprovalRow::into_approval).transpose()
    }

    /// Approvals newest first.
    pub async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<Approval>> {
        let rows: Vec<ApprovalRow> = read!(self, |conn| {
            let mut query =
                sqlx::QueryBuilder::new(concat!("SELECT ", approval_columns!(), " FROM approval_request WHERE 1 = 1"));
            if let Some(status) = filter.status {
                query.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(agent_id) = filter.agent_id {
                query.push(" AND agent_id = ").push_bind(agent_id);
            }
            if let Some(job_id) = filter.job_id {
                query.push(" AND job_id = ").push_bind(job_id);
            }
            if let Some(cursor) = cursor {
                query.push(" AND id < ").push_bind(cursor.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64 + 1);
            query.build_query_as().fetch_all(conn).await?
        });
        let approvals = rows.into_iter().map(ApprovalRow::into_approval).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(approvals, limit, |approval| approval.id))
    }

    /// The audit trail of an approval, oldest first.
    pub async fn approval_audit(&self, approval_id: Uuid) -> Result<Vec<ApprovalAuditEntry>> {
        let rows: Vec<AuditRow> = read!(self, |conn| {
            sqlx::query_as(
                "SELECT seq, event, actor, details, entry_hash, prev_hash, created_at FROM approval_audit \
                 WHERE approval_id = $1 ORDER BY seq",
            )
            .bind(approval_id)
            .fetch_all(conn)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| ApprovalAuditEntry {
                seq: row.seq,
                event: row.event,
                actor: row.actor.0,
                details: row.details.0,
                entry_hash: row.entry_hash,
                prev_hash: row.prev_hash,
                created_at: time(row.created_at),
            })
            .collect())
    }

    /// `(job id, approval id)` of jobs still waiting although their request was decided.
    pub async fn waiting_jobs_with_decided_approvals(&self) -> Result<Vec<(Uuid, Uuid)>> {
        Ok(read!(self, |conn| {
            sqlx::query_as(
                "SELECT j.id, a.id FROM job j JOIN approval_request a ON a.id = j.approval_id \
                 WHERE j.status = 'waiting_for_approval' AND a.status IN ('approved', 'rejected')",
            )
            .fetch_all(conn)
            .await?
        }))
    }

    /// Recomputes the hash chain of an approval's audit trail; `false` when any entry was altered.
    pub async fn approval_chain_valid(&self, approval_id: Uuid) -> Result<bool> {
        let entries = self.approval_audit(approval_id).await?;
        let mut prev = String::new();
        for entry in &entries {
            let expected =
                entry_hash(approval_id, &entry.event, &entry.actor, &entry.details, ms(entry.created_at), &prev);
            if entry.prev_hash != prev || entry.entry_hash != expected {
                return Ok(false);
            }
            prev = entry.entry_hash.clone();
        }
        Ok(true)
    }
}

impl Tx {
    /// Creates a pending request, its `created` audit entry, the `approval.requested` event and, for a job
    /// a chat started, the chat notice in the outbox. Returns the approval and its one-time token
    /// (plaintext exists only in this return value).
    pub async fn insert_approval(&mut self, new: &NewApproval) -> Result<(Approval, String)> {
        let id = cortex_core::new_id();
        let now = ms(self.now());
        let token = new_token();
        let summary: String = new.action_summary.chars().take(500).collect();
        let row: ApprovalRow = write!(self, |conn| {
            sqlx::query_as(concat!(
                "INSERT INTO approval_request (id, job_id, tool_call_id, agent_id, action_type, action_summary, action_detail, \
                 tool_ref, args_hash, risk, token_hash, status, requested_at, expires_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13, $12, $12) RETURNING ",
                approval_columns!()
            ))
            .bind(id)
            .bind(new.job_id)
            .bind(new.tool_call_id)
            .bind(new.agent_id)
            .bind(new.action_type)
            .bind(&summary)
            .bind(Json(&new.action_detail))
            .bind(new.tool_ref.as_deref())
            .bind(new.args_hash.as_deref())
            .bind(new.risk.as_str())
            .bind(token_hash(&token))
            .bind(now)
            .bind(ms(new.expires_at))
            .fetch_one(conn)
            .await?
        });
        let approval = row.into_approval()?;
        self.append_approval_audit(
            id,
            "created",
            json!({"type": "agent", "agent_id": new.agent_id}),
            json!({"risk": new.risk, "expires_at": new.expires_at}),
        )
        .await?;
        self.emit(NewEvent {
            actor: Actor::Agent,
            tool_ref: new.tool_ref.clone(),
            ..NewEvent::new(
                new.agent_id,
                Some(new.job_id),
                EventType::ApprovalRequested,
                json!({"approval_id": id, "risk": new.risk, "summary": summary, "tool_ref": new.tool_ref, "expires_at": cortex_core::clock::rfc3339_millis(new.expires_at)}),
            )
        });
        self.queue_approval_notice(new.job_id, id).await?;
        Ok((approval, token))
    }

    /// Reads and (PostgreSQL) locks an approval for the rest of the transaction.
    pub async fn lock_approval(&mut self, id: Uuid) -> Result<Approval> {
        let row: Option<ApprovalRow> = match &mut self.conn {
            crate::engine::TxConn::Sqlite(conn) => {
                sqlx::query_as(concat!("SELECT ", approval_columns!(), " FROM approval_request WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut **conn)
                    .await?
            }
            crate::engine::TxConn::Postgres(conn) => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    approval_columns!(),
                    " FROM approval_request WHERE id = $1 FOR UPDATE"
                ))
                .bind(id)
                .fetch_optional(&mut **conn)
                .await?
            }
        };
        row.ok_or(StoreError::NotFound { entity: "approval" })?.into_approval()
    }

    /// Applies a decision if the request is still pending and unexpired; otherwise says why not.
    pub async fn decide_approval(
        &mut self,
        id: Uuid,
        decision: Decision,
        decider: &Decider,
        reason: Option<&str>,
    ) -> Result<std::result::Result<Approval, DecideRefusal>> {
        let now = ms(self.now());
        let status = match decision {
            Decision::Approve => ApprovalStatus::Approved,
            Decision::Reject => ApprovalStatus::Rejected,
        };
        let row: Option<ApprovalRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "UPDATE approval_request SET status = $2, decided_at = $3, decided_by = $4, decided_by_key = $5, decided_via = $6, \
                 reason = $7, updated_at = $3 WHERE id = $1 AND status = 'pending' AND expires_at > $3 RETURNING ",
                approval_columns!()
            ))
            .bind(id)
            .bind(status.as_str())
            .bind(now)
            .bind(decider.user_id)
            .bind(decider.api_key_id)
            .bind(decider.via.as_str())
            .bind(reason)
            .fetch_optional(conn)
            .await?
        });
        let Some(row) = row else {
            let current = self.lock_approval(id).await?;
            return Ok(Err(match current.status {
                ApprovalStatus::Pending => DecideRefusal::Expired,
                other => DecideRefusal::AlreadyDecided(other),
            }));
        };
        let approval = row.into_approval()?;
        self.append_approval_audit(
            id,
            "decided",
            decider.actor.clone(),
            json!({"decision": decision, "reason": reason, "via": decider.via}),
        )
        .await?;
        self.emit(NewEvent {
            actor: Actor::Operator,
            ..NewEvent::new(
                approval.agent_id,
                Some(approval.job_id),
                EventType::ApprovalDecided,
                json!({"approval_id": id, "decision": decision, "status": approval.status, "reason": reason, "via": decider.via}),
            )
        });
        Ok(Ok(approval))
    }

    /// Claims the single execution an approval allows; `true` exactly once per approved request.
    pub async fn claim_approved_execution(&mut self, approval_id: Uuid) -> Result<bool> {
        let now = ms(self.now());
        let claimed = write!(self, |conn| {
            sqlx::query(
                "UPDATE approval_request SET executed_at = $2, updated_at = $2 \
                 WHERE id = $1 AND status = 'approved' AND executed_at IS NULL",
            )
            .bind(approval_id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if claimed == 1 {
            self.append_approval_audit(approval_id, "executed", json!({"type": "system"}), json!({})).await?;
        }
        Ok(claimed == 1)
    }

    /// Moves pending requests whose time is up to `expired` and returns them (the sweeper then times out
    /// their jobs).
    pub async fn expire_due_approvals(&mut self, limit: i64) -> Result<Vec<Approval>> {
        let now = ms(self.now());
        let rows: Vec<ApprovalRow> = write!(self, |conn| {
            sqlx::query_as(concat!(
                "UPDATE approval_request SET status = 'expired', decided_at = $1, reason = 'expired', updated_at = $1 \
                 WHERE id IN (SELECT id FROM approval_request WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2) \
                 AND status = 'pending' RETURNING ",
                approval_columns!()
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(conn)
            .await?
        });
        let approvals = rows.into_iter().map(ApprovalRow::into_approval).collect::<Result<Vec<_>>>()?;
        for approval in &approvals {
            self.append_approval_audit(approval.id, "expired", json!({"type": "system"}), json!({"reason": "ttl"}))
                .await?;
        }
        Ok(approvals)
    }

    /// Expires every pending approval of a job (the job was cancelled or killed); returns how many.
    pub async fn expire_pending_approvals_of_job(&mut self, job_id: Uuid, reason: &str) -> Result<u64> {
        let now = ms(self.now());
        let ids: Vec<Uuid> = write!(self, |conn| {
            sqlx::query_scalar(
                "UPDATE approval_request SET status = 'expired', decided_at = $2, reason = $3, updated_at = $2 \
                 WHERE job_id = $1 AND status = 'pending' RETURNING id",
            )
            .bind(job_id)
            .bind(now)
            .bind(reason)
            .fetch_all(conn)
            .await?
        });
        for id in &ids {
            self.append_approval_audit(*id, "expired", json!({"type": "system"}), json!({"reason": reason})).await?;
        }
        Ok(ids.len() as u64)
    }

    /// Appends an entry to an approval's hash-chained audit trail.
    pub async fn append_approval_audit(
        &mut self,
        approval_id: Uuid,
        event: &str,
        actor: Value,
        details: Value,
    ) -> Result<()> {
        let last: Option<(i64, String)> = write!(self, |conn| {
            sqlx::query_as(
                "SELECT seq, entry_hash FROM approval_audit WHERE approval_id = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(approval_id)
            .fetch_optional(conn)
            .await?
        });
        let (seq, prev_hash) = last.map(|(seq, hash)| (seq + 1, hash)).unwrap_or((1, String::new()));
        let now = ms(self.now());
        let hash = entry_hash(approval_id, event, &actor, &details, now, &prev_hash);
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO approval_audit (id, approval_id, seq, event, actor, details, entry_hash, prev_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(cortex_core::new_id())
            .bind(approval_id)
            .bind(seq)
            .bind(event)
            .bind(Json(&actor))
            .bind(Json(&details))
            .bind(&hash)
            .bind(&prev_hash)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }
}

//! `cortex approvals list|approve|reject`.

use clap::Subcommand;
use serde_json::{Value, json};

use super::output::{table, text};
use super::{Api, ClientArgs};

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approval requests (pending by default).
    List {
        /// pending, approved, rejected or expired.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// Approve a request.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a request.
    Reject {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(args: &ClientArgs, command: ApprovalsCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match command {
        ApprovalsCommand::List { status } => {
            let page: Value = api.get(&format!("/approvals?status={status}&limit=200")).await?;
            api.print(&page, |page| {
                let rows = page["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|a| {
                                vec![
                                    text(a, "id"),
                                    text(a, "risk"),
                                    text(a, "status"),
                                    text(a, "expires_at"),
                                    text(a, "action_summary"),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["ID", "RISK", "STATUS", "EXPIRES", "ACTION"], rows)
            });
        }
        ApprovalsCommand::Approve { id, reason } => decide(&api, &id, "approve", reason).await?,
        ApprovalsCommand::Reject { id, reason } => decide(&api, &id, "reject", reason).await?,
    }
    Ok(())
}

async fn decide(api: &Api, id: &str, decision: &str, reason: Option<String>) -> anyhow::Result<()> {
    let decided: Value =
        api.post(&format!("/approvals/{id}/decide"), &json!({"decision": decision, "reason": reason})).await?;
    api.print(&decided, |a| format!("approval {} {}", text(a, "id"), text(a, "status")));
    Ok(())
}

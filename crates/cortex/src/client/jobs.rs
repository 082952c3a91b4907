//! `cortex jobs list|show|retry|cancel`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::output::{fields, table, text};
use super::{Api, ClientArgs};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        /// Agent id or slug.
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one job with its error, usage and steps.
    Show { id: String },
    /// Retry a failed, timed-out or dead-lettered job.
    Retry { id: String },
    /// Cancel a job.
    Cancel { id: String },
}

pub async fn run(args: &ClientArgs, command: JobsCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match command {
        JobsCommand::List { status, agent, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(status) = status {
                query.push(("status", status));
            }
            if let Some(agent) = agent {
                query.push(("agent_id", agent));
            }
            let page: Value = api.send(api.request(Method::GET, "/jobs").query(&query)).await?;
            api.print(&page, |page| {
                let rows = page["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|job| {
                                vec![
                                    text(job, "id"),
                                    text(job, "kind"),
                                    text(job, "status"),
                                    format!("{}/{}", text(job, "attempt"), text(job, "max_attempts")),
                                    text(job, "created_at"),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["ID", "KIND", "STATUS", "ATTEMPT", "CREATED"], rows)
            });
        }
        JobsCommand::Show { id } => {
            let job: Value = api.get(&format!("/jobs/{id}")).await?;
            api.print(&job, |job| {
                let mut out = fields(
                    job,
                    &["id", "agent_id", "kind", "status", "attempt", "max_attempts", "created_at", "completed_at"],
                );
                if !job["error"].is_null() {
                    out.push_str(&format!(
                        "\nerror            {}/{}: {}",
                        text(&job["error"], "class"),
                        text(&job["error"], "code"),
                        text(&job["error"], "message")
                    ));
                }
                out.push_str(&format!(
                    "\nusage            {} in / {} out tokens, ${}",
                    text(&job["usage"], "tokens_in"),
                    text(&job["usage"], "tokens_out"),
                    text(&job["usage"], "cost_usd")
                ));
                if let Some(response) = job["result"]["response"].as_str() {
                    out.push_str(&format!("\nresponse         {response}"));
                }
                out
            });
        }
        JobsCommand::Retry { id } => {
            let job: Value = api.send(api.request(Method::POST, &format!("/jobs/{id}/retry"))).await?;
            api.print(&job, |job| format!("job {} queued again ({})", text(job, "id"), text(job, "status")));
        }
        JobsCommand::Cancel { id } => {
            let job: Value = api.send(api.request(Method::POST, &format!("/jobs/{id}/cancel"))).await?;
            api.print(&job, |job| format!("cancel requested for job {} ({})", text(job, "id"), text(job, "status")));
        }
    }
    Ok(())
}

//! `cortex agent create|list|show`.

use clap::Subcommand;
use serde_json::{Value, json};

use super::output::{fields, table, text};
use super::{Api, ClientArgs};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: Option<String>,
        #[arg(long, default_value = "openai")]
        provider: String,
        #[arg(long, default_value = "gpt-4o-mini")]
        model: String,
        /// The system prompt, or `@file` to read it from a file.
        #[arg(long)]
        system_prompt: Option<String>,
        /// Enable a tool (repeatable).
        #[arg(long = "tool")]
        tools: Vec<String>,
    },
    /// List agents.
    List,
    /// Show one agent by id or slug.
    Show { agent: String },
}

pub async fn run(args: &ClientArgs, command: AgentCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match command {
        AgentCommand::Create { name, slug, provider, model, system_prompt, tools } => {
            let system_prompt = match system_prompt {
                Some(text) => Some(read_prompt(&text)?),
                None => None,
            };
            let mut body =
                json!({"name": name, "model_config": {"provider": provider, "model": model}, "tools": tools});
            if let Some(slug) = slug {
                body["slug"] = json!(slug);
            }
            if let Some(prompt) = system_prompt {
                body["system_prompt"] = json!(prompt);
            }
            let agent: Value = api.post("/agents", &body).await?;
            api.print(&agent, |agent| format!("created agent {} ({})", text(agent, "slug"), text(agent, "id")));
        }
        AgentCommand::List => {
            let page: Value = api.get("/agents?limit=200").await?;
            api.print(&page, |page| {
                let rows = page["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|agent| {
                                vec![
                                    text(agent, "slug"),
                                    text(agent, "status"),
                                    text(agent, "health_state"),
                                    format!(
                                        "{}/{}",
                                        text(&agent["model_config"], "provider"),
                                        text(&agent["model_config"], "model")
                                    ),
                                    text(agent, "id"),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["SLUG", "STATUS", "HEALTH", "MODEL", "ID"], rows)
            });
        }
        AgentCommand::Show { agent } => {
            let agent: Value = api.get(&format!("/agents/{agent}")).await?;
            api.print(&agent, |agent| {
                let mut out = fields(agent, &["id", "name", "slug", "status", "health_state", "created_at"]);
                out.push_str(&format!(
                    "\nmodel            {}/{}\ntools            {}",
                    text(&agent["model_config"], "provider"),
                    text(&agent["model_config"], "model"),
                    agent["tools"]
                        .as_array()
                        .map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                ));
                out
            });
        }
    }
    Ok(())
}

fn read_prompt(value: &str) -> anyhow::Result<String> {
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!(super::ClientError {
                exit_code: 2,
                message: format!("cannot read system prompt file {path}: {err}")
            })
        }),
        None => Ok(value.to_owned()),
    }
}

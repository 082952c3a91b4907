//! `cortex credentials list|add|rm` and `cortex providers list` (issue 15).
//!
//! The secret of `credentials add` is read from standard input, never from the command line, where it
//! would be visible to every user of the machine (`ps`) and kept in shell history.

use std::io::Read;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::output::{table, text};
use super::{Api, ClientArgs, fail};

/// Largest secret read from standard input.
const MAX_SECRET_BYTES: u64 = 16 * 1024;

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// List credentials (values are never shown).
    List,
    /// Add a credential; the secret is read from standard input (`printf %s "$KEY" | cortex credentials add …`).
    Add {
        /// Provider id for `llm` credentials (`openai`, `google`, `groq-local`, …).
        name: String,
        /// llm, embedding, search, tool_secret or speech.
        #[arg(long, default_value = "llm")]
        kind: String,
        /// Base URL (default: the preset's).
        #[arg(long)]
        base_url: Option<String>,
        /// Wire style of a custom `llm` provider: openai or anthropic.
        #[arg(long)]
        api_style: Option<String>,
        /// The preset this credential serves when its name is not one (a team's own key).
        #[arg(long)]
        provider: Option<String>,
        /// Store no secret (local servers that need no key); standard input is not read.
        #[arg(long)]
        no_secret: bool,
    },
    /// Delete a credential by id or by name (`llm` unless `--kind`).
    Rm {
        id_or_name: String,
        #[arg(long, default_value = "llm")]
        kind: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Provider presets and custom providers, with their credentials and reported models.
    List {
        /// Ask every server for its models now.
        #[arg(long)]
        refresh: bool,
    },
}

pub async fn run(args: &ClientArgs, command: CredentialsCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match command {
        CredentialsCommand::List => {
            let page = api.get_all("/credentials").await?;
            api.print(&page, |page| {
                let rows = items(page)
                    .map(|c| {
                        vec![
                            text(c, "id"),
                            text(c, "kind"),
                            text(c, "name"),
                            text(c, "status"),
                            text(c, "source"),
                            c["value"]["last4"].as_str().map_or_else(
                                || if c["value"]["is_set"] == true { "set".into() } else { "-".into() },
                                |last4| format!("…{last4}"),
                            ),
                            text(c, "last_used_at"),
                            c["used_by"].as_array().map_or_else(String::new, |agents| {
                                agents.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
                            }),
                        ]
                    })
                    .collect();
                table(&["ID", "KIND", "NAME", "STATUS", "SOURCE", "SECRET", "LAST USED", "USED BY"], rows)
            });
        }
        CredentialsCommand::Add { name, kind, base_url, api_style, provider, no_secret } => {
            let value = if no_secret { None } else { Some(read_secret()?) };
            let body = json!({"name": name, "kind": kind, "value": value, "base_url": base_url,
                              "api_style": api_style, "provider": provider});
            let created: Value = api.post("/credentials", &body).await?;
            api.print(&created, |c| {
                format!("added {} credential {} ({})", text(c, "kind"), text(c, "name"), text(c, "id"))
            });
        }
        CredentialsCommand::Rm { id_or_name, kind } => {
            let id = if uuid::Uuid::parse_str(&id_or_name).is_ok() {
                id_or_name.clone()
            } else {
                let page = api.get_all("/credentials").await?;
                let found = items(&page).find(|c| c["name"] == id_or_name.as_str() && c["kind"] == kind.as_str());
                found
                    .map(|c| text(c, "id"))
                    .ok_or_else(|| fail(1, format!("no {kind} credential is named `{id_or_name}`")))?
            };
            let _: Value = api.send(api.request(Method::DELETE, &format!("/credentials/{id}"))).await?;
            let done = json!({"deleted": id});
            api.print(&done, |_| format!("deleted credential {id_or_name}"));
        }
    }
    Ok(())
}

pub async fn run_providers(args: &ClientArgs, command: ProvidersCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let ProvidersCommand::List { refresh } = command;
    let page = api.get_all(if refresh { "/providers?refresh=true" } else { "/providers" }).await?;
    api.print(&page, |page| {
        let rows = items(page)
            .map(|p| {
                let models = p["reported_models"]
                    .as_array()
                    .or_else(|| p["catalogue"].as_array())
                    .map(|models| {
                        models.iter().filter_map(|m| m.as_str().or_else(|| m["id"].as_str())).count().to_string()
                    })
                    .unwrap_or_default();
                vec![
                    text(p, "name"),
                    text(p, "api_style"),
                    if p["has_credential"] == true { "yes".into() } else { "no".into() },
                    models,
                    text(p, "base_url"),
                ]
            })
            .collect();
        table(&["PROVIDER", "STYLE", "CREDENTIAL", "MODELS", "BASE URL"], rows)
    });
    Ok(())
}

fn items(page: &Value) -> impl Iterator<Item = &Value> {
    page["items"].as_array().into_iter().flatten()
}

/// The secret from standard input, without a trailing newline; an empty one is a usage error.
fn read_secret() -> anyhow::Result<String> {
    let mut secret = String::new();
    std::io::stdin()
        .take(MAX_SECRET_BYTES)
        .read_to_string(&mut secret)
        .map_err(|err| fail(2, format!("cannot read the secret from standard input: {err}")))?;
    let secret = secret.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(fail(2, "pipe the secret on standard input (or pass --no-secret for a keyless local server)"));
    }
    Ok(secret)
}

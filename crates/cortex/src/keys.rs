//! `cortex keys …`: API key administration straight against the database, for recovery and scripting
//! (e.g. when the bootstrap key was lost).

use std::sync::Arc;

use anyhow::{Context, bail};
use cortex_core::clock::SystemClock;
use cortex_core::role::Role;
use cortex_store::Store;
use cortex_store::users::{KeyListing, KeySource, NewApiKey};

use crate::cli::KeysCommand;
use crate::config::StoreConfig;

pub async fn run(config: StoreConfig, command: KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::Generate = command {
        println!("{}", cortex_core::api_key::generate().plaintext);
        return Ok(());
    }
    let store = Store::open_shared(&config.database, Arc::new(SystemClock)).await.context("opening the database")?;
    store.migrate().await.context("applying migrations")?;
    match command {
        KeysCommand::Create { name, role } => {
            let role: Role =
                role.parse().map_err(|err| anyhow::anyhow!(crate::config::ConfigError(format!("--role: {err}"))))?;
            if role == Role::None {
                bail!(crate::config::ConfigError("--role must be viewer, operator, approver or admin".into()));
            }
            let generated = cortex_core::api_key::generate();
            let mut tx = store.begin().await?;
            let user = tx.insert_user(&name, None, role).await?;
            let key = tx
                .insert_api_key(&NewApiKey::system(
                    name,
                    generated.prefix,
                    generated.hash,
                    role,
                    Some(user.id),
                    KeySource::Api,
                ))
                .await?;
            tx.audit(cortex_store::audit::NewAudit {
                actor_type: "system",
                actor_id: Some("cli".into()),
                action: "api_key.create".into(),
                target_type: "api_key",
                target_id: Some(key.id.to_string()),
                details: serde_json::json!({"role": role, "via": "cortex keys create"}),
                ip: None,
                request_id: None,
            })
            .await?;
            tx.commit().await?;
            println!("{}", generated.plaintext);
            eprintln!("created {role} key {} ({}); the secret above is not shown again", key.id, key.prefix);
        }
        KeysCommand::List => {
            let keys = store.list_api_keys(KeyListing::All, None, 200).await?;
            println!("{:<36}  {:<8}  {:<8}  {:<8}  {:<10}  NAME", "ID", "PREFIX", "ROLE", "SOURCE", "STATE");
            for key in keys.items {
                let state = if key.revoked_at.is_some() { "revoked" } else { "active" };
                println!(
                    "{:<36}  {:<8}  {:<8}  {:<8}  {:<10}  {}",
                    key.id, key.prefix, key.role, key.source, state, key.name
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let key = match uuid::Uuid::parse_str(&id) {
                Ok(uuid) => store.get_api_key(uuid).await.ok(),
                Err(_) => store.find_api_key(&id).await?.map(|found| found.key),
            };
            let Some(key) = key else { bail!("no key with id or prefix `{id}`") };
            let mut tx = store.begin().await?;
            let revoked = tx.revoke_api_key(key.id).await?;
            tx.commit().await?;
            match revoked {
                0 => println!("already revoked"),
                1 => println!("revoked"),
                n => println!("revoked, with {} key(s) created with it", n - 1),
            }
        }
        KeysCommand::Generate => {}
    }
    store.close().await;
    Ok(())
}

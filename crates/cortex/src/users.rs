//! `cortex user create`: local dashboard users straight against the database (SPEC Appendix B "Local
//! users"). The password comes from standard input with `--password-stdin`; otherwise a strong one is
//! generated and printed once. Only its Argon2id hash is stored. `cortex user link`: a chat-platform
//! identity made to speak for an existing user (their role then applies to approval button presses).

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, bail};
use cortex_core::clock::SystemClock;
use cortex_core::role::Role;
use cortex_store::{Store, StoreError};
use rand::Rng;

use crate::cli::UserCommand;
use crate::config::{ConfigError, StoreConfig};

/// Length of a generated password (base62: about 119 bits).
const GENERATED_LENGTH: usize = 20;

fn generated_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..GENERATED_LENGTH).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ConfigError(message.into()))
}

pub async fn run(config: StoreConfig, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { email, role, name, password_stdin } => {
            create(config, email, role, name, password_stdin).await
        }
        UserCommand::Link { email, channel, platform_user_id } => link(config, email, channel, platform_user_id).await,
    }
}

async fn open(config: &StoreConfig) -> anyhow::Result<Store> {
    let store = Store::open_shared(&config.database, Arc::new(SystemClock)).await.context("opening the database")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

async fn link(config: StoreConfig, email: String, channel: uuid::Uuid, platform_user_id: String) -> anyhow::Result<()> {
    let email = email.trim().to_lowercase();
    let platform_user_id = platform_user_id.trim().to_owned();
    if platform_user_id.is_empty() {
        bail!(usage("--platform-user-id must not be empty"));
    }
    let store = open(&config).await?;
    let Some((user, _)) = store.find_login_user(&email).await? else {
        bail!(usage(format!("no user with email {email}")));
    };
    match store.channel(channel).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => bail!(usage(format!("no channel {channel}"))),
        Err(err) => return Err(err.into()),
    }
    let mut tx = store.begin().await?;
    let changed = tx.link_channel_user(channel, &platform_user_id, user.id, &user.display_name).await?;
    tx.audit(cortex_store::audit::NewAudit {
        actor_type: "system",
        actor_id: Some("cli".into()),
        action: "user.link_channel".into(),
        target_type: "user",
        target_id: Some(user.id.to_string()),
        details: serde_json::json!({"channel_id": channel, "platform_user_id": platform_user_id, "via": "cortex user link"}),
        ip: None,
        request_id: None,
    })
    .await?;
    tx.commit().await?;
    store.close().await;
    let state = if changed { "linked" } else { "already linked" };
    println!("{state}: {platform_user_id} on channel {channel} speaks for {email} ({})", user.role);
    Ok(())
}

async fn create(
    config: StoreConfig,
    email: String,
    role: String,
    name: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let role: Role = role.parse().map_err(|err| usage(format!("--role: {err}")))?;
    if role == Role::None {
        bail!(usage("--role must be viewer, operator, approver or admin"));
    }
    let email = email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 254 {
        bail!(usage(format!("--email `{email}` is not an email address")));
    }
    let display_name = name.unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
    let (password, generated) = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
        (line.trim_end_matches(['\r', '\n']).to_owned(), false)
    } else {
        (generated_password(), true)
    };
    cortex_auth::password::check_policy(&password).map_err(|err| usage(format!("password: {err}")))?;
    let hash = cortex_auth::password::hash(&password)?;

    let store = open(&config).await?;
    let mut tx = store.begin().await?;
    let user = match tx.insert_user(&display_name, Some(&email), role).await {
        Ok(user) => user,
        Err(StoreError::Conflict { .. }) => bail!(usage(format!("a user with email {email} exists already"))),
        Err(err) => return Err(err.into()),
    };
    tx.set_password_hash(user.id, &hash).await?;
    tx.audit(cortex_store::audit::NewAudit {
        actor_type: "system",
        actor_id: Some("cli".into()),
        action: "user.create".into(),
        target_type: "user",
        target_id: Some(user.id.to_string()),
        details: serde_json::json!({"role": role, "email": email, "via": "cortex user create"}),
        ip: None,
        request_id: None,
    })
    .await?;
    tx.commit().await?;
    store.close().await;
    if generated {
        println!("{password}");
        eprintln!("created {role} user {email} ({}); the password above is not shown again", user.id);
    } else {
        println!("created {role} user {email} ({})", user.id);
    }
    Ok(())
}

//! The environment settings the runtime depends on (SPEC §2.2), parsed and validated once at start so a
//! malformed value stops `serve` with a message naming the variable instead of failing a job later.

use std::collections::BTreeMap;

use cortex_llm::ApiStyle;
use cortex_memory::{EmbeddingsConfig, EmbeddingsMode, QdrantConfig, VectorBackend, VectorConfig};
use cortex_store::extraction::ExtractionPolicy;
use cortex_tools::builtin::{WebSearchTool, web_search_from_env};
use cortex_tools::ssrf::{SSRF_ALLOW_ENV, SsrfPolicy};

use crate::RuntimeError;
use crate::tools::DelegationLimits;

/// Deepest delegation (`create_job` children of children …), default 3.
pub const DELEGATION_MAX_DEPTH_ENV: &str = "CORTEX_DELEGATION_MAX_DEPTH";
/// Most jobs one job may create, default 10.
pub const DELEGATION_MAX_CHILDREN_ENV: &str = "CORTEX_DELEGATION_MAX_CHILDREN";

/// Default OpenAI base (includes `/v1`, as the official SDKs).
pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";
/// Default Anthropic base (without `/v1`, as the official SDKs).
pub const ANTHROPIC_DEFAULT_BASE: &str = "https://api.anthropic.com";

/// A provider defined by environment variables, to be materialised as a `source: "env"` credential.
#[derive(Clone)]
pub(crate) struct EnvProvider {
    pub name: &'static str,
    pub api_style: ApiStyle,
    pub base_url: String,
    pub api_key: Option<String>,
}

/// The validated settings.
pub(crate) struct EnvSettings {
    /// `openai` then `anthropic`, each present when its key or base URL is set.
    pub providers: Vec<EnvProvider>,
    /// Names of the two always-known providers that the environment does not configure.
    pub absent_providers: Vec<&'static str>,
    pub ssrf: SsrfPolicy,
    pub web_search: Option<WebSearchTool>,
    pub delegation: DelegationLimits,
    /// Memory embeddings (`CORTEX_EMBEDDINGS*`).
    pub embeddings: EmbeddingsConfig,
    /// Memory vector backend (`CORTEX_VECTOR_BACKEND`, `QDRANT_URL`, `QDRANT_API_KEY`).
    pub vector: VectorConfig,
    /// Live memory extraction (`CORTEX_MEMORY_EXTRACTION`, `CORTEX_MEMORY_IDLE_MINUTES`); `None` when off.
    pub extraction: Option<ExtractionPolicy>,
}

/// `on` (default) or `off`: whether sessions are extracted into memory (SPEC §9.2).
pub const MEMORY_EXTRACTION_ENV: &str = "CORTEX_MEMORY_EXTRACTION";
/// Minutes of quiet after which a session's messages are extracted, 1–10080 (default 30, SPEC §9.2).
pub const MEMORY_IDLE_MINUTES_ENV: &str = "CORTEX_MEMORY_IDLE_MINUTES";
/// Unextracted messages that trigger an extraction at once, 2–1000 (default 50, SPEC §9.2).
pub const MEMORY_EXTRACT_EVERY_ENV: &str = "CORTEX_MEMORY_EXTRACT_EVERY";

fn extraction_from_env(read: &impl Fn(&str) -> Option<String>) -> Result<Option<ExtractionPolicy>, RuntimeError> {
    let on = match read(MEMORY_EXTRACTION_ENV).map(|value| value.to_ascii_lowercase()).as_deref() {
        None | Some("on") | Some("true") | Some("1") => true,
        Some("off") | Some("false") | Some("0") => false,
        Some(other) => {
            return Err(RuntimeError::InvalidEnv {
                var: MEMORY_EXTRACTION_ENV,
                reason: format!("`{other}` must be `on` or `off`"),
            });
        }
    };
    let defaults = ExtractionPolicy::default();
    let idle_minutes = bounded(MEMORY_IDLE_MINUTES_ENV, read(MEMORY_IDLE_MINUTES_ENV), 30_u64, 1..=10_080)?;
    let every = bounded(MEMORY_EXTRACT_EVERY_ENV, read(MEMORY_EXTRACT_EVERY_ENV), defaults.every_messages, 2..=1000)?;
    Ok(on.then_some(ExtractionPolicy {
        every_messages: every,
        idle: std::time::Duration::from_secs(idle_minutes * 60),
        ..defaults
    }))
}

struct ProviderVars {
    name: &'static str,
    api_style: ApiStyle,
    key_var: &'static str,
    url_var: &'static str,
    default_base: &'static str,
}

const PROVIDER_VARS: [ProviderVars; 2] = [
    ProviderVars {
        name: "openai",
        api_style: ApiStyle::OpenAi,
        key_var: "OPENAI_API_KEY",
        url_var: "OPENAI_BASE_URL",
        default_base: OPENAI_DEFAULT_BASE,
    },
    ProviderVars {
        name: "anthropic",
        api_style: ApiStyle::Anthropic,
        key_var: "ANTHROPIC_API_KEY",
        url_var: "ANTHROPIC_BASE_URL",
        default_base: ANTHROPIC_DEFAULT_BASE,
    },
];

impl EnvSettings {
    /// Parses the snapshot of the environment; empty values count as unset.
    pub(crate) fn parse(env: &BTreeMap<String, String>) -> Result<EnvSettings, RuntimeError> {
        let read = |name: &str| env.get(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let mut providers = Vec::new();
        let mut absent_providers = Vec::new();
        for vars in &PROVIDER_VARS {
            let api_key = read(vars.key_var);
            let base_url = read(vars.url_var);
            if let Some(base) = &base_url {
                check_url(vars.url_var, base)?;
            }
            if api_key.is_none() && base_url.is_none() {
                absent_providers.push(vars.name);
                continue;
            }
            providers.push(EnvProvider {
                name: vars.name,
                api_style: vars.api_style,
                base_url: base_url.unwrap_or_else(|| vars.default_base.to_owned()),
                api_key,
            });
        }
        let ssrf = SsrfPolicy::parse(&read(SSRF_ALLOW_ENV).unwrap_or_default())
            .map_err(|err| RuntimeError::InvalidEnv { var: SSRF_ALLOW_ENV, reason: err.to_string() })?;
        let web_search = web_search_from_env(read)
            .map_err(|err| RuntimeError::InvalidEnv { var: "CORTEX_SEARCH_API_*", reason: err.to_string() })?;
        let defaults = DelegationLimits::default();
        let delegation = DelegationLimits {
            max_depth: bounded(DELEGATION_MAX_DEPTH_ENV, read(DELEGATION_MAX_DEPTH_ENV), defaults.max_depth, 0..=10)?,
            max_children: bounded(
                DELEGATION_MAX_CHILDREN_ENV,
                read(DELEGATION_MAX_CHILDREN_ENV),
                defaults.max_children,
                0..=1000,
            )?,
        };
        let embeddings = embeddings_from_env(&read)?;
        let vector = vector_from_env(&read)?;
        let extraction = extraction_from_env(&read)?;
        Ok(EnvSettings { providers, absent_providers, ssrf, web_search, delegation, embeddings, vector, extraction })
    }
}

/// `CORTEX_EMBEDDINGS` = `auto` (default) | `api` | `local` | `none` (SPEC §9.4), with
/// `CORTEX_EMBEDDINGS_BASE_URL` / `_API_KEY` (defaults: `OPENAI_BASE_URL` / `OPENAI_API_KEY`),
/// `CORTEX_EMBEDDINGS_MODEL` (default `text-embedding-3-small`) and `CORTEX_EMBEDDINGS_MODEL_DIR` (the local
/// model; default `<data_dir>/models/all-MiniLM-L6-v2`). `auto` is `api` when an OpenAI key or base URL is
/// configured, else `local` when the local model's files are present (decided by the runtime), else `none`.
fn embeddings_from_env(read: &impl Fn(&str) -> Option<String>) -> Result<EmbeddingsConfig, RuntimeError> {
    const VAR: &str = "CORTEX_EMBEDDINGS";
    const BASE_VAR: &str = "CORTEX_EMBEDDINGS_BASE_URL";
    let base = read(BASE_VAR);
    if let Some(base) = &base {
        check_url(BASE_VAR, base)?;
    }
    let base = base.or_else(|| read("OPENAI_BASE_URL"));
    let api_key = read("CORTEX_EMBEDDINGS_API_KEY").or_else(|| read("OPENAI_API_KEY"));
    let requested = read(VAR).map(|mode| mode.to_ascii_lowercase());
    let auto = matches!(requested.as_deref(), None | Some("auto"));
    let mode = match requested.as_deref() {
        None | Some("auto") if base.is_some() || api_key.is_some() => EmbeddingsMode::Api,
        None | Some("auto") | Some("none") => EmbeddingsMode::None,
        Some("api") => EmbeddingsMode::Api,
        Some("local") => EmbeddingsMode::Local,
        Some(other) => {
            return Err(RuntimeError::InvalidEnv {
                var: VAR,
                reason: format!("`{other}` is not one of auto, api, local, none"),
            });
        }
    };
    Ok(EmbeddingsConfig {
        mode,
        base_url: cortex_llm::versioned_base(base.as_deref().unwrap_or(OPENAI_DEFAULT_BASE)),
        api_key,
        model: read("CORTEX_EMBEDDINGS_MODEL").unwrap_or_else(|| cortex_memory::embed::DEFAULT_API_MODEL.to_owned()),
        local_dir: read(LOCAL_MODEL_DIR_ENV).map(std::path::PathBuf::from),
        auto_local: auto && mode == EmbeddingsMode::None,
    })
}

/// `CORTEX_VECTOR_BACKEND` = `auto` (default) | `sqlite` | `pgvector` | `qdrant` (SPEC §9.5), with
/// `QDRANT_URL` / `QDRANT_API_KEY`. `qdrant` without a URL is refused here; whether a backend works at
/// all is decided when the runtime opens it.
fn vector_from_env(read: &impl Fn(&str) -> Option<String>) -> Result<VectorConfig, RuntimeError> {
    const VAR: &str = "CORTEX_VECTOR_BACKEND";
    const URL_VAR: &str = "QDRANT_URL";
    let backend = match read(VAR) {
        None => VectorBackend::Auto,
        Some(value) => value.parse().map_err(|reason| RuntimeError::InvalidEnv { var: VAR, reason })?,
    };
    let url = read(URL_VAR);
    if let Some(url) = &url {
        check_url(URL_VAR, url)?;
    }
    if backend == VectorBackend::Qdrant && url.is_none() {
        return Err(RuntimeError::InvalidEnv { var: VAR, reason: "`qdrant` needs QDRANT_URL".into() });
    }
    let qdrant = url.map(|url| QdrantConfig { url, api_key: read("QDRANT_API_KEY") });
    Ok(VectorConfig { backend, qdrant })
}

/// The local embedding model's directory (SPEC §9.4 `local`).
pub const LOCAL_MODEL_DIR_ENV: &str = "CORTEX_EMBEDDINGS_MODEL_DIR";

/// An integer setting within `range`, or `default` when unset.
fn bounded<T>(
    var: &'static str,
    value: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, RuntimeError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Some(text) = value else { return Ok(default) };
    match text.parse::<T>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(RuntimeError::InvalidEnv {
            var,
            reason: format!("`{text}` must be a whole number from {} to {}", range.start(), range.end()),
        }),
    }
}

/// An http(s) URL with a host.
fn check_url(var: &'static str, value: &str) -> Result<(), RuntimeError> {
    let invalid = |reason: String| RuntimeError::InvalidEnv { var, reason };
    let url = url::Url::parse(value).map_err(|err| invalid(format!("`{value}` is not a URL: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(format!("`{value}` must be an http:// or https:// URL with a host")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn providers_appear_when_configured() {
        let settings = EnvSettings::parse(&env(&[("OPENAI_API_KEY", "sk-1"), ("ANTHROPIC_API_KEY", " ")])).unwrap();
        assert_eq!(settings.providers.len(), 1);
        assert_eq!(settings.providers[0].base_url, OPENAI_DEFAULT_BASE);
        assert_eq!(settings.absent_providers, vec!["anthropic"]);
        let local = EnvSettings::parse(&env(&[("OPENAI_BASE_URL", "http://localhost:11434")])).unwrap();
        assert_eq!(local.providers[0].api_key, None);
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let err = EnvSettings::parse(&env(&[("ANTHROPIC_BASE_URL", "not a url")])).err().unwrap();
        assert!(err.to_string().starts_with("ANTHROPIC_BASE_URL:"), "{err}");
        let err = EnvSettings::parse(&env(&[("OPENAI_BASE_URL", "ftp://x")])).err().unwrap();
        assert!(err.to_string().starts_with("OPENAI_BASE_URL:"), "{err}");
        let err = EnvSettings::parse(&env(&[("CORTEX_SSRF_ALLOW", "10.0.0.0/99")])).err().unwrap();
        assert!(err.to_string().starts_with("CORTEX_SSRF_ALLOW:"), "{err}");
        let err = EnvSettings::parse(&env(&[("CORTEX_DELEGATION_MAX_DEPTH", "-1")])).err().unwrap();
        assert!(err.to_string().starts_with("CORTEX_DELEGATION_MAX_DEPTH:"), "{err}");
        let err = EnvSettings::parse(&env(&[("CORTEX_DELEGATION_MAX_CHILDREN", "many")])).err().unwrap();
        assert!(err.to_string().starts_with("CORTEX_DELEGATION_MAX_CHILDREN:"), "{err}");
    }

    #[test]
    fn delegation_limits_default_and_override() {
        assert_eq!(EnvSettings::parse(&env(&[])).unwrap().delegation, DelegationLimits::default());
        let set = env(&[("CORTEX_DELEGATION_MAX_DEPTH", "1"), ("CORTEX_DELEGATION_MAX_CHILDREN", "2")]);
        assert_eq!(EnvSettings::parse(&set).unwrap().delegation, DelegationLimits { max_depth: 1, max_children: 2 });
    }

    #[test]
    fn embeddings_follow_the_openai_settings_unless_told_otherwise() {
        let none = EnvSettings::parse(&env(&[])).unwrap().embeddings;
        assert_eq!(none.mode, EmbeddingsMode::None);
        let auto = EnvSettings::parse(&env(&[("OPENAI_BASE_URL", "http://127.0.0.1:9")])).unwrap().embeddings;
        assert_eq!((auto.mode, auto.base_url.as_str()), (EmbeddingsMode::Api, "http://127.0.0.1:9/v1"));
        assert_eq!(auto.model, "text-embedding-3-small");
        let own = env(&[
            ("OPENAI_API_KEY", "sk-1"),
            ("CORTEX_EMBEDDINGS", "API"),
            ("CORTEX_EMBEDDINGS_BASE_URL", "http://127.0.0.1:11434/v1"),
            ("CORTEX_EMBEDDINGS_MODEL", "nomic-embed-text"),
        ]);
        let own = EnvSettings::parse(&own).unwrap().embeddings;
        assert_eq!((own.base_url.as_str(), own.model.as_str()), ("http://127.0.0.1:11434/v1", "nomic-embed-text"));
        assert_eq!(own.api_key.as_deref(), Some("sk-1"));
        let off = env(&[("OPENAI_API_KEY", "sk-1"), ("CORTEX_EMBEDDINGS", "none")]);
        assert_eq!(EnvSettings::parse(&off).unwrap().embeddings.mode, EmbeddingsMode::None);
        assert!(none.auto_local, "auto without API settings falls back to a local model when present");
        assert!(!EnvSettings::parse(&off).unwrap().embeddings.auto_local, "an explicit none stays none");
        let local = env(&[("CORTEX_EMBEDDINGS", "local"), ("CORTEX_EMBEDDINGS_MODEL_DIR", "/models/minilm")]);
        let local = EnvSettings::parse(&local).unwrap().embeddings;
        assert_eq!(
            (local.mode, local.local_dir.as_deref()),
            (EmbeddingsMode::Local, Some(std::path::Path::new("/models/minilm")))
        );
        for bad in [("CORTEX_EMBEDDINGS", "sometimes"), ("CORTEX_EMBEDDINGS_BASE_URL", "x")] {
            let err = EnvSettings::parse(&env(&[bad])).err().unwrap();
            assert!(err.to_string().starts_with(bad.0), "{err}");
        }
    }

    #[test]
    fn vector_backend_is_auto_unless_told_otherwise() {
        let auto = EnvSettings::parse(&env(&[])).unwrap().vector;
        assert_eq!((auto.backend, auto.qdrant.is_none()), (VectorBackend::Auto, true));
        let qdrant = env(&[
            ("CORTEX_VECTOR_BACKEND", "qdrant"),
            ("QDRANT_URL", "http://127.0.0.1:6333"),
            ("QDRANT_API_KEY", "k-1"),
        ]);
        let qdrant = EnvSettings::parse(&qdrant).unwrap().vector;
        assert_eq!(qdrant.backend, VectorBackend::Qdrant);
        let config = qdrant.qdrant.unwrap();
        assert_eq!((config.url.as_str(), config.api_key.as_deref()), ("http://127.0.0.1:6333", Some("k-1")));
        assert_eq!(
            EnvSettings::parse(&env(&[("CORTEX_VECTOR_BACKEND", "pgvector")])).unwrap().vector.backend,
            VectorBackend::Pgvector
        );
        for bad in [
            env(&[("CORTEX_VECTOR_BACKEND", "faiss")]),
            env(&[("CORTEX_VECTOR_BACKEND", "qdrant")]),
            env(&[("QDRANT_URL", "qdrant:6333")]),
        ] {
            let err = EnvSettings::parse(&bad).err().unwrap();
            let var = bad.keys().next().unwrap();
            assert!(err.to_string().starts_with(var.as_str()), "{err}");
        }
    }

    #[test]
    fn extraction_is_on_by_default_and_tunable() {
        let default = EnvSettings::parse(&env(&[])).unwrap().extraction.unwrap();
        assert_eq!(default, ExtractionPolicy::default());
        let tuned = env(&[("CORTEX_MEMORY_IDLE_MINUTES", "5"), ("CORTEX_MEMORY_EXTRACT_EVERY", "10")]);
        let tuned = EnvSettings::parse(&tuned).unwrap().extraction.unwrap();
        assert_eq!((tuned.idle.as_secs(), tuned.every_messages), (300, 10));
        assert_eq!(EnvSettings::parse(&env(&[("CORTEX_MEMORY_EXTRACTION", "off")])).unwrap().extraction, None);
        for bad in [
            ("CORTEX_MEMORY_EXTRACTION", "maybe"),
            ("CORTEX_MEMORY_IDLE_MINUTES", "0"),
            ("CORTEX_MEMORY_EXTRACT_EVERY", "1"),
        ] {
            let err = EnvSettings::parse(&env(&[bad])).err().unwrap();
            assert!(err.to_string().starts_with(bad.0), "{err}");
        }
    }
}

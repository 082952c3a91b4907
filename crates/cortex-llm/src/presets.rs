//! Provider presets (issue 15): the back-ends Cortex Plane knows by name, each a base URL, a wire style
//! (which fixes the auth style) and the catalogue entries its own API serves.
//!
//! A preset is a default, never a constraint: a credential named after a preset inherits its base URL and
//! style unless it sets its own, and operators price models per credential. Local servers (`ollama`,
//! `vllm`, `lmstudio`) need no key and have no catalogue prices: what they serve is what `/v1/models`
//! reports, and a model is free only when the operator prices it so (SPEC §5.8).

use serde::Serialize;

use crate::catalogue::{self, ModelInfo};
use crate::types::ApiStyle;

/// How a preset's requests authenticate (follows from the wire style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>` (OpenAI-compatible servers).
    Bearer,
    /// `x-api-key: <key>` plus `anthropic-version` (Anthropic).
    XApiKey,
}

impl AuthStyle {
    /// The auth style a wire style uses.
    pub fn of(api_style: ApiStyle) -> AuthStyle {
        match api_style {
            ApiStyle::OpenAi => AuthStyle::Bearer,
            ApiStyle::Anthropic => AuthStyle::XApiKey,
        }
    }
}

/// A named back-end with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Preset {
    /// The provider id agents use (`model_config.provider`).
    pub name: &'static str,
    /// Human label for pickers.
    pub label: &'static str,
    pub api_style: ApiStyle,
    /// Default base URL (OpenAI style including its version path, as the official SDKs).
    pub base_url: &'static str,
    /// False for local servers that accept requests without a key.
    pub key_required: bool,
}

impl Preset {
    /// How requests to this preset authenticate.
    pub fn auth(&self) -> AuthStyle {
        AuthStyle::of(self.api_style)
    }

    /// Catalogue entries (with list prices) of the models this preset's own API serves.
    pub fn models(&self) -> impl Iterator<Item = &'static ModelInfo> + '_ {
        catalogue::all().iter().filter(move |info| info.provider == self.name)
    }
}

const fn preset(
    name: &'static str,
    label: &'static str,
    api_style: ApiStyle,
    base_url: &'static str,
    key_required: bool,
) -> Preset {
    Preset { name, label, api_style, base_url, key_required }
}

/// Every preset, in the order pickers show them.
static PRESETS: &[Preset] = &[
    preset("openai", "OpenAI", ApiStyle::OpenAi, "https://api.openai.com/v1", true),
    preset("anthropic", "Anthropic", ApiStyle::Anthropic, "https://api.anthropic.com", true),
    preset(
        "google",
        "Google Gemini (OpenAI-compatible)",
        ApiStyle::OpenAi,
        "https://generativelanguage.googleapis.com/v1beta/openai",
        true,
    ),
    preset("openrouter", "OpenRouter", ApiStyle::OpenAi, "https://openrouter.ai/api/v1", true),
    preset("groq", "Groq", ApiStyle::OpenAi, "https://api.groq.com/openai/v1", true),
    preset("mistral", "Mistral AI", ApiStyle::OpenAi, "https://api.mistral.ai/v1", true),
    preset("deepseek", "DeepSeek", ApiStyle::OpenAi, "https://api.deepseek.com/v1", true),
    preset("ollama", "Ollama (local)", ApiStyle::OpenAi, "http://localhost:11434/v1", false),
    preset("vllm", "vLLM (local)", ApiStyle::OpenAi, "http://localhost:8000/v1", false),
    preset("lmstudio", "LM Studio (local)", ApiStyle::OpenAi, "http://localhost:1234/v1", false),
];

/// Every preset.
pub fn all() -> &'static [Preset] {
    PRESETS
}

/// The preset named `name` (case-insensitive).
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name.eq_ignore_ascii_case(name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_issue_preset_exists_with_a_sane_base() {
        for name in
            ["openai", "anthropic", "google", "openrouter", "groq", "mistral", "deepseek", "ollama", "vllm", "lmstudio"]
        {
            let preset = find(name).unwrap_or_else(|| panic!("preset {name}"));
            let url = url::Url::parse(preset.base_url).unwrap();
            assert!(matches!(url.scheme(), "http" | "https"), "{name}");
            assert_eq!(preset.key_required, url.scheme() == "https", "{name}: hosted ones need a key");
        }
        assert_eq!(find(" Google ").unwrap().auth(), AuthStyle::Bearer);
        assert_eq!(find("anthropic").unwrap().auth(), AuthStyle::XApiKey);
        assert!(find("nope").is_none());
    }

    #[test]
    fn hosted_vendors_have_priced_catalogue_entries() {
        for name in ["openai", "anthropic", "google", "groq", "mistral", "deepseek"] {
            let preset = find(name).unwrap();
            assert!(preset.models().count() > 0, "{name} has catalogue entries");
            assert!(preset.models().all(|info| info.api_style == preset.api_style), "{name}");
        }
        assert_eq!(find("ollama").unwrap().models().count(), 0, "local models are priced by the operator");
    }
}

//! The built-in model catalogue (SPEC §5.2) and cost accounting (SPEC §5.8).
//!
//! Lookup is by the longest known prefix that ends on an id boundary (`-`, `:`, `@` or the end), so dated
//! snapshots (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`, Vertex's `claude-sonnet-4@20250514`)
//! inherit their base entry, `gpt-4o-mini` never falls back to `gpt-4o`, and a new point release such as
//! `gpt-5.2` stays unpriced instead of silently inheriting `gpt-5`'s price.
//!
//! Prices are public list prices in USD per million tokens as of 2025-11 (standard tier, no batch or
//! long-context surcharges). They go stale: operators override them with [`PriceOverrides`], and a model
//! that is in neither place has no price rather than a made-up one.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::types::{ApiStyle, Usage};

/// Price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Uncached input tokens.
    pub input_per_mtok: f64,
    /// Generated tokens.
    pub output_per_mtok: f64,
    /// Price of input tokens served from the prompt cache (models without caching repeat the input price).
    pub cache_read_per_mtok: f64,
}

impl ModelPrice {
    /// A zero price, for models the operator declares free (a local Ollama model).
    pub const FREE: Self = Self { input_per_mtok: 0.0, output_per_mtok: 0.0, cache_read_per_mtok: 0.0 };

    /// True when every component is a finite, non-negative number (for validating operator input).
    pub fn is_valid(&self) -> bool {
        [self.input_per_mtok, self.output_per_mtok, self.cache_read_per_mtok]
            .iter()
            .all(|price| price.is_finite() && *price >= 0.0)
    }
}

/// What is known about a model without asking its provider.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The catalogue id (the prefix that matched).
    pub id: &'static str,
    /// The provider preset ([`crate::presets`]) whose own API serves it.
    pub provider: &'static str,
    /// Wire style of the vendor that serves it.
    pub api_style: ApiStyle,
    /// Input plus output tokens the model can attend to (context budget, SPEC §5.4).
    pub context_window: u32,
    /// Cap for `max_tokens` per call (SPEC §5.2).
    pub max_output_tokens: u32,
    /// List price (see the module doc for its date).
    pub price: ModelPrice,
    /// Accepts image input.
    pub vision: bool,
}

/// Looks a model up by the longest known prefix; `None` for models the catalogue does not know.
///
/// A router's `vendor/model` id (OpenRouter's `openai/gpt-4o`, `google/gemini-2.5-pro`) that matches no
/// entry as a whole is looked up by the part after the vendor: routers bill the vendor's list price.
pub fn lookup(model: &str) -> Option<&'static ModelInfo> {
    let model = model.trim().to_ascii_lowercase();
    longest_entry(&model).or_else(|| model.split_once('/').and_then(|(_, rest)| longest_entry(rest)))
}

fn longest_entry(model: &str) -> Option<&'static ModelInfo> {
    CATALOGUE.iter().filter(|info| is_boundary_prefix(info.id, model)).max_by_key(|info| info.id.len())
}

/// Every catalogue entry, for listing models in the API and dashboard.
pub fn all() -> &'static [ModelInfo] {
    CATALOGUE
}

/// Cost of one call: uncached input, cached input and output, each at its price per million tokens.
pub fn cost_usd(price: &ModelPrice, usage: &Usage) -> f64 {
    let cached = usage.cache_read_tokens.min(usage.tokens_in);
    let uncached = usage.tokens_in - cached;
    (uncached as f64 * price.input_per_mtok
        + cached as f64 * price.cache_read_per_mtok
        + usage.tokens_out as f64 * price.output_per_mtok)
        / 1_000_000.0
}

/// Operator-set prices by model id prefix; they win over the catalogue (SPEC §5.8).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceOverrides(HashMap<String, ModelPrice>);

impl PriceOverrides {
    /// No overrides: catalogue prices only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prices `model_prefix` (and its dated variants).
    pub fn insert(&mut self, model_prefix: impl Into<String>, price: ModelPrice) {
        self.0.insert(model_prefix.into().trim().to_ascii_lowercase(), price);
    }

    /// The price of `model`: whichever of the operator's prefixes and the catalogue's ids matches longest,
    /// the operator's on a tie. `None` means the model cannot be priced (the caller then uses the provider's
    /// default price, or fails closed under a cost budget).
    pub fn price_for(&self, model: &str) -> Option<ModelPrice> {
        let model = model.trim().to_ascii_lowercase();
        let operator = self
            .0
            .iter()
            .filter(|(prefix, _)| is_boundary_prefix(prefix, &model))
            .max_by_key(|(prefix, _)| prefix.len());
        let catalogue = lookup(&model);
        match (operator, catalogue) {
            (Some((prefix, price)), Some(info)) if prefix.len() >= info.id.len() => Some(*price),
            (_, Some(info)) => Some(info.price),
            (Some((_, price)), None) => Some(*price),
            (None, None) => None,
        }
    }
}

/// `prefix` matches `model` exactly or up to a separator, so `o3` matches `o3-2025-04-16` but not `o30`.
fn is_boundary_prefix(prefix: &str, model: &str) -> bool {
    model.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', ':', '@']))
}

const fn price(input_per_mtok: f64, output_per_mtok: f64, cache_read_per_mtok: f64) -> ModelPrice {
    ModelPrice { input_per_mtok, output_per_mtok, cache_read_per_mtok }
}

const fn openai(
    id: &'static str,
    context_window: u32,
    max_output_tokens: u32,
    price: ModelPrice,
    vision: bool,
) -> ModelInfo {
    vendor("openai", id, context_window, max_output_tokens, price, vision)
}

/// A model served over the OpenAI-compatible wire by the preset `provider`.
const fn vendor(
    provider: &'static str,
    id: &'static str,
    context_window: u32,
    max_output_tokens: u32,
    price: ModelPrice,
    vision: bool,
) -> ModelInfo {
    ModelInfo { id, provider, api_style: ApiStyle::OpenAi, context_window, max_output_tokens, price, vision }
}

const fn anthropic(id: &'static str, max_output_tokens: u32, price: ModelPrice, vision: bool) -> ModelInfo {
    ModelInfo {
        id,
        provider: "anthropic",
        api_style: ApiStyle::Anthropic,
        context_window: 200_000,
        max_output_tokens,
        price,
        vision,
    }
}

/// List prices as of 2025-11; operators override. Longer ids must be listed whenever a variant is priced
/// differently from its prefix (`o3-pro` vs `o3`), since a boundary prefix would otherwise match.
static CATALOGUE: &[ModelInfo] = &[
    // OpenAI GPT-4o family.
    openai("gpt-4o", 128_000, 16_384, price(2.50, 10.00, 1.25), true),
    openai("gpt-4o-mini", 128_000, 16_384, price(0.15, 0.60, 0.075), true),
    // OpenAI GPT-4.1 family.
    openai("gpt-4.1", 1_047_576, 32_768, price(2.00, 8.00, 0.50), true),
    openai("gpt-4.1-mini", 1_047_576, 32_768, price(0.40, 1.60, 0.10), true),
    openai("gpt-4.1-nano", 1_047_576, 32_768, price(0.10, 0.40, 0.025), true),
    // OpenAI o-series reasoning models.
    openai("o1", 200_000, 100_000, price(15.00, 60.00, 7.50), true),
    openai("o1-mini", 128_000, 65_536, price(1.10, 4.40, 0.55), false),
    openai("o1-pro", 200_000, 100_000, price(150.00, 600.00, 150.00), true),
    openai("o3", 200_000, 100_000, price(2.00, 8.00, 0.50), true),
    openai("o3-mini", 200_000, 100_000, price(1.10, 4.40, 0.55), false),
    openai("o3-pro", 200_000, 100_000, price(20.00, 80.00, 20.00), true),
    openai("o3-deep-research", 200_000, 100_000, price(10.00, 40.00, 2.50), true),
    openai("o4-mini", 200_000, 100_000, price(1.10, 4.40, 0.275), true),
    openai("o4-mini-deep-research", 200_000, 100_000, price(2.00, 8.00, 0.50), true),
    // OpenAI GPT-5 family.
    openai("gpt-5", 400_000, 128_000, price(1.25, 10.00, 0.125), true),
    openai("gpt-5-mini", 400_000, 128_000, price(0.25, 2.00, 0.025), true),
    openai("gpt-5-nano", 400_000, 128_000, price(0.05, 0.40, 0.005), true),
    openai("gpt-5-pro", 400_000, 272_000, price(15.00, 120.00, 15.00), true),
    openai("gpt-5.1", 400_000, 128_000, price(1.25, 10.00, 0.125), true),
    // Anthropic (200k context; cache reads at a tenth of input).
    anthropic("claude-3-5-haiku", 8_192, price(0.80, 4.00, 0.08), false),
    anthropic("claude-3-5-sonnet", 8_192, price(3.00, 15.00, 0.30), true),
    anthropic("claude-3-7-sonnet", 64_000, price(3.00, 15.00, 0.30), true),
    anthropic("claude-sonnet-4", 64_000, price(3.00, 15.00, 0.30), true),
    anthropic("claude-sonnet-4-5", 64_000, price(3.00, 15.00, 0.30), true),
    anthropic("claude-opus-4", 32_000, price(15.00, 75.00, 1.50), true),
    anthropic("claude-opus-4-1", 32_000, price(15.00, 75.00, 1.50), true),
    anthropic("claude-opus-4-5", 64_000, price(5.00, 25.00, 0.50), true),
    anthropic("claude-haiku-4-5", 64_000, price(1.00, 5.00, 0.10), true),
    // Google Gemini (through its OpenAI-compatible endpoint; prompts up to 200k tokens, cached input).
    vendor("google", "gemini-2.5-pro", 1_048_576, 65_536, price(1.25, 10.00, 0.125), true),
    vendor("google", "gemini-2.5-flash", 1_048_576, 65_536, price(0.30, 2.50, 0.03), true),
    vendor("google", "gemini-2.5-flash-lite", 1_048_576, 65_536, price(0.10, 0.40, 0.01), true),
    vendor("google", "gemini-2.0-flash", 1_048_576, 8_192, price(0.10, 0.40, 0.025), true),
    vendor("google", "gemini-2.0-flash-lite", 1_048_576, 8_192, price(0.075, 0.30, 0.075), true),
    // Mistral (no prompt cache: cached input at the input price).
    vendor("mistral", "mistral-large", 131_072, 32_768, price(2.00, 6.00, 2.00), false),
    vendor("mistral", "mistral-medium", 131_072, 32_768, price(0.40, 2.00, 0.40), true),
    vendor("mistral", "mistral-small", 131_072, 32_768, price(0.10, 0.30, 0.10), true),
    vendor("mistral", "codestral", 262_144, 32_768, price(0.30, 0.90, 0.30), false),
    // DeepSeek (cache hits at a tenth of a miss).
    vendor("deepseek", "deepseek-chat", 131_072, 8_192, price(0.28, 0.42, 0.028), false),
    vendor("deepseek", "deepseek-reasoner", 131_072, 65_536, price(0.28, 0.42, 0.028), false),
    // Groq-hosted open models.
    vendor("groq", "llama-3.3-70b-versatile", 131_072, 32_768, price(0.59, 0.79, 0.59), false),
    vendor("groq", "llama-3.1-8b-instant", 131_072, 131_072, price(0.05, 0.08, 0.05), false),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_boundary_prefix_wins() {
        assert_eq!(lookup("gpt-4o").unwrap().id, "gpt-4o");
        assert_eq!(lookup("gpt-4o-2024-08-06").unwrap().id, "gpt-4o");
        assert_eq!(lookup("gpt-4o-mini-2024-07-18").unwrap().id, "gpt-4o-mini");
        assert_eq!(lookup("GPT-4.1-mini").unwrap().id, "gpt-4.1-mini");
        assert_eq!(lookup("o3-pro-2025-06-10").unwrap().id, "o3-pro");
        assert_eq!(lookup("o3-2025-04-16").unwrap().id, "o3");
        assert_eq!(lookup("claude-sonnet-4-5-20250929").unwrap().id, "claude-sonnet-4-5");
        assert_eq!(lookup("claude-sonnet-4-20250514").unwrap().id, "claude-sonnet-4");
        assert_eq!(lookup("claude-opus-4-1-20250805").unwrap().id, "claude-opus-4-1");
        assert_eq!(lookup("claude-opus-4-5-20251101").unwrap().price.input_per_mtok, 5.00);
        assert_eq!(lookup("claude-3-5-haiku-latest").unwrap().id, "claude-3-5-haiku");
        assert_eq!(lookup("gpt-5-mini-2025-08-07").unwrap().id, "gpt-5-mini");
    }

    #[test]
    fn unknown_models_have_no_entry() {
        assert!(lookup("llama3.1:8b").is_none());
        assert!(lookup("gpt-4").is_none(), "gpt-4 must not match gpt-4o or gpt-4.1");
        assert!(lookup("o30").is_none());
        assert!(lookup("gpt-5.2").is_none(), "point releases are not guessed");
        assert_eq!(lookup("claude-sonnet-4@20250514").unwrap().id, "claude-sonnet-4");
        assert!(lookup("").is_none());
    }

    #[test]
    fn router_ids_inherit_the_vendor_price() {
        assert_eq!(lookup("openai/gpt-4o-mini").unwrap().id, "gpt-4o-mini");
        assert_eq!(lookup("google/gemini-2.5-flash").unwrap().provider, "google");
        assert_eq!(lookup("gemini-2.5-flash-lite-preview-06-17").unwrap().id, "gemini-2.5-flash-lite");
        assert!(lookup("meta-llama/llama-3-8b").is_none());
    }

    #[test]
    fn catalogue_ids_are_unique_lowercase_and_sane() {
        let mut seen = std::collections::HashSet::new();
        for info in all() {
            assert!(seen.insert(info.id), "duplicate {}", info.id);
            assert_eq!(info.id, info.id.to_ascii_lowercase());
            assert!(info.price.is_valid());
            assert!(info.max_output_tokens <= info.context_window);
            assert!(info.price.cache_read_per_mtok <= info.price.input_per_mtok);
        }
    }

    #[test]
    fn cost_prices_cached_input_separately() {
        let price = lookup("claude-sonnet-4-5").unwrap().price;
        let usage = Usage { tokens_in: 1_000_000, tokens_out: 100_000, cache_read_tokens: 400_000, estimated: false };
        // 600k × $3 + 400k × $0.30 + 100k × $15 = 1.80 + 0.12 + 1.50
        assert!((cost_usd(&price, &usage) - 3.42).abs() < 1e-9);
        assert_eq!(cost_usd(&ModelPrice::FREE, &usage), 0.0);
    }

    #[test]
    fn overrides_win_and_price_unknown_models() {
        let mut overrides = PriceOverrides::new();
        assert!(overrides.price_for("llama3.1").is_none());
        overrides.insert("llama3.1", ModelPrice::FREE);
        overrides.insert("gpt-4o", price(1.0, 2.0, 0.5));
        assert_eq!(overrides.price_for("llama3.1:8b"), Some(ModelPrice::FREE));
        assert_eq!(overrides.price_for("gpt-4o-2024-11-20").unwrap().input_per_mtok, 1.0);
        assert_eq!(
            overrides.price_for("gpt-4o-mini").unwrap().input_per_mtok,
            0.15,
            "catalogue, not the gpt-4o override"
        );
        assert!(!price(-1.0, 0.0, 0.0).is_valid());
    }
}

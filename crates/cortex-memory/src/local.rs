//! The in-process embedder (SPEC §9.4 `local`, cargo feature `local-embeddings`): a BERT sentence
//! model such as all-MiniLM-L6-v2 read from a local directory (`config.json`, `tokenizer.json`,
//! `model.safetensors`, optionally sentence-transformers' `sentence_bert_config.json`), run with candle on
//! the CPU. Nothing is ever downloaded. Sentences are embedded in batches (padded to the longest, padding
//! masked out), mean-pooled over their tokens and L2-normalised, on a blocking thread so the async
//! runtime keeps serving.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::bert::{BertModel, Config, DTYPE};
use crate::embed::{EmbedError, Embedder, LOCAL_BATCH, normalised};

struct Loaded {
    model: BertModel,
    tokenizer: Tokenizer,
    hidden: usize,
}

/// A local BERT sentence embedder; cheap to clone (the weights are shared).
#[derive(Clone)]
pub struct LocalEmbedder {
    model_id: String,
    loaded: Arc<Loaded>,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder").field("model", &self.model_id).finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct SentenceConfig {
    max_seq_length: usize,
}

fn load_error(dir: &Path, reason: impl std::fmt::Display) -> EmbedError {
    EmbedError::Unavailable(format!("local embedding model in {}: {reason}", dir.display()))
}

impl LocalEmbedder {
    /// Loads the model in `dir`; its id (stored beside every vector) is `local/<directory name>`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(file).is_file() {
                return Err(load_error(dir, format!("`{file}` is missing")));
            }
        }
        let config: Config = std::fs::read(dir.join("config.json"))
            .map_err(|err| load_error(dir, err))
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|err| load_error(dir, err)))?;
        // sentence-transformers' own limit when it ships one (256 for MiniLM), else the model's.
        let max_tokens = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SentenceConfig>(&bytes).ok())
            .map_or(config.max_position_embeddings, |sentence| sentence.max_seq_length)
            .min(config.max_position_embeddings);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|err| load_error(dir, err))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..TruncationParams::default() }))
            .map_err(|err| load_error(dir, err))?;
        let weights = std::fs::read(dir.join("model.safetensors")).map_err(|err| load_error(dir, err))?;
        let vb =
            VarBuilder::from_buffered_safetensors(weights, DTYPE, &Device::Cpu).map_err(|err| load_error(dir, err))?;
        let model = BertModel::load(vb, &config).map_err(|err| load_error(dir, err))?;
        let name = dir.file_name().map_or_else(|| "model".into(), |name| name.to_string_lossy().into_owned());
        Ok(Self {
            model_id: format!("local/{name}"),
            loaded: Arc::new(Loaded { model, tokenizer, hidden: config.hidden_size }),
        })
    }

    /// Length of every vector.
    pub fn dimension(&self) -> usize {
        self.loaded.hidden
    }

    /// Embeds on the calling thread, [`LOCAL_BATCH`] sentences per forward pass.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(LOCAL_BATCH) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let invalid = |err: &dyn std::fmt::Display| EmbedError::Invalid(format!("local embedding: {err}"));
        let encodings = self.loaded.tokenizer.encode_batch(texts.to_vec(), true).map_err(|err| invalid(&err))?;
        let (batch, seq) = (encodings.len(), encodings.first().map_or(0, |encoding| encoding.len()));
        if batch == 0 || seq == 0 {
            return Ok(Vec::new());
        }
        let flat = |part: fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, EmbedError> {
            let values: Vec<u32> = encodings.iter().flat_map(|encoding| part(encoding).iter().copied()).collect();
            Tensor::from_vec(values, (batch, seq), &Device::Cpu).map_err(|err| invalid(&err))
        };
        let ids = flat(tokenizers::Encoding::get_ids)?;
        let types = flat(tokenizers::Encoding::get_type_ids)?;
        let mask = flat(tokenizers::Encoding::get_attention_mask)?;
        let pooled = (|| -> candle_core::Result<Vec<Vec<f32>>> {
            let hidden = self.loaded.model.forward(&ids, &types, &mask)?;
            // Mean over the real tokens only: padding contributes neither to the sum nor to the count.
            let mask = mask.to_dtype(DTYPE)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            summed.broadcast_div(&mask.sum(1)?)?.to_vec2::<f32>()
        })()
        .map_err(|err| invalid(&err))?;
        pooled.into_iter().map(normalised).collect()
    }
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        &self.model_id
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let this = self.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || this.embed_blocking(&texts))
            .await
            .map_err(|err| EmbedError::Unavailable(format!("local embedding thread: {err}")))?
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const VOCAB: [&str; 16] = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "dog", "sat", "on", "mat", "a", "ran", "##s", "fast", "bird",
        "sings",
    ];
    const HIDDEN: usize = 8;
    const MAX_POSITIONS: usize = 16;

    /// A tiny BERT with random weights and a WordPiece tokenizer, written as the real files are.
    fn tiny_model() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let config = serde_json::json!({
            "vocab_size": VOCAB.len(), "hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 16, "hidden_act": "gelu", "max_position_embeddings": MAX_POSITIONS,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "model_type": "bert",
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let vocab: serde_json::Map<String, serde_json::Value> =
            VOCAB.iter().enumerate().map(|(id, token)| ((*token).to_owned(), id.into())).collect();
        let tokenizer = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "decoder": null,
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab},
        });
        std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
        let mut tensors = HashMap::new();
        let mut put = |name: String, shape: &[usize]| {
            let tensor = Tensor::randn(0f32, 0.5, shape, &Device::Cpu).unwrap();
            tensors.insert(name, tensor);
        };
        put("embeddings.word_embeddings.weight".into(), &[VOCAB.len(), HIDDEN]);
        put("embeddings.position_embeddings.weight".into(), &[MAX_POSITIONS, HIDDEN]);
        put("embeddings.token_type_embeddings.weight".into(), &[2, HIDDEN]);
        let mut norm = |prefix: String| {
            put(format!("{prefix}.LayerNorm.weight"), &[HIDDEN]);
            put(format!("{prefix}.LayerNorm.bias"), &[HIDDEN]);
        };
        norm("embeddings".into());
        for layer in 0..2 {
            let p = format!("encoder.layer.{layer}");
            norm(format!("{p}.attention.output"));
            norm(format!("{p}.output"));
        }
        let mut linear = |name: String, outputs: usize, inputs: usize| {
            tensors
                .insert(format!("{name}.weight"), Tensor::randn(0f32, 0.5, (outputs, inputs), &Device::Cpu).unwrap());
            tensors.insert(format!("{name}.bias"), Tensor::randn(0f32, 0.5, outputs, &Device::Cpu).unwrap());
        };
        for layer in 0..2 {
            let p = format!("encoder.layer.{layer}");
            for part in ["self.query", "self.key", "self.value", "output.dense"] {
                linear(format!("{p}.attention.{part}"), HIDDEN, HIDDEN);
            }
            linear(format!("{p}.intermediate.dense"), 16, HIDDEN);
            linear(format!("{p}.output.dense"), HIDDEN, 16);
        }
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
        root
    }

    fn texts(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|text| (*text).to_owned()).collect()
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        let gap = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(gap < 1e-4, "vectors differ by {gap}: {a:?} vs {b:?}");
    }

    #[test]
    fn vectors_have_the_model_width_and_unit_length() {
        let dir = tiny_model();
        let embedder = LocalEmbedder::load(dir.path()).unwrap();
        assert_eq!(embedder.dimension(), HIDDEN);
        let name = dir.path().file_name().unwrap().to_string_lossy();
        assert_eq!(embedder.model(), format!("local/{name}"));
        let vectors = embedder.embed_blocking(&texts(&["the cat sat on the mat", "a bird sings", "zebra"])).unwrap();
        assert_eq!(vectors.len(), 3);
        for vector in &vectors {
            assert_eq!(vector.len(), HIDDEN);
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
        assert!(vectors[0] != vectors[1], "different sentences, different vectors");
        assert!(embedder.embed_blocking(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_batch_embeds_each_sentence_as_alone() {
        let embedder = LocalEmbedder::load(tiny_model().path()).unwrap();
        // Lengths differ, so the short ones are padded in the batch; more than one batch in total.
        let words = ["the", "cat", "dog", "sat", "on", "mat", "ran", "fast", "bird", "sings"];
        let sentences: Vec<String> = (0..LOCAL_BATCH + 5)
            .map(|n| words.iter().cycle().skip(n).take(1 + n % 7).copied().collect::<Vec<_>>().join(" "))
            .collect();
        let batched = embedder.embed_blocking(&sentences).unwrap();
        assert_eq!(batched.len(), sentences.len());
        for (sentence, vector) in sentences.iter().zip(&batched) {
            assert_close(vector, &embedder.embed_blocking(std::slice::from_ref(sentence)).unwrap()[0]);
        }
    }

    #[test]
    fn long_texts_are_truncated_to_the_model_positions() {
        let embedder = LocalEmbedder::load(tiny_model().path()).unwrap();
        let long = "the cat ran fast ".repeat(4 * MAX_POSITIONS);
        let prefix = "the cat ran fast ".repeat(MAX_POSITIONS);
        let vectors = embedder.embed_blocking(&[long, prefix]).unwrap();
        assert_close(&vectors[0], &vectors[1]);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tiny_model();
        std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        let err = LocalEmbedder::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`tokenizer.json` is missing"), "{err}");
    }

    #[tokio::test]
    async fn the_trait_embeds_as_the_blocking_call() {
        let embedder = LocalEmbedder::load(tiny_model().path()).unwrap();
        let direct = embedder.embed_blocking(&texts(&["the dog ran"])).unwrap();
        let through_trait = Embedder::embed(&embedder, &texts(&["the dog ran"])).await.unwrap();
        assert_eq!(direct, through_trait);
    }
}

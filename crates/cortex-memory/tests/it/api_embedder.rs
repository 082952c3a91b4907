//! The OpenAI-compatible embeddings client against an in-process server that speaks the real protocol:
//! vectors travel as base64 (little-endian f32s) when the server knows `encoding_format`, and as numbers
//! from a server that refuses it.

use cortex_memory::Embedder;
use cortex_memory::embed::normalised;
use cortex_testkit::fake_embeddings::{FakeEmbeddings, embed};

use crate::service::embedder_of;

fn client(server: &FakeEmbeddings) -> std::sync::Arc<cortex_memory::ApiEmbedder> {
    embedder_of(server, "text-embedding-3-small")
}

fn texts() -> Vec<String> {
    vec!["apple pie with cinnamon".into(), "the train leaves at noon".into()]
}

fn expected() -> Vec<Vec<f32>> {
    texts().iter().map(|text| normalised(embed(text)).unwrap()).collect()
}

#[tokio::test]
async fn vectors_are_asked_for_and_read_as_base64() {
    let server = FakeEmbeddings::start().await;
    let embedder = client(&server);
    assert_eq!(embedder.embed(&texts()).await.unwrap(), expected());
    assert_eq!((server.requests(), server.base64_requests()), (1, 1), "one request, answered in base64");
}

#[tokio::test]
async fn a_server_that_refuses_base64_is_asked_for_numbers_from_then_on() {
    let server = FakeEmbeddings::start().await;
    server.refuse_base64(true);
    let embedder = client(&server);
    assert_eq!(embedder.embed(&texts()).await.unwrap(), expected(), "the same vectors as numbers");
    assert_eq!((server.requests(), server.base64_requests()), (2, 0), "refused, then asked for numbers");
    assert_eq!(embedder.embed(&texts()).await.unwrap(), expected());
    assert_eq!(server.requests(), 3, "the second call asks for numbers at once");
}

#[tokio::test]
async fn other_client_errors_are_not_retried() {
    let server = FakeEmbeddings::start().await;
    server.set_failing(true);
    let embedder = client(&server);
    assert!(embedder.embed(&texts()).await.is_err());
    assert_eq!(server.requests(), 1, "a 503 is an outage, not a refusal of the base64 form");
}

//! Spend through a credential: kept on several rows so concurrent jobs' calls do not wait for each other,
//! read back as their sum, and removed with the credential.

use cortex_store::credentials::{CredentialUpsert, CredentialUsage};
use cortex_testkit::{TestStore, both_engines};
use uuid::Uuid;

use crate::support::job_on_shard;

async fn credential(t: &TestStore, id: Uuid) {
    let mut tx = t.store.begin().await.unwrap();
    let new = CredentialUpsert {
        id,
        kind: "llm".into(),
        name: "openai".into(),
        api_style: None,
        base_url: None,
        secret_enc: None,
        secret_hint: None,
        source: "api".into(),
    };
    tx.upsert_credential(&new).await.unwrap();
    tx.commit().await.unwrap();
}

fn call(tokens_in: i64, cost_usd: f64) -> CredentialUsage {
    CredentialUsage { calls: 1, tokens_in, tokens_out: 2, cost_usd }
}

both_engines!(a_credentials_spend_is_the_sum_of_its_rows_and_goes_with_it, |t: TestStore| async move {
    let id = Uuid::now_v7();
    credential(&t, id).await;
    let mut tx = t.store.begin().await.unwrap();
    for (job, tokens_in, cost) in [(job_on_shard(1), 10, 0.5), (job_on_shard(2), 20, 0.25), (job_on_shard(1), 30, 0.0)]
    {
        tx.add_credential_usage("llm", "openai", job, call(tokens_in, cost)).await.unwrap();
    }
    tx.commit().await.unwrap();
    let usage = t.store.credential_by_id(id).await.unwrap().usage;
    assert_eq!(usage, CredentialUsage { calls: 3, tokens_in: 60, tokens_out: 6, cost_usd: 0.75 });

    // Deleted and created again under the same name: a new credential, with no spend.
    let mut tx = t.store.begin().await.unwrap();
    assert!(tx.delete_credential_by_id(id).await.unwrap());
    tx.commit().await.unwrap();
    let again = Uuid::now_v7();
    credential(&t, again).await;
    assert_eq!(t.store.credential_by_id(again).await.unwrap().usage, CredentialUsage::default());
});

/// PostgreSQL holds a row lock to commit: two jobs' calls through one credential add to different rows, so
/// one call's open transaction does not hold up the other's. (SQLite has one writer at a time anyway.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_two_jobs_through_one_credential_do_not_wait_for_each_other() {
    let Some(t) = TestStore::postgres_unless_skipped().await else { return };
    let id = Uuid::now_v7();
    credential(&t, id).await;
    let (first, second) = (job_on_shard(3), job_on_shard(4));
    // Both rows exist first, so neither call waits on the other's insert either.
    let mut tx = t.store.begin().await.unwrap();
    for job in [first, second] {
        tx.add_credential_usage("llm", "openai", job, call(1, 0.0)).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut open = t.store.begin().await.unwrap();
    open.add_credential_usage("llm", "openai", first, call(1, 0.0)).await.unwrap();
    // With one row per credential this would wait for `open` forever; the timeout only turns that into a
    // failure.
    let mut other = t.store.begin().await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        other.add_credential_usage("llm", "openai", second, call(1, 0.0)),
    )
    .await
    .expect("the second job's call waited for the first one's transaction")
    .unwrap();
    other.commit().await.unwrap();
    open.commit().await.unwrap();
    assert_eq!(t.store.credential_by_id(id).await.unwrap().usage.calls, 4);
}

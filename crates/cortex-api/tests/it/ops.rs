//! Operations routes stay cheap and quiet: open without credentials, they must cost little and say little.

use cortex_api::metrics::StateGauges;
use cortex_testkit::{TestStore, both_engines};
use serde_json::Value;

use crate::app::TestApp;

both_engines!(metrics_recount_the_database_at_most_once_a_second, |t: TestStore| async move {
    let gauges = StateGauges::default();
    assert!(gauges.refresh_if_due(&t.store).await, "the first scrape counts");
    for _ in 0..100 {
        assert!(!gauges.refresh_if_due(&t.store).await, "a scrape flood is served from the last count");
    }
    t.clock.advance(chrono::Duration::milliseconds(999));
    assert!(!gauges.refresh_if_due(&t.store).await);
    t.clock.advance(chrono::Duration::milliseconds(1));
    assert!(gauges.refresh_if_due(&t.store).await, "a second later the counts are fresh again");
});

both_engines!(readiness_never_echoes_database_errors, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    app.test.store.close().await;
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["checks"]["db"], "unavailable", "{text}");
    for leak in ["pool", "closed", "error", "sqlx", "connection"] {
        assert!(!text.to_lowercase().contains(leak), "`{leak}` in {text}");
    }
});

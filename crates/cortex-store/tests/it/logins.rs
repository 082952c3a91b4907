//! Dashboard login state: sessions found only by their hash and only until they expire, logout of one or
//! every session, failure counting per address and per account, and a first-run setup that happens once.

use chrono::Duration;
use cortex_core::clock::Clock as _;
use cortex_core::role::Role;
use cortex_store::StoreError;
use cortex_store::logins::{FailureCount, NewWebSession};
use cortex_testkit::{TestStore, both_engines};

fn session_for(user_id: uuid::Uuid, token_hash: &str, t: &TestStore) -> NewWebSession {
    NewWebSession {
        token_hash: token_hash.into(),
        user_id,
        csrf_token: format!("csrf-{token_hash}"),
        expires_at: t.clock.now() + Duration::days(7),
        ip: Some("127.0.0.1".into()),
        user_agent: Some("test".into()),
    }
}

both_engines!(sessions_live_until_expiry_or_logout, |t: TestStore| async move {
    let mut tx = t.store.begin().await.unwrap();
    let user = tx.insert_user("Ada", Some("ada@example.com"), Role::Operator).await.unwrap();
    tx.set_password_hash(user.id, "$argon2id$fake").await.unwrap();
    let one = tx.insert_web_session(&session_for(user.id, "hash-one", &t)).await.unwrap();
    tx.insert_web_session(&session_for(user.id, "hash-two", &t)).await.unwrap();
    tx.commit().await.unwrap();

    let (found, found_user) = t.store.find_web_session("hash-one").await.unwrap().expect("session by hash");
    assert_eq!((found.id, found_user.id, found_user.role), (one.id, user.id, Role::Operator));
    assert_eq!(found.csrf_token, "csrf-hash-one");
    assert!(t.store.find_web_session("hash-unknown").await.unwrap().is_none());
    let (login_user, hash) = t.store.find_login_user("ada@example.com").await.unwrap().expect("user by email");
    assert_eq!((login_user.id, hash.as_deref()), (user.id, Some("$argon2id$fake")));
    assert_eq!(t.store.count_password_users().await.unwrap(), 1);

    // Expiry: a session past its expiry is not found; extending moves it.
    t.clock.advance(Duration::days(6));
    let mut tx = t.store.begin().await.unwrap();
    tx.extend_web_session(one.id, t.clock.now() + Duration::days(7)).await.unwrap();
    tx.commit().await.unwrap();
    t.clock.advance(Duration::days(2));
    assert!(t.store.find_web_session("hash-one").await.unwrap().is_some(), "extended session lives on");
    assert!(t.store.find_web_session("hash-two").await.unwrap().is_none(), "unextended session expired");

    // Logout of one, then of all.
    let mut tx = t.store.begin().await.unwrap();
    let three = tx.insert_web_session(&session_for(user.id, "hash-three", &t)).await.unwrap();
    assert!(tx.delete_web_session(three.id).await.unwrap());
    assert!(!tx.delete_web_session(three.id).await.unwrap());
    tx.commit().await.unwrap();
    assert!(t.store.find_web_session("hash-three").await.unwrap().is_none());
    let mut tx = t.store.begin().await.unwrap();
    assert_eq!(tx.delete_user_web_sessions(user.id).await.unwrap(), 2, "one live and one expired session");
    tx.commit().await.unwrap();
    assert!(t.store.find_web_session("hash-one").await.unwrap().is_none());
});

both_engines!(failures_are_counted_per_address_and_account_inside_the_window, |t: TestStore| async move {
    let start = t.clock.now();
    for (ip, account) in [("10.0.0.1", "a@x"), ("10.0.0.1", "b@x"), ("10.0.0.2", "a@x")] {
        let mut tx = t.store.begin().await.unwrap();
        tx.record_login_failure(ip, account, start - Duration::minutes(15)).await.unwrap();
        tx.commit().await.unwrap();
        t.clock.advance(Duration::minutes(1));
    }
    let since = t.clock.now() - Duration::minutes(15);
    let (by_ip, by_account) = t.store.login_failures("10.0.0.1", "a@x", since).await.unwrap();
    assert_eq!(by_ip, FailureCount { count: 2, oldest: Some(start) });
    assert_eq!(by_account, FailureCount { count: 2, oldest: Some(start) });
    let (none, _) = t.store.login_failures("10.9.9.9", "a@x", since).await.unwrap();
    assert_eq!(none, FailureCount::default());

    // Outside the window they no longer count, and the next failure prunes them.
    t.clock.advance(Duration::minutes(20));
    let since = t.clock.now() - Duration::minutes(15);
    let mut tx = t.store.begin().await.unwrap();
    tx.record_login_failure("10.0.0.3", "c@x", since).await.unwrap();
    tx.commit().await.unwrap();
    let (by_ip, by_account) = t.store.login_failures("10.0.0.1", "a@x", since).await.unwrap();
    assert_eq!((by_ip.count, by_account.count), (0, 0));
    assert_eq!(t.execute_raw("DELETE FROM login_attempt".into()).await.unwrap(), 1, "old rows were pruned");
});

both_engines!(the_first_run_setup_happens_once, |t: TestStore| async move {
    assert!(!t.store.dashboard_setup_done().await.unwrap());
    let generated = cortex_core::api_key::generate();
    let mut tx = t.store.begin().await.unwrap();
    let admin = tx.insert_user("admin", None, Role::Admin).await.unwrap();
    let key = tx
        .insert_api_key(&cortex_store::users::NewApiKey::system(
            "bootstrap".into(),
            generated.prefix,
            generated.hash,
            Role::Admin,
            Some(admin.id),
            cortex_store::users::KeySource::Bootstrap,
        ))
        .await
        .unwrap();
    tx.complete_dashboard_setup(admin.id, key.id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(t.store.dashboard_setup_done().await.unwrap());

    let mut tx = t.store.begin().await.unwrap();
    let second = tx.complete_dashboard_setup(admin.id, key.id).await;
    assert!(matches!(second, Err(StoreError::StaleState { .. })), "{second:?}");
});

//! Secrets at rest (SPEC §17.3): values bound to their cell, key loading, and the startup key check.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use cortex_store::secrets::{Cipher, MasterKey, SecretRef, SecretsError, load_master_key};

const SALT: [u8; 16] = [3; 16];
use cortex_testkit::{TestStore, both_engines};
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn key(seed: u8) -> MasterKey {
    MasterKey::from_bytes([seed; 32])
}

fn cipher(seed: u8) -> Cipher {
    Cipher::new(key(seed), vec![])
}

fn cell(row_id: Uuid) -> SecretRef {
    SecretRef::new("provider_credential", "secret_enc", row_id)
}

/// Bytes whose base64 uses `+` and `/`, so the URL-safe alphabet is really exercised.
fn awkward_bytes() -> [u8; 32] {
    std::array::from_fn(|i| 0xfb ^ (i as u8))
}

#[test]
fn values_round_trip_in_the_documented_format() {
    let cipher = cipher(1);
    let row = cell(Uuid::now_v7());
    let stored = cipher.encrypt(&row, b"sk-live-123");
    let parts: Vec<&str> = stored.split(':').collect();
    assert_eq!(parts.len(), 4, "{stored}");
    assert_eq!(parts[0], "v1");
    assert_eq!(parts[1], cipher.key_id());
    assert_eq!(STANDARD.decode(parts[2]).unwrap().len(), 12);
    assert_eq!(STANDARD.decode(parts[3]).unwrap().len(), b"sk-live-123".len() + 16);
    assert!(!stored.contains("sk-live"));
    assert_eq!(cipher.decrypt(&row, &stored).unwrap(), b"sk-live-123");

    let again = cipher.encrypt(&row, b"sk-live-123");
    assert_ne!(again, stored, "every value gets a fresh nonce");
    assert_eq!(cipher.decrypt(&row, &again).unwrap(), b"sk-live-123");
    assert_eq!(cipher.decrypt(&row, &cipher.encrypt(&row, b"")).unwrap(), b"");
}

#[test]
fn key_ids_are_public_fingerprints() {
    let expected = hex::encode(&Sha256::new().chain_update(b"cortex-key-id").chain_update([1u8; 32]).finalize()[..4]);
    assert_eq!(key(1).id(), expected);
    assert_eq!(key(1).id().len(), 8);
    assert_ne!(key(1).id(), key(2).id());
    assert_eq!(cipher(1).key_id(), key(1).id());
}

#[test]
fn ciphertexts_are_bound_to_their_cell() {
    let cipher = cipher(1);
    let row_id = Uuid::now_v7();
    let stored = cipher.encrypt(&cell(row_id), b"token");
    let moved = [
        cell(Uuid::now_v7()),
        SecretRef::new("provider_credential", "other_enc", row_id),
        SecretRef::new("channel", "secret_enc", row_id),
    ];
    for target in moved {
        assert!(matches!(cipher.decrypt(&target, &stored), Err(SecretsError::Decrypt)), "{target:?}");
    }
}

#[test]
fn tampering_is_detected() {
    let cipher = cipher(1);
    let row = cell(Uuid::now_v7());
    let stored = cipher.encrypt(&row, b"token");
    let parts: Vec<&str> = stored.split(':').collect();
    let flip = |text: &str, index: usize| {
        let mut bytes = STANDARD.decode(text).unwrap();
        bytes[index] ^= 0x01;
        STANDARD.encode(bytes)
    };
    let tampered = [
        format!("{}:{}:{}:{}", parts[0], parts[1], parts[2], flip(parts[3], 0)),
        format!("{}:{}:{}:{}", parts[0], parts[1], parts[2], flip(parts[3], 20)),
        format!("{}:{}:{}:{}", parts[0], parts[1], flip(parts[2], 3), parts[3]),
    ];
    for value in &tampered {
        assert!(matches!(cipher.decrypt(&row, value), Err(SecretsError::Decrypt)), "{value}");
    }

    let malformed = [
        String::new(),
        "plain text".to_owned(),
        format!("v2:{}:{}:{}", parts[1], parts[2], parts[3]),
        format!("v1:XYZ:{}:{}", parts[2], parts[3]),
        format!("v1:{}:AAAA:{}", parts[1], parts[3]),
        format!("v1:{}:{}:!!", parts[1], parts[2]),
        format!("v1:{}:{}:AAAA", parts[1], parts[2]),
        format!("{stored}:extra"),
    ];
    for value in &malformed {
        assert!(matches!(cipher.decrypt(&row, value), Err(SecretsError::Malformed(_))), "{value}");
    }
}

#[test]
fn retired_keys_still_decrypt_and_unknown_key_ids_are_named() {
    let row = cell(Uuid::now_v7());
    let old = cipher(1).encrypt(&row, b"before rotation");

    let rotated = Cipher::new(key(2), vec![key(1)]);
    assert_eq!(rotated.decrypt(&row, &old).unwrap(), b"before rotation");
    let new = rotated.encrypt(&row, b"after rotation");
    assert!(new.starts_with(&format!("v1:{}:", key(2).id())), "{new}");
    assert_eq!(cipher(2).decrypt(&row, &new).unwrap(), b"after rotation");

    let err = cipher(2).decrypt(&row, &old).unwrap_err();
    assert!(matches!(&err, SecretsError::UnknownKeyId(id) if id == key(1).id()), "{err:?}");
    assert!(err.to_string().contains(key(1).id()), "{err}");
}

#[test]
fn string_maps_round_trip_and_stay_bound() {
    let cipher = cipher(1);
    let row = SecretRef::new("mcp_server", "env_enc", Uuid::now_v7());
    let map = BTreeMap::from([("API_TOKEN".to_owned(), "t0k3n".to_owned()), ("REGION".to_owned(), "eu".to_owned())]);
    let stored = cipher.encrypt_json(&row, &map);
    assert!(!stored.contains("t0k3n"));
    assert_eq!(cipher.decrypt_json(&row, &stored).unwrap(), map);
    let header_cell = SecretRef::new("mcp_server", "headers_enc", row.row_id);
    assert!(matches!(cipher.decrypt_json(&header_cell, &stored), Err(SecretsError::Decrypt)));
    let not_a_map = cipher.encrypt(&row, b"[1, 2]");
    assert!(matches!(cipher.decrypt_json(&row, &not_a_map), Err(SecretsError::Malformed(_))));
}

#[test]
fn debug_output_shows_key_ids_only() {
    let bytes = awkward_bytes();
    let master = MasterKey::from_bytes(bytes);
    let id = master.id().to_owned();
    let shown = format!("{master:?} {:?}", Cipher::new(MasterKey::from_bytes(bytes), vec![key(9)]));
    assert!(shown.contains(&id) && shown.contains(key(9).id()), "{shown}");
    for secret in [hex::encode(bytes), STANDARD.encode(bytes), format!("{:?}", &bytes[..4])] {
        assert!(!shown.contains(&secret), "{shown}");
    }
}

#[test]
fn key_file_is_generated_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first = load_master_key(None, &data_dir, &SALT).unwrap();
    let path = data_dir.join("master.key");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let bytes: [u8; 32] = STANDARD.decode(text.trim()).unwrap().try_into().unwrap();
    assert_eq!(MasterKey::from_bytes(bytes).id(), first.id());
    let leftovers: Vec<_> = std::fs::read_dir(&data_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers, ["master.key"], "no temporary file is left behind");

    let second = load_master_key(None, &data_dir, &SALT).unwrap();
    assert_eq!(second.id(), first.id());
    let other = load_master_key(None, &dir.path().join("elsewhere"), &SALT).unwrap();
    assert_ne!(other.id(), first.id());
}

#[test]
fn loose_or_broken_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    load_master_key(None, dir.path(), &SALT).unwrap();
    let path = dir.path().join("master.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_master_key(None, dir.path(), &SALT).unwrap_err();
    assert!(matches!(&err, SecretsError::KeyFile { path: p, .. } if *p == path), "{err:?}");
    assert!(err.to_string().contains(&format!("chmod 600 {}", path.display())), "{err}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "not a key\n").unwrap();
    let err = load_master_key(None, dir.path(), &SALT).unwrap_err();
    assert!(matches!(err, SecretsError::KeyFile { .. }), "{err:?}");
    assert!(!err.to_string().contains("not a key"), "{err}");
}

#[test]
fn env_key_accepts_base64_and_hex_forms() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = awkward_bytes();
    let expected = MasterKey::from_bytes(bytes).id().to_owned();
    let standard = STANDARD.encode(bytes);
    assert!(standard.contains('+') || standard.contains('/'), "{standard}");
    let forms = [
        standard,
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        hex::encode(bytes),
        hex::encode_upper(bytes),
        format!("  {}\n", hex::encode(bytes)),
    ];
    for form in &forms {
        assert_eq!(load_master_key(Some(form), dir.path(), &SALT).unwrap().id(), expected, "{form:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a raw key writes no file");
}

#[test]
fn env_passphrase_is_stretched_with_the_salt() {
    let dir = tempfile::tempdir().unwrap();
    let passphrase = "correct horse battery staple";
    let first = load_master_key(Some(passphrase), dir.path(), &SALT).unwrap();
    assert_eq!(load_master_key(Some(passphrase), dir.path(), &SALT).unwrap().id(), first.id(), "same salt, same key");
    assert_ne!(load_master_key(Some(passphrase), dir.path(), &[9; 16]).unwrap().id(), first.id(), "new salt, new key");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a passphrase writes no file");

    for bad in ["", "   ", "short pass"] {
        let err = load_master_key(Some(bad), dir.path(), &SALT).unwrap_err();
        assert!(matches!(&err, SecretsError::Passphrase(_)), "{bad:?}: {err:?}");
        assert!(err.to_string().starts_with("CORTEX_MASTER_KEY"), "{err}");
    }
}

both_engines!(the_passphrase_salt_is_stored_once_and_shared, |t: TestStore| async move {
    let first = t.store.passphrase_salt().await.unwrap();
    assert_eq!(t.store.passphrase_salt().await.unwrap(), first);
    if t.store.is_postgres() {
        assert_eq!(t.reopen().await.passphrase_salt().await.unwrap(), first, "another process gets the same salt");
    }
    assert_ne!(first, [0; 16]);
});

both_engines!(master_key_is_verified_against_the_database, |t: TestStore| async move {
    let recorded =
        || async { t.query_text("SELECT key_id FROM secret_key_check ORDER BY key_id".into()).await.unwrap() };

    t.store.verify_master_key(&cipher(1)).await.unwrap();
    assert_eq!(recorded().await, [key(1).id()], "the first start records the key");
    t.store.verify_master_key(&cipher(1)).await.unwrap();
    assert_eq!(recorded().await, [key(1).id()]);

    let err = t.store.verify_master_key(&cipher(2)).await.unwrap_err();
    assert!(matches!(&err, SecretsError::WrongKey { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("CORTEX_MASTER_KEY does not match the key that encrypted this database's secrets"));
    assert!(message.contains(key(1).id()) && message.contains(key(2).id()), "{message}");
    assert_eq!(recorded().await, [key(1).id()], "a wrong key records nothing");

    // Mid-rotation: the new key is recorded while the old one is still configured…
    t.store.verify_master_key(&Cipher::new(key(2), vec![key(1)])).await.unwrap();
    let mut both = vec![key(1).id().to_owned(), key(2).id().to_owned()];
    both.sort();
    assert_eq!(recorded().await, both);
    // …which stays required until its key id is retired.
    let err = t.store.verify_master_key(&cipher(2)).await.unwrap_err();
    assert!(matches!(&err, SecretsError::WrongKey { expected, .. } if expected == key(1).id()), "{err:?}");
    t.execute_raw(format!("UPDATE secret_key_check SET retired_at = 1 WHERE key_id = '{}'", key(1).id()))
        .await
        .unwrap();
    t.store.verify_master_key(&cipher(2)).await.unwrap();
    assert!(matches!(t.store.verify_master_key(&cipher(1)).await, Err(SecretsError::WrongKey { .. })));
});

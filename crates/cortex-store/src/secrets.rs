//! Encryption of secrets at rest (SPEC §17.3).
//!
//! Secret columns (`*_enc`: provider keys, channel tokens, MCP env and headers, webhook headers) hold
//! AES-256-GCM ciphertexts as text: `v1:<key id>:<base64 nonce>:<base64 ciphertext+tag>`. Why each part:
//! - The root [`MasterKey`] comes from `CORTEX_MASTER_KEY` (32 raw bytes, or a passphrase stretched with
//!   Argon2id and a salt stored in the database, shared by every process) or from a generated `<data_dir>/master.key`. It never
//!   encrypts anything itself: the data key is derived from it with HKDF-SHA256 for this one purpose, so
//!   other uses of the root key cannot weaken this one.
//! - The associated data is `<table>.<column>.<row id>` ([`SecretRef`]): a ciphertext copied into another
//!   row or column fails to decrypt instead of leaking there.
//! - The key id inside every value lets a [`Cipher`] keep older keys for decryption during rotation and
//!   name the key a value needs.
//! - [`Store::verify_master_key`] stores one known ciphertext per key id, so starting with the wrong key
//!   stops with a clear error rather than leaving secrets silently unreadable.
//!
//! Key material is wiped from memory on drop and never appears in errors or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::engine::{read, write};
use crate::rows::ms;
use crate::{Store, StoreError, Tx};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of the passphrase salt.
pub const SALT_LEN: usize = 16;
const MIN_PASSPHRASE_CHARS: usize = 12;
/// Argon2id cost (OWASP's baseline: 19 MiB, 2 passes, 1 lane). Pinned here, not taken from the crate's
/// defaults, because changing it changes the key a passphrase yields.
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_PASSES: u32 = 2;
const ARGON2_LANES: u32 = 1;
const FORMAT_VERSION: &str = "v1";
const SECRETS_INFO: &[u8] = b"cortex/secrets/v1";
const KEY_ID_DOMAIN: &[u8] = b"cortex-key-id";
const KEY_FILE: &str = "master.key";

/// The cell the verification values are bound to, and what they decrypt to.
const CHECK_REF: SecretRef = SecretRef {
    table: "secret_key_check",
    column: "check_enc",
    // "cortex-key-check" in ASCII.
    row_id: Uuid::from_u128(0x636f_7274_6578_2d6b_6579_2d63_6865_636b),
};
const CHECK_PLAINTEXT: &[u8] = b"cortex-plane master key check v1";

/// Why a secret or a key could not be used. Messages name files and key ids, never key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The configured keys cannot open this database's verification values: `serve` was started with the
    /// wrong key, or without a key that still encrypts secrets.
    #[error(
        "CORTEX_MASTER_KEY does not match the key that encrypted this database's secrets (key id {expected}; \
         configured key id {configured}); restore the original key (CORTEX_MASTER_KEY or <data_dir>/master.key), \
         or keep it configured beside the new one until rotation has re-encrypted every secret"
    )]
    WrongKey { expected: String, configured: String },
    /// A value names a key id that no configured key has (e.g. a retired key was dropped too early).
    #[error("secret was encrypted with key id {0}, which is not among the configured master keys")]
    UnknownKeyId(String),
    /// A stored value is not in the `v1:<key id>:<nonce>:<ciphertext>` form.
    #[error("malformed secret value: {0}")]
    Malformed(&'static str),
    /// Authentication failed: the value was altered or belongs to another row or column.
    #[error("secret cannot be decrypted: it was altered or belongs to another row or column")]
    Decrypt,
    /// The key file cannot be read, written or trusted.
    #[error("{}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    /// `CORTEX_MASTER_KEY` holds a passphrase that cannot be used.
    #[error("CORTEX_MASTER_KEY: {0}")]
    Passphrase(String),
    /// The database failed while checking or recording the key.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The root key every secret encryption derives from: 32 bytes, wiped from memory on drop.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl MasterKey {
    /// Wraps raw key bytes (a key handed over for rotation, tests); the caller should wipe its own copy.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey::from_secret(Zeroizing::new(bytes))
    }

    fn from_secret(bytes: Zeroizing<[u8; KEY_LEN]>) -> MasterKey {
        let digest = Sha256::new().chain_update(KEY_ID_DOMAIN).chain_update(*bytes).finalize();
        MasterKey { id: hex::encode(&digest[..4]), bytes }
    }

    /// Public fingerprint naming the key in stored values and messages (first 8 hex digits of
    /// SHA-256("cortex-key-id" ‖ key)); safe to log.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Finds the root key as `serve` starts (blocking: file IO and, for a passphrase, ~0.1 s of Argon2id).
///
/// `env_value` is `CORTEX_MASTER_KEY` (surrounding whitespace ignored): 32 bytes as base64 (standard or
/// URL-safe, padded or not) or as 64 hex digits are the key itself; anything else is a passphrase of at
/// least 12 characters, stretched with Argon2id and `passphrase_salt` (from [`Store::passphrase_salt`], so
/// every process sharing the database derives the same key).
/// Without it the key is `<data_dir>/master.key`, generated (mode 0600) on first start; a key file that
/// group or others may read is refused.
pub fn load_master_key(
    env_value: Option<&str>,
    data_dir: &Path,
    passphrase_salt: &[u8; SALT_LEN],
) -> Result<MasterKey, SecretsError> {
    match env_value.map(str::trim) {
        Some(value) => match decode_raw_key(value) {
            Some(bytes) => Ok(MasterKey::from_secret(bytes)),
            None => derive_from_passphrase(value, passphrase_salt),
        },
        None => {
            let path = data_dir.join(KEY_FILE);
            Ok(MasterKey::from_secret(read_or_create(&path, true)?))
        }
    }
}

/// 64 hex digits, or base64 of exactly 32 bytes in any common alphabet and padding.
fn decode_raw_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if text.len() == 2 * KEY_LEN && hex::decode_to_slice(text, &mut *key).is_ok() {
        return Some(key);
    }
    decode_base64_exact(text)
}

/// Decodes base64 (standard or URL-safe, padded or not) that holds exactly `N` bytes.
fn decode_base64_exact<const N: usize>(text: &str) -> Option<Zeroizing<[u8; N]>> {
    let unpadded = text.trim_end_matches('=');
    // Room for a slightly longer input, so a wrong length is reported as such rather than overflowing.
    let mut buffer = Zeroizing::new(vec![0u8; N + 3]);
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        if matches!(engine.decode_slice(unpadded, &mut buffer), Ok(len) if len == N) {
            let mut out = Zeroizing::new([0u8; N]);
            out.copy_from_slice(&buffer[..N]);
            return Some(out);
        }
    }
    None
}

fn derive_from_passphrase(passphrase: &str, salt: &[u8; SALT_LEN]) -> Result<MasterKey, SecretsError> {
    if passphrase.is_empty() {
        return Err(SecretsError::Passphrase(
            "is set but empty; unset it to use <data_dir>/master.key, or give 32 random bytes as base64 or 64 hex \
             digits, or a passphrase of at least 12 characters"
                .into(),
        ));
    }
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(SecretsError::Passphrase(format!(
            "a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters (or give 32 random bytes as base64 or \
             64 hex digits)"
        )));
    }
    let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, Some(KEY_LEN))
        .map_err(|err| SecretsError::Passphrase(format!("key derivation parameters: {err}")))?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut *key)
        .map_err(|err| SecretsError::Passphrase(format!("key derivation failed: {err}")))?;
    Ok(MasterKey::from_secret(key))
}

fn key_file_error(path: &Path, reason: impl Into<String>) -> SecretsError {
    SecretsError::KeyFile { path: path.to_owned(), reason: reason.into() }
}

/// Reads the base64 `N`-byte value at `path`, or creates it from fresh random bytes when missing. A
/// `private` file (the key) must not be accessible to group or others.
fn read_or_create<const N: usize>(path: &Path, private: bool) -> Result<Zeroizing<[u8; N]>, SecretsError> {
    if let Some(value) = read_value(path, private)? {
        return Ok(value);
    }
    let mut value = Zeroizing::new([0u8; N]);
    rand::rng().fill_bytes(&mut *value);
    let text = Zeroizing::new(format!("{}\n", STANDARD.encode(*value)));
    if create_exclusive(path, text.as_bytes())? {
        return Ok(value);
    }
    // Another process created it first: use theirs, so both agree.
    read_value(path, private)?.ok_or_else(|| key_file_error(path, "disappeared right after being created"))
}

fn read_value<const N: usize>(path: &Path, private: bool) -> Result<Option<Zeroizing<[u8; N]>>, SecretsError> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(key_file_error(path, format!("cannot inspect: {err}"))),
    };
    if private {
        check_private(path, &metadata)?;
    }
    let text =
        Zeroizing::new(fs::read_to_string(path).map_err(|err| key_file_error(path, format!("cannot read: {err}")))?);
    decode_base64_exact(text.trim())
        .map(Some)
        .ok_or_else(|| key_file_error(path, format!("does not hold base64 of {N} bytes; restore the original file")))
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &fs::Metadata) -> Result<(), SecretsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_file_error(
            path,
            format!("group or others may access it (mode {mode:04o}); restrict it with `chmod 600 {}`", path.display()),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &fs::Metadata) -> Result<(), SecretsError> {
    Ok(())
}

/// Writes `contents` to a private temporary file beside `path` and links it into place without replacing
/// an existing file, so readers never see a partial file and two starters cannot install different keys.
/// Returns false when `path` already existed.
fn create_exclusive(path: &Path, contents: &[u8]) -> Result<bool, SecretsError> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_private_dir(dir)
        .map_err(|err| key_file_error(path, format!("cannot create directory {}: {err}", dir.display())))?;
    let name = path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", hex::encode(rand::random::<[u8; 8]>())));
    let outcome = write_private(&temp, contents).and_then(|()| match fs::hard_link(&temp, path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // A filesystem without hard links: rename is still atomic, only not exclusive.
        Err(_) => fs::rename(&temp, path).map(|()| true),
    });
    let _ = fs::remove_file(&temp);
    if let Ok(true) = outcome
        && let Ok(dir) = fs::File::open(dir)
    {
        // Make the new directory entry durable; losing the key would lose every secret.
        let _ = dir.sync_all();
    }
    outcome.map_err(|err| key_file_error(path, format!("cannot write: {err}")))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Names the cell a secret lives in. Its text `<table>.<column>.<row id>` is the associated data of the
/// encryption, so a ciphertext only decrypts in the cell it was written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretRef {
    pub table: &'static str,
    pub column: &'static str,
    pub row_id: Uuid,
}

impl SecretRef {
    /// Shorthand for the struct literal.
    pub const fn new(table: &'static str, column: &'static str, row_id: Uuid) -> SecretRef {
        SecretRef { table, column, row_id }
    }

    fn associated_data(&self) -> Vec<u8> {
        format!("{}.{}.{}", self.table, self.column, self.row_id).into_bytes()
    }
}

/// Encrypts and decrypts secret values: the current key encrypts, every configured key decrypts.
#[derive(Clone)]
pub struct Cipher {
    current: (String, Aes256Gcm),
    others: Vec<(String, Aes256Gcm)>,
}

impl Cipher {
    /// `current` encrypts new values; `others` (keys being rotated away) are only used to decrypt.
    pub fn new(current: MasterKey, others: Vec<MasterKey>) -> Cipher {
        let derive = |key: &MasterKey| (key.id.clone(), data_key(key));
        Cipher { current: derive(&current), others: others.iter().map(derive).collect() }
    }

    /// Id of the key new values are encrypted with.
    pub fn key_id(&self) -> &str {
        &self.current.0
    }

    /// Encrypts `plaintext` for the cell `aad` with a fresh random nonce.
    ///
    /// # Panics
    /// Only beyond AES-GCM's limit of 64 GiB of plaintext, which no secret approaches.
    pub fn encrypt(&self, aad: &SecretRef, plaintext: &[u8]) -> String {
        let (key_id, cipher) = &self.current;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = cipher
            .encrypt(&Nonce::<Aes256Gcm>::from(nonce), Payload { msg: plaintext, aad: &aad.associated_data() })
            .expect("AES-GCM accepts any plaintext under 64 GiB");
        format!("{FORMAT_VERSION}:{key_id}:{}:{}", STANDARD.encode(nonce), STANDARD.encode(sealed))
    }

    /// Decrypts a value written by [`Cipher::encrypt`] for the same cell, with whichever configured key
    /// its key id names.
    pub fn decrypt(&self, aad: &SecretRef, stored: &str) -> Result<Vec<u8>, SecretsError> {
        let mut parts = stored.split(':');
        let (Some(version), Some(key_id), Some(nonce), Some(sealed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretsError::Malformed("expected v1:<key id>:<nonce>:<ciphertext>"));
        };
        if version != FORMAT_VERSION {
            return Err(SecretsError::Malformed("unsupported format version"));
        }
        if key_id.len() != 8 || !key_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(SecretsError::Malformed("key id is not 8 hex digits"));
        }
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(nonce)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(SecretsError::Malformed("nonce is not 12 bytes of base64"))?;
        let sealed = STANDARD.decode(sealed).map_err(|_| SecretsError::Malformed("ciphertext is not base64"))?;
        if sealed.len() < TAG_LEN {
            return Err(SecretsError::Malformed("ciphertext is shorter than its tag"));
        }
        let mut candidates =
            std::iter::once(&self.current).chain(&self.others).filter(|(id, _)| id == key_id).peekable();
        if candidates.peek().is_none() {
            return Err(SecretsError::UnknownKeyId(key_id.to_owned()));
        }
        let aad = aad.associated_data();
        let nonce = Nonce::<Aes256Gcm>::from(nonce);
        // Several keys can share an id only by a 1-in-2³² accident; trying each keeps that harmless.
        candidates
            .find_map(|(_, cipher)| cipher.decrypt(&nonce, Payload { msg: &sealed, aad: &aad }).ok())
            .ok_or(SecretsError::Decrypt)
    }

    /// Encrypts a string map (MCP env and headers, webhook headers) as one JSON object.
    pub fn encrypt_json(&self, aad: &SecretRef, map: &BTreeMap<String, String>) -> String {
        let json = Zeroizing::new(serde_json::to_vec(map).expect("a map of strings always serialises to JSON"));
        self.encrypt(aad, &json)
    }

    /// Decrypts a map written by [`Cipher::encrypt_json`].
    pub fn decrypt_json(&self, aad: &SecretRef, stored: &str) -> Result<BTreeMap<String, String>, SecretsError> {
        let json = Zeroizing::new(self.decrypt(aad, stored)?);
        // The parser's message could quote secret text, so it is not passed on.
        serde_json::from_slice(&json).map_err(|_| SecretsError::Malformed("decrypted value is not a JSON string map"))
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cipher")
            .field("key_id", &self.current.0)
            .field("other_key_ids", &self.others.iter().map(|(id, _)| id).collect::<Vec<_>>())
            .finish()
    }
}

/// The AES-256-GCM key for secrets at rest, derived from the root key with HKDF-SHA256.
fn data_key(key: &MasterKey) -> Aes256Gcm {
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    hkdf::Hkdf::<Sha256>::new(None, &*key.bytes)
        .expand(SECRETS_INFO, &mut *okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(&*okm).expect("HKDF output is exactly one AES-256 key")
}

#[derive(sqlx::FromRow)]
struct KeyCheckRow {
    key_id: String,
    check_enc: String,
}

impl Store {
    /// The salt of a passphrase master key, created on first use and shared by every process using this
    /// database (a salt is not secret; keeping it here keeps all replicas on one key).
    pub async fn passphrase_salt(&self) -> Result<[u8; SALT_LEN], SecretsError> {
        let mut fresh = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut fresh);
        let now = self.clock().now().timestamp_millis();
        let mut tx = self.begin().await?;
        write!(tx, |conn| {
            sqlx::query("INSERT INTO secret_salt (id, salt, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(STANDARD.encode(fresh))
                .bind(now)
                .execute(conn)
                .await
                .map_err(crate::StoreError::from)?
                .rows_affected()
        });
        tx.commit().await?;
        let stored: String = read!(self, |conn| {
            sqlx::query_scalar("SELECT salt FROM secret_salt WHERE id = 1")
                .fetch_one(conn)
                .await
                .map_err(crate::StoreError::from)?
        });
        decode_base64_exact::<SALT_LEN>(stored.trim())
            .map(|salt| *salt)
            .ok_or(SecretsError::Malformed("stored passphrase salt"))
    }

    /// Startup guard (SPEC §17.3): proves the configured keys open this database's secrets, and records a
    /// verification value for the current key when it has none yet. Every key id not marked retired must
    /// be configured, since the secrets it encrypted would otherwise be unreadable.
    pub async fn verify_master_key(&self, cipher: &Cipher) -> Result<(), SecretsError> {
        let rows = self.active_key_checks().await?;
        check_key_rows(cipher, &rows)?;
        if !rows.iter().any(|row| row.key_id == cipher.key_id()) {
            let mut tx = self.begin().await?;
            tx.record_key_check(cipher).await?;
            tx.commit().await?;
            // A process starting at the same moment may have recorded a different key: check again.
            check_key_rows(cipher, &self.active_key_checks().await?)?;
        }
        Ok(())
    }

    async fn active_key_checks(&self) -> crate::Result<Vec<KeyCheckRow>> {
        Ok(read!(self, |conn| {
            sqlx::query_as("SELECT key_id, check_enc FROM secret_key_check WHERE retired_at IS NULL ORDER BY key_id")
                .fetch_all(conn)
                .await?
        }))
    }
}

impl Tx {
    /// Stores the current key's verification value; a retired row of the same key becomes active again,
    /// since that key encrypts new secrets from now on.
    async fn record_key_check(&mut self, cipher: &Cipher) -> crate::Result<()> {
        let now = ms(self.now());
        let check = cipher.encrypt(&CHECK_REF, CHECK_PLAINTEXT);
        write!(self, |conn| {
            sqlx::query(
                "INSERT INTO secret_key_check (key_id, check_enc, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id) DO UPDATE SET retired_at = NULL",
            )
            .bind(cipher.key_id())
            .bind(&check)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
        });
        Ok(())
    }
}

fn check_key_rows(cipher: &Cipher, rows: &[KeyCheckRow]) -> Result<(), SecretsError> {
    let unopened: Vec<&str> = rows
        .iter()
        .filter(|row| cipher.decrypt(&CHECK_REF, &row.check_enc).ok().as_deref() != Some(CHECK_PLAINTEXT))
        .map(|row| row.key_id.as_str())
        .collect();
    if unopened.is_empty() {
        return Ok(());
    }
    Err(SecretsError::WrongKey { expected: unopened.join(", "), configured: cipher.key_id().to_owned() })
}

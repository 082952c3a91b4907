//! Webhook signature checks shared by the platforms that sign with HMAC-SHA256 (Slack `X-Slack-Signature`,
//! WhatsApp `X-Hub-Signature-256`): the MAC is computed over the exact raw bytes and compared in
//! constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// True when `given_hex` is the hex HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac_sha256_matches(key: &[u8], parts: &[&[u8]], given_hex: &str) -> bool {
    let Ok(given) = hex::decode(given_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&given).is_ok()
}

/// The hex HMAC-SHA256 of `parts` under `key` (what a platform would send; used by tests and fakes).
pub fn hmac_sha256_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_mac() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(mac, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(hmac_sha256_matches(b"Jefe", &[b"what do ya want for nothing?"], &mac));
        assert!(!hmac_sha256_matches(b"Jefe", &[b"what do ya want for nothing!"], &mac));
        assert!(!hmac_sha256_matches(b"jefe", &[b"what do ya want for nothing?"], &mac));
        assert!(!hmac_sha256_matches(b"Jefe", &[b"what do ya want for nothing?"], "zz"));
        assert!(!hmac_sha256_matches(b"Jefe", &[b"what do ya want for nothing?"], &mac[..62]));
    }
}

//! Secrets: how they are made (a readable prefix and random bits), hashed for storage, and
//! compared.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new secret of `bytes` random bytes, hex-encoded after a readable prefix (so a leaked one
/// can be recognised by scanners).
fn new_secret(prefix: &str, bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut random);
    format!("{prefix}_{}", hex(&random))
}

/// A role or session token: 192 random bits.
pub fn new_token(prefix: &str) -> String {
    new_secret(prefix, 24)
}

/// An agent's own key: 256 random bits.
pub fn new_agent_key() -> String {
    new_secret("plura_agent", 32)
}

/// The SHA-256 of a secret: all that is stored of it.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The SHA-256 of a secret in hex, as the database keeps it.
pub fn hash_token(secret: &str) -> String {
    hex(&digest(secret))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

/// A SHA-256 digest from its hex, as `hex` wrote it.
pub fn unhex_digest(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(digest)
}

/// Compares without stopping at the first difference, so the time taken does not tell how much
/// of a guess was right.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_hashed() {
        let a = new_token("plura");
        let b = new_token("plura");
        assert_ne!(a, b);
        assert!(a.starts_with("plura_") && a.len() == "plura_".len() + 48);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a).len(), 64);
        let key = new_agent_key();
        assert!(key.starts_with("plura_agent_") && key.len() == "plura_agent_".len() + 64);
        assert_eq!(hash_token(&key), hex(&digest(&key)));
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }

    #[test]
    fn digests_come_back_from_their_hex() {
        let digest = digest("plura_agent_x");
        assert_eq!(unhex_digest(&hex(&digest)), Some(digest));
        assert_eq!(unhex_digest(&hex(&digest).to_uppercase()), Some(digest));
        assert_eq!(unhex_digest("00"), None);
        assert_eq!(unhex_digest(&"g".repeat(64)), None);
        assert_eq!(unhex_digest(&"é".repeat(32)), None);
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}

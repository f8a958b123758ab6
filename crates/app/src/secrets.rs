//! Passwords and browser tokens. Passwords are hashed with Argon2id (default parameters:
//! 19 MiB, 2 passes), salted with 16 random bytes, and kept as PHC strings. Session and
//! magic-link tokens are random (about 210 bits) and stored as SHA-256 hashes: like API keys,
//! there is nothing to guess, so a fast hash suffices.

use crate::error::AppError;
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted: Argon2 takes any length, but a huge one is only a way to burn CPU.
pub const MAX_PASSWORD_BYTES: usize = 256;

pub fn check_password(field: &str, password: &str) -> Result<(), AppError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::invalid(
            field,
            format!("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} characters"),
        ));
    }
    Ok(())
}

pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt: [u8; 16] = rand::random();
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(format!("hashing a password: {e}")))
}

/// True when `password` matches the PHC string `hash`; false for any other password or a hash
/// that does not parse.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordVerifier::<str>::verify_password(&Argon2::default(), password.as_bytes(), hash).is_ok()
}

/// A hash of a password nobody has, verified against when the user does not exist so that
/// a wrong e-mail costs the same time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&fidelis_store::random_id("", 24)).unwrap_or_default())
}

/// A new random token for a cookie or a link.
pub fn new_token() -> String {
    fidelis_store::random_id("", 43)
}

pub fn token_hash(token: &str) -> String {
    fidelis_store::hash_key(token)
}

/// A password for a new user when none was given: 16 characters, about 79 bits.
pub fn generate_password() -> String {
    fidelis_store::random_id("", 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse battery!", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn passwords_outside_the_limits_are_refused() {
        assert!(check_password("password", "short").is_err());
        assert!(check_password("password", &"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_password("password", "long enough!").is_ok());
    }
}

//! Password hashing: argon2id (RFC 9106) through RustCrypto's `argon2`
//! crate, stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! Parameters are OWASP's first recommendation for argon2id: 19 MiB of
//! memory, 2 passes, 1 lane, a 16-byte random salt and a 32-byte output.
//! A stored hash carries its own parameters, so raising them later still
//! verifies the passwords hashed before. Every hash costs about 20 ms and
//! 19 MiB: callers bound how many run at once (a flood of logins must not
//! exhaust memory) and run them off the async runtime.
//!
//! [`verify_unknown`] spends the same work on a user that does not exist, so
//! the time a failed login takes does not tell whether the name exists.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory in KiB (19 MiB).
pub const M_COST: u32 = 19 * 1024;
/// Passes over the memory.
pub const T_COST: u32 = 2;
/// Lanes.
pub const P_COST: u32 = 1;
/// Longest password accepted, in bytes (hashing cost must not scale with
/// what an anonymous client sends; argon2 pre-hashes anyway).
pub const MAX_PASSWORD_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("password hashing failed")]
    Hash,
}

fn argon2() -> Argon2<'static> {
    // the constants above are within argon2's bounds (tested below)
    let params = Params::new(M_COST, T_COST, P_COST, Some(32)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn check(password: &[u8]) -> Result<(), PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// Hash `password` with a fresh random salt; the PHC string to store.
pub fn hash(password: &[u8]) -> Result<String, PasswordError> {
    check(password)?;
    let salt = SaltString::encode_b64(&crate::random_bytes(16)).map_err(|_| PasswordError::Hash)?;
    argon2()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches the stored PHC string. An unparsable or
/// non-argon2id hash never matches. The comparison of the outputs is
/// constant-time (the `argon2` crate compares `Output`s with `subtle`).
pub fn verify(password: &[u8], phc: &str) -> bool {
    if check(password).is_err() {
        // still spend the work: a too-long or empty password must not be
        // told apart by timing from a wrong one
        let _ = verify_unknown(b"-");
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    argon2().verify_password(password, &parsed).is_ok()
}

static DUMMY: OnceLock<String> = OnceLock::new();

fn dummy() -> &'static str {
    DUMMY.get_or_init(|| {
        let random = hex::encode(crate::random_bytes(32));
        hash(random.as_bytes()).unwrap_or_default()
    })
}

/// Make the dummy hash [`verify_unknown`] uses now (one hash's work), so
/// that the first unknown-user login costs what every other login costs.
pub fn prepare() {
    let _ = dummy();
}

/// The work of one [`verify`] against a hash of a random password nobody
/// knows: what a login for a name that does not exist runs. Always false.
pub fn verify_unknown(password: &[u8]) -> bool {
    let dummy = dummy();
    let candidate = if check(password).is_ok() {
        password
    } else {
        b"-"
    };
    let _ = PasswordHash::new(dummy).map(|p| argon2().verify_password(candidate, &p));
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_owasps() {
        assert!(Params::new(M_COST, T_COST, P_COST, Some(32)).is_ok());
        let h = hash(b"correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct horse"));
    }

    #[test]
    fn verifies_the_right_password_only() {
        let h = hash(b"s3cret-pw").unwrap();
        assert!(verify(b"s3cret-pw", &h));
        assert!(!verify(b"s3cret-pW", &h));
        assert!(!verify(b"s3cret-pw ", &h));
        assert!(!verify(b"", &h));
        assert!(!verify(b"s3cret-pw", "not a phc string"));
        // salted: the same password hashes differently each time
        assert_ne!(h, hash(b"s3cret-pw").unwrap());
        assert!(!verify_unknown(b"s3cret-pw"));
        prepare();
        assert!(DUMMY.get().is_some_and(|d| d.starts_with("$argon2id$")));
    }

    #[test]
    fn other_algorithms_never_match() {
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(M_COST, T_COST, P_COST, Some(32)).unwrap(),
        );
        let h = argon2i.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(!verify(b"pw", &h));
    }

    #[test]
    fn empty_and_oversized_passwords_are_refused() {
        assert_eq!(hash(b""), Err(PasswordError::Empty));
        let long = vec![b'a'; MAX_PASSWORD_BYTES + 1];
        assert_eq!(hash(&long), Err(PasswordError::TooLong));
        assert!(hash(&long[1..]).is_ok());
    }
}

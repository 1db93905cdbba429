//! Shamir secret sharing of the unseal key over GF(256) (vsss-rs, constant time).
//!
//! Each share is the bytes vsss-rs produces (participant id and one byte per
//! secret byte). Fewer than `threshold` shares combine to a wrong value, not an
//! error: the caller detects that because the combined key fails to open the
//! AEAD-wrapped root key.

use rand::SeedableRng;
use vsss_rs::Gf256;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShamirError {
    #[error("secret_threshold must be at least 1 and no more than secret_shares")]
    Threshold,
    #[error("secret_shares must be between 1 and 255")]
    Shares,
    #[error("invalid key shares")]
    Combine,
}

/// Split `secret` into `shares` parts, any `threshold` of which recombine it.
/// With `shares == 1` the single share is the secret itself (as Vault does).
pub fn split(
    secret: &[u8],
    shares: usize,
    threshold: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, ShamirError> {
    if shares == 0 || shares > 255 {
        return Err(ShamirError::Shares);
    }
    if threshold == 0 || threshold > shares {
        return Err(ShamirError::Threshold);
    }
    if shares == 1 {
        return Ok(vec![Zeroizing::new(secret.to_vec())]);
    }
    if threshold == 1 {
        // vsss-rs requires a threshold of two; a threshold of one means every
        // share is the secret, which is what Vault hands out in that case.
        return Ok((0..shares)
            .map(|_| Zeroizing::new(secret.to_vec()))
            .collect());
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&crate::random_bytes(32));
    let mut rng = rand::rngs::StdRng::from_seed(*seed);
    let parts = Gf256::split_bytes(threshold, shares, secret, &mut rng)
        .map_err(|_| ShamirError::Combine)?;
    Ok(parts.into_iter().map(Zeroizing::new).collect())
}

/// Combine shares. With `threshold == 1` any share is the secret.
pub fn combine(
    parts: &[Zeroizing<Vec<u8>>],
    threshold: usize,
) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    if parts.is_empty() {
        return Err(ShamirError::Combine);
    }
    if threshold <= 1 {
        return Ok(parts[0].clone());
    }
    let plain: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    let out = Gf256::combine_bytes(&plain[..]).map_err(|_| ShamirError::Combine);
    let mut plain = plain;
    for p in plain.iter_mut() {
        zeroize::Zeroize::zeroize(p);
    }
    out.map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_subset_recovers_and_fewer_do_not() {
        let secret = crate::random_bytes(32);
        let parts = split(&secret, 5, 3).unwrap();
        assert_eq!(parts.len(), 5);
        // every 3-subset recovers
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let sub = vec![parts[a].clone(), parts[b].clone(), parts[c].clone()];
                    assert_eq!(&combine(&sub, 3).unwrap()[..], &secret[..]);
                }
            }
        }
        // any 2-subset does not
        for a in 0..5 {
            for b in a + 1..5 {
                let sub = vec![parts[a].clone(), parts[b].clone()];
                match combine(&sub, 3) {
                    Ok(v) => assert_ne!(&v[..], &secret[..]),
                    Err(e) => assert_eq!(e, ShamirError::Combine),
                }
            }
        }
    }

    #[test]
    fn parameter_errors() {
        assert_eq!(split(b"k", 3, 4).unwrap_err(), ShamirError::Threshold);
        assert_eq!(split(b"k", 3, 0).unwrap_err(), ShamirError::Threshold);
        assert_eq!(split(b"k", 0, 0).unwrap_err(), ShamirError::Shares);
        assert_eq!(split(b"k", 256, 2).unwrap_err(), ShamirError::Shares);
        let one = split(b"key", 1, 1).unwrap();
        assert_eq!(&one[0][..], b"key");
    }
}

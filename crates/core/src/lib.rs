//! palisade-core: the vocabulary every other Palisade crate shares.
//!
//! It owns the types that carry security meaning across crate boundaries:
//! [`Secret`] (a value that never prints and is wiped on drop), [`RequestId`],
//! random identifiers, the clock, and Vault-style duration parsing. It sits
//! underneath everything else in the flow and depends on no other Palisade crate.
#![forbid(unsafe_code)]

pub mod net;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A value that must never reach a log, an error message or a panic.
///
/// `Debug` prints `Secret([REDACTED])`, there is no `Display`, equality is
/// constant time, and the memory is zeroed on drop.
#[derive(Clone, Default)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// Borrow the secret. Call sites are the places to audit.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> ZeroizeOnDrop for Secret<T> {}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl<T: Zeroize + AsRef<[u8]>> PartialEq for Secret<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_ref().ct_eq(other.0.as_ref()).into()
    }
}
impl<T: Zeroize + AsRef<[u8]>> Eq for Secret<T> {}

impl From<String> for Secret<String> {
    fn from(s: String) -> Self {
        Self(s)
    }
}
impl From<Vec<u8>> for Secret<Vec<u8>> {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

/// Fill `n` bytes from the operating system's CSPRNG (aws-lc).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // Invariant: aws-lc's system RNG only fails when the OS has no entropy
    // source at all, in which case no key can be generated safely and the
    // process must stop rather than continue with weak randomness.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut buf).expect("operating system RNG unavailable");
    buf
}

/// A random RFC 4122 version-4 UUID string, the format Vault uses for ids.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&random_bytes(16));
    uuid_v4_from(b)
}

/// The version-4 UUID string made of 16 random bytes (version and variant
/// bits set here): for callers that fetch random bytes in batches.
pub fn uuid_v4_from(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // hex with dashes after bytes 4, 6, 8 and 10, written directly (this
    // runs for every gateway request)
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[(byte >> 4) as usize] as char);
        out.push(HEX[(byte & 0x0f) as usize] as char);
    }
    out
}

/// The id of one request, carried through logs, audit records and responses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn generate() -> Self {
        Self(uuid_v4())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Wall-clock time as nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The time as a component sees it: the wall clock, or in tests the wall
/// clock moved forward by [`Clock::advance`] (so expiry can be tested
/// without waiting). Cloning shares the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// The wall clock plus an offset that [`Clock::advance`] moves.
    pub fn adjustable() -> Self {
        Self {
            offset: Some(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0))),
        }
    }

    /// Move an adjustable clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(o) = &self.offset {
            let ns = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
            o.fetch_add(ns, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn now_nanos(&self) -> i64 {
        let off = self
            .offset
            .as_ref()
            .map_or(0, |o| o.load(std::sync::atomic::Ordering::SeqCst));
        now_nanos().saturating_add(off)
    }

    pub fn now_secs(&self) -> i64 {
        self.now_nanos() / 1_000_000_000
    }
}

/// Format Unix nanoseconds as RFC 3339 with nanoseconds, as Vault prints
/// times (`1970-01-01T00:00:00.000000000Z`; negative times as the epoch).
/// Written digit by digit: the gateway stamps every request with it, and
/// going through `fmt` cost ten times as much.
pub fn rfc3339(nanos: i64) -> String {
    let nanos = nanos.max(0);
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 9, frac);
    b.iter().map(|&c| char::from(c)).collect()
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`), for days ≥ 0.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Error for a duration that is neither whole seconds nor a Go-style duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {0:?}")]
pub struct DurationError(pub String);

/// Parse a Vault duration: whole seconds (`"3600"` or a JSON number) or a
/// Go-style string of number+unit pairs (`"1h30m"`, `"90s"`, `"7d"`).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    let err = || DurationError(input.chars().take(64).collect());
    if s.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total = total.saturating_add((value * nanos_per) as u128);
    }
    let nanos = u64::try_from(total).map_err(|_| err())?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2-super-secret".to_string());
        let printed = format!("{s:?}");
        assert_eq!(printed, "Secret([REDACTED])");
        assert!(!printed.contains("hunter2"));
    }

    #[test]
    fn secret_eq_is_by_value() {
        assert_eq!(Secret::new(b"abc".to_vec()), Secret::new(b"abc".to_vec()));
        assert_ne!(Secret::new(b"abc".to_vec()), Secret::new(b"abd".to_vec()));
    }

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        for (i, c) in u.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{u}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{u}");
            }
        }
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(uuid_v4(), u);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("10x"), Err(DurationError("10x".into())));
        assert_eq!(parse_duration("h"), Err(DurationError("h".into())));
        assert_eq!(parse_duration(""), Err(DurationError("".into())));
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(i64::MAX), "2262-04-11T23:47:16.854775807Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    /// The hand-written formatter agrees with humantime's over leap years,
    /// century rules, month ends and the whole i64 range.
    #[test]
    fn rfc3339_matches_humantime() {
        let reference = |n: i64| {
            humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(n as u64)).to_string()
        };
        let day = 86_400_000_000_000_i64;
        // every day from 1970 to 2262 at a varying time of day
        let mut n = 0_i64;
        let mut k = 0_i64;
        while n < i64::MAX - day {
            let t = n + (k * 7_919_000_000_123) % day;
            assert_eq!(rfc3339(t), reference(t), "{t}");
            n += day;
            k += 1;
        }
        // and a spread of arbitrary instants
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = (x >> 1) as i64;
            assert_eq!(rfc3339(t), reference(t), "{t}");
        }
    }
}

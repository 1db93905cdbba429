//! TLS record protection after the handshake: RFC 8446 §5 (TLS 1.3) and
//! RFC 5246 §6.2 with RFC 5288 (AES-GCM) and RFC 7905 (ChaCha20-Poly1305)
//! for TLS 1.2.
//!
//! rustls runs the whole handshake. Once it is done, [`crate::conn::TlsConn`]
//! takes the negotiated traffic keys out of rustls through its kernel-TLS
//! API (`dangerous_into_kernel_connection`, the path kTLS uses) and
//! protects records here, with aws-lc's AEADs. The reason is memory: a
//! rustls connection with its expanded AEAD keys holds ~3.3 KB for as long
//! as the connection lives; here a connection keeps ~300 bytes of key
//! material (keys, IVs, TLS 1.3 traffic secrets) and expands the AEAD keys
//! only while it reads or writes
//! ([`RecordLayer::release`] drops them when the connection parks).
//!
//! TLS 1.3 key updates need the application traffic secrets, which rustls
//! hands out only through its key-log hook: [`SecretCapture`] receives them
//! while this thread runs one synchronous step of *this* connection's
//! handshake ([`capturing`]) and never writes them anywhere; the connection
//! then checks that they derive exactly the keys rustls handed over before
//! it uses them (RFC 8446 §7.1-7.2: HKDF-Expand-Label "key", "iv",
//! "traffic upd"). Keeping rustls's `KernelConnection` for this instead
//! would cost ~0.9 KB per idle connection.
//!
//! What is accepted after the handshake, and what ends the connection
//! (with the alert sent, as rustls would):
//! - application data: any length up to 2^14 plaintext bytes, empty allowed;
//!   at most 32 records in a row without data (key updates, ignored
//!   alerts, empty records), as in BoringSSL and rustls;
//! - TLS 1.3 KeyUpdate, alone at the end of its record (RFC 8446 §5.1);
//!   `update_requested` is answered with our own KeyUpdate;
//! - close_notify (end of data); TLS 1.3 user_canceled and TLS 1.2 warning
//!   alerts are ignored; any other alert ends the connection;
//! - everything else (renegotiation, change_cipher_spec, unknown content
//!   types, other handshake messages) is `unexpected_message`;
//! - a record that fails authentication is `bad_record_mac`; one over the
//!   size limits (2^14 + 256 ciphertext in TLS 1.3, 2^14 + 2048 in 1.2, 2^14
//!   plaintext) is `record_overflow`.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey};
use aws_lc_rs::aead::{Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, SupportedCipherSuite};
use std::cell::RefCell;
use zeroize::Zeroizing;

pub const HEADER_LEN: usize = 5;
const TAG_LEN: usize = 16;
const GCM_EXPLICIT_NONCE_LEN: usize = 8;
const MAX_PLAINTEXT: usize = 1 << 14;
const MAX_CIPHERTEXT_13: usize = MAX_PLAINTEXT + 256;
const MAX_CIPHERTEXT_12: usize = MAX_PLAINTEXT + 2048;
/// The largest record accepted, header included.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT_12;

/// Content types (RFC 8446 §5.1).
pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

/// Alert descriptions (RFC 8446 §6).
pub const CLOSE_NOTIFY: u8 = 0;
pub const UNEXPECTED_MESSAGE: u8 = 10;
pub const BAD_RECORD_MAC: u8 = 20;
pub const RECORD_OVERFLOW: u8 = 22;
pub const DECODE_ERROR: u8 = 50;
pub const INTERNAL_ERROR: u8 = 80;
const USER_CANCELED: u8 = 90;
const WARNING: u8 = 1;
const FATAL: u8 = 2;

/// Records without application data accepted in a row (BoringSSL's
/// kMaxKeyUpdates and kMaxEmptyRecords are 32).
const MAX_CONTROL_RECORDS: u8 = 32;

/// HandshakeType key_update (RFC 8446 §4).
const KEY_UPDATE: u8 = 24;

/// A fatal record-layer error: the alert to send (none when the peer
/// ended the connection with its own alert) and what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordError {
    pub alert: Option<u8>,
    pub reason: &'static str,
}

impl RecordError {
    fn alert(alert: u8, reason: &'static str) -> Self {
        Self {
            alert: Some(alert),
            reason,
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}", self.reason)
    }
}

/// What one record held.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data (possibly empty) was appended to the output.
    Data,
    /// A record with nothing for the reader (a key update, an ignored alert).
    Control,
    /// close_notify: the peer sends nothing more.
    Closed,
}

/// An AEAD key (first `key_len` bytes used) and IV.
type KeyIv = (Zeroizing<[u8; 32]>, Zeroizing<[u8; 12]>);

fn derive_key_iv(secret: &[u8], key_len: usize) -> Result<KeyIv, RecordError> {
    let mut key = Zeroizing::new([0u8; 32]);
    let mut iv = Zeroizing::new([0u8; 12]);
    expand_label(secret, b"key", &mut key[..key_len])?;
    expand_label(secret, b"iv", &mut iv[..])?;
    Ok((key, iv))
}

/// One direction's keys: the raw key material (zeroed on drop) and the
/// AEAD key expanded from it, present only while in use.
struct Keys {
    alg: &'static Algorithm,
    /// AES-GCM in TLS 1.2: an explicit nonce is carried in each record.
    tls12_gcm: bool,
    key: Zeroizing<[u8; 32]>,
    key_len: u8,
    iv: Zeroizing<[u8; 12]>,
    seq: u64,
    expanded: Option<LessSafeKey>,
    /// TLS 1.3: the application traffic secret these keys came from.
    secret: Secret,
}

/// A TLS 1.3 application traffic secret (32 or 48 bytes; empty: none).
pub struct Secret {
    bytes: Zeroizing<[u8; 48]>,
    len: u8,
}

impl Default for Secret {
    fn default() -> Self {
        Self {
            bytes: Zeroizing::new([0; 48]),
            len: 0,
        }
    }
}

impl Secret {
    fn new(s: &[u8]) -> Self {
        let mut bytes = Zeroizing::new([0u8; 48]);
        let len = s.len().min(48);
        bytes[..len].copy_from_slice(&s[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The client's and the server's application traffic secrets of one TLS
/// 1.3 handshake, as captured by [`SecretCapture`].
#[derive(Default)]
pub struct TrafficSecrets {
    client: Secret,
    server: Secret,
}

thread_local! {
    static CAPTURE: RefCell<Option<TrafficSecrets>> = const { RefCell::new(None) };
}

/// rustls's key-log hook, used only to hand the TLS 1.3 application traffic
/// secrets to the connection whose handshake step this thread is running
/// (armed by [`capturing`]). Writes nothing anywhere; asks rustls for no
/// other secret.
#[derive(Debug)]
pub struct SecretCapture;

const CLIENT_TRAFFIC: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_TRAFFIC: &str = "SERVER_TRAFFIC_SECRET_0";

impl rustls::KeyLog for SecretCapture {
    fn will_log(&self, label: &str) -> bool {
        (label == CLIENT_TRAFFIC || label == SERVER_TRAFFIC)
            && CAPTURE.with(|c| c.borrow().is_some())
    }

    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        CAPTURE.with(|c| {
            if let Some(t) = c.borrow_mut().as_mut() {
                match label {
                    CLIENT_TRAFFIC => t.client = Secret::new(secret),
                    SERVER_TRAFFIC => t.server = Secret::new(secret),
                    _ => {}
                }
            }
        })
    }
}

/// Run `step` (one synchronous step of a handshake) with the secrets it
/// derives captured into `slot`.
pub fn capturing<R>(slot: &mut TrafficSecrets, step: impl FnOnce() -> R) -> R {
    CAPTURE.with(|c| *c.borrow_mut() = Some(std::mem::take(slot)));
    let r = step();
    if let Some(t) = CAPTURE.with(|c| c.borrow_mut().take()) {
        *slot = t;
    }
    r
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 §7.1); the
/// hash is the one the secret's length implies (SHA-256 or SHA-384).
fn expand_label(secret: &[u8], label: &[u8], out: &mut [u8]) -> Result<(), RecordError> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let fail = RecordError::alert(INTERNAL_ERROR, "key derivation failed");
    let alg = match secret.len() {
        32 => hkdf::HKDF_SHA256,
        48 => hkdf::HKDF_SHA384,
        _ => return Err(fail),
    };
    let prk = hkdf::Prk::new_less_safe(alg, secret);
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| fail)
}

impl Keys {
    fn new(
        (seq, secrets): (u64, ConnectionTrafficSecrets),
        tls13: bool,
    ) -> Result<Self, RecordError> {
        let (alg, gcm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, true, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, true, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&CHACHA20_POLY1305, false, key, iv)
            }
            _ => {
                return Err(RecordError::alert(
                    INTERNAL_ERROR,
                    "unsupported cipher suite",
                ));
            }
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() != alg.key_len() || iv.len() != 12 {
            return Err(RecordError::alert(INTERNAL_ERROR, "unexpected key size"));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k[..key.len()].copy_from_slice(key);
        let mut v = Zeroizing::new([0u8; 12]);
        v.copy_from_slice(iv);
        Ok(Self {
            alg,
            tls12_gcm: gcm && !tls13,
            key: k,
            key_len: key.len() as u8,
            iv: v,
            seq,
            expanded: None,
            secret: Secret::default(),
        })
    }

    /// TLS 1.3: attach the traffic secret, after checking that it derives
    /// exactly these keys.
    fn with_secret(mut self, secret: Secret) -> Result<Self, RecordError> {
        let (key, iv) = derive_key_iv(secret.get(), self.key_len as usize)?;
        if key[..] != self.key[..] || iv[..] != self.iv[..] {
            return Err(RecordError::alert(
                INTERNAL_ERROR,
                "traffic secret does not match the keys",
            ));
        }
        self.secret = secret;
        Ok(self)
    }

    /// The keys after a TLS 1.3 key update (RFC 8446 §7.2).
    fn next(&self) -> Result<Self, RecordError> {
        let mut next = Secret {
            len: self.secret.len,
            ..Secret::default()
        };
        expand_label(
            self.secret.get(),
            b"traffic upd",
            &mut next.bytes[..next.len as usize],
        )?;
        let (key, iv) = derive_key_iv(next.get(), self.key_len as usize)?;
        Ok(Self {
            alg: self.alg,
            tls12_gcm: false,
            key,
            key_len: self.key_len,
            iv,
            seq: 0,
            expanded: None,
            secret: next,
        })
    }

    fn key(&mut self) -> Result<&LessSafeKey, RecordError> {
        if self.expanded.is_none() {
            let k = UnboundKey::new(self.alg, &self.key[..self.key_len as usize])
                .map_err(|_| RecordError::alert(INTERNAL_ERROR, "key setup failed"))?;
            self.expanded = Some(LessSafeKey::new(k));
        }
        Ok(self.expanded.as_ref().expect("just set"))
    }

    /// The per-record nonce: the IV XOR the 64-bit sequence number
    /// (RFC 8446 §5.3; RFC 7905 §2; and the explicit part of an AES-GCM
    /// TLS 1.2 nonce, the construction rustls uses).
    fn nonce(&self) -> [u8; 12] {
        let mut n = *self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    fn advance(&mut self) -> Result<(), RecordError> {
        self.seq = self.seq.checked_add(1).ok_or(RecordError::alert(
            INTERNAL_ERROR,
            "sequence number exhausted",
        ))?;
        Ok(())
    }
}

/// Record protection for one connection, after the handshake.
pub struct RecordLayer {
    tls13: bool,
    tx: Keys,
    rx: Keys,
    /// Records sealed under one key before it must be replaced (the
    /// suite's confidentiality limit: 2^24 for AES-GCM in TLS 1.3).
    tx_limit: u64,
    /// Records in a row that carried no application data (key updates,
    /// ignored alerts, empty records); capped like BoringSSL and rustls do.
    controls: u8,
    /// Key updates done (received, sent): for tests and diagnostics.
    updates: (u32, u32),
}

impl RecordLayer {
    /// `suite`: the negotiated one; `traffic`: the TLS 1.3 traffic secrets
    /// captured during the handshake (required for TLS 1.3, unused for 1.2).
    pub fn new(
        secrets: ExtractedSecrets,
        suite: SupportedCipherSuite,
        traffic: TrafficSecrets,
    ) -> Result<Self, RecordError> {
        let tls13 = suite.tls13().is_some();
        let tx_limit = match suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        let mut tx = Keys::new(secrets.tx, tls13)?;
        let mut rx = Keys::new(secrets.rx, tls13)?;
        if tls13 {
            tx = tx.with_secret(traffic.server)?;
            rx = rx.with_secret(traffic.client)?;
        }
        Ok(Self {
            tls13,
            tx,
            rx,
            tx_limit,
            controls: 0,
            updates: (0, 0),
        })
    }

    /// Key updates so far: (received from the peer, sent).
    #[cfg(test)]
    pub fn key_updates(&self) -> (u32, u32) {
        self.updates
    }

    /// Drop the expanded AEAD keys (rebuilt from the kept key material on
    /// the next record).
    pub fn release(&mut self) {
        self.tx.expanded = None;
        self.rx.expanded = None;
    }

    /// The whole length of the record at the front of `buf`, once its
    /// header is there; checks the header first.
    pub fn record_len(&self, buf: &[u8]) -> Result<Option<usize>, RecordError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        if h[1] != 3 {
            return Err(RecordError::alert(DECODE_ERROR, "bad record version"));
        }
        let max = if self.tls13 {
            if h[0] != APPLICATION_DATA {
                return Err(RecordError::alert(
                    UNEXPECTED_MESSAGE,
                    "unprotected record after the handshake",
                ));
            }
            MAX_CIPHERTEXT_13
        } else {
            if !(CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&h[0]) {
                return Err(RecordError::alert(
                    UNEXPECTED_MESSAGE,
                    "unknown record type",
                ));
            }
            MAX_CIPHERTEXT_12
        };
        if len > max {
            return Err(RecordError::alert(RECORD_OVERFLOW, "record too large"));
        }
        Ok(Some(HEADER_LEN + len))
    }

    /// Decrypt one whole record (`record_len` bytes) in place and act on
    /// it: application data is appended to `plain`; a key update may queue
    /// our own key update in `out`.
    pub fn open(
        &mut self,
        record: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Opened, RecordError> {
        let (hdr, body) = record.split_at_mut(HEADER_LEN);
        let hdr: [u8; HEADER_LEN] = hdr.try_into().expect("header length");
        let bad_mac = RecordError::alert(BAD_RECORD_MAC, "record authentication failed");
        let (typ, pt): (u8, &[u8]) = if self.tls13 {
            if body.len() < TAG_LEN {
                return Err(bad_mac);
            }
            let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
            let pt = self
                .rx
                .key()?
                .open_in_place(nonce, Aad::from(hdr), body)
                .map_err(|_| bad_mac)?;
            // TLSInnerPlaintext: content, then the type, then zero padding
            let Some(end) = pt.iter().rposition(|b| *b != 0) else {
                return Err(RecordError::alert(
                    UNEXPECTED_MESSAGE,
                    "record without a content type",
                ));
            };
            (pt[end], &pt[..end])
        } else {
            let explicit = if self.rx.tls12_gcm {
                GCM_EXPLICIT_NONCE_LEN
            } else {
                0
            };
            if body.len() < explicit + TAG_LEN {
                return Err(bad_mac);
            }
            let nonce = if self.rx.tls12_gcm {
                let mut n = [0u8; 12];
                n[..4].copy_from_slice(&self.rx.iv[..4]);
                n[4..].copy_from_slice(&body[..GCM_EXPLICIT_NONCE_LEN]);
                n
            } else {
                self.rx.nonce()
            };
            let aad = tls12_aad(
                self.rx.seq,
                hdr[0],
                [hdr[1], hdr[2]],
                body.len() - explicit - TAG_LEN,
            );
            let pt = self
                .rx
                .key()?
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut body[explicit..],
                )
                .map_err(|_| bad_mac)?;
            (hdr[0], &*pt)
        };
        self.rx.advance()?;
        if pt.len() > MAX_PLAINTEXT {
            return Err(RecordError::alert(RECORD_OVERFLOW, "record too large"));
        }
        if typ == APPLICATION_DATA && !pt.is_empty() {
            self.controls = 0;
        } else if self.controls >= MAX_CONTROL_RECORDS {
            return Err(RecordError::alert(
                UNEXPECTED_MESSAGE,
                "too many records without data",
            ));
        } else {
            self.controls += 1;
        }
        match typ {
            APPLICATION_DATA => {
                plain.extend_from_slice(pt);
                Ok(Opened::Data)
            }
            ALERT => match *pt {
                [_, CLOSE_NOTIFY] => Ok(Opened::Closed),
                [_, USER_CANCELED] if self.tls13 => Ok(Opened::Control),
                [WARNING, _] if !self.tls13 => Ok(Opened::Control),
                [_, _] => Err(RecordError {
                    alert: None,
                    reason: "the peer sent an alert",
                }),
                _ => Err(RecordError::alert(DECODE_ERROR, "malformed alert")),
            },
            HANDSHAKE if self.tls13 => match *pt {
                [KEY_UPDATE, 0, 0, 1, requested @ (0 | 1)] => {
                    self.key_update_rx()?;
                    if requested == 1 {
                        self.key_update_tx(out)?;
                    }
                    Ok(Opened::Control)
                }
                [KEY_UPDATE, ..] => Err(RecordError::alert(DECODE_ERROR, "malformed key update")),
                _ => Err(RecordError::alert(
                    UNEXPECTED_MESSAGE,
                    "unexpected handshake message after the handshake",
                )),
            },
            HANDSHAKE => Err(RecordError::alert(
                UNEXPECTED_MESSAGE,
                "renegotiation is not supported",
            )),
            _ => Err(RecordError::alert(
                UNEXPECTED_MESSAGE,
                "unexpected record type",
            )),
        }
    }

    /// Encrypt `data` as records of type `typ` onto `out` (application data
    /// in records of at most 2^14 bytes).
    pub fn seal(&mut self, typ: u8, data: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let mut chunks = data.chunks(MAX_PLAINTEXT);
        let mut chunk = chunks.next().unwrap_or_default();
        loop {
            if self.tx.seq.saturating_add(1) >= self.tx_limit {
                if !self.tls13 {
                    return Err(RecordError::alert(
                        INTERNAL_ERROR,
                        "key usage limit reached",
                    ));
                }
                self.key_update_tx(out)?;
            }
            self.seal_one(typ, chunk, out)?;
            match chunks.next() {
                Some(c) => chunk = c,
                None => return Ok(()),
            }
        }
    }

    /// A fatal alert, or close_notify (a warning).
    pub fn seal_alert(&mut self, desc: u8, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let level = if desc == CLOSE_NOTIFY { WARNING } else { FATAL };
        self.seal_one(ALERT, &[level, desc], out)
    }

    fn seal_one(&mut self, typ: u8, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let start = out.len();
        let nonce = self.tx.nonce();
        let sealed = if self.tls13 {
            let len = chunk.len() + 1 + TAG_LEN;
            out.reserve(HEADER_LEN + len);
            out.extend_from_slice(&[APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8]);
            out.extend_from_slice(chunk);
            out.push(typ);
            let hdr: [u8; HEADER_LEN] = out[start..start + HEADER_LEN].try_into().expect("header");
            self.tx.key()?.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(hdr),
                &mut out[start + HEADER_LEN..],
            )
        } else {
            let explicit = if self.tx.tls12_gcm {
                GCM_EXPLICIT_NONCE_LEN
            } else {
                0
            };
            let len = explicit + chunk.len() + TAG_LEN;
            out.reserve(HEADER_LEN + len);
            out.extend_from_slice(&[typ, 3, 3, (len >> 8) as u8, len as u8]);
            out.extend_from_slice(&nonce[12 - explicit..]);
            out.extend_from_slice(chunk);
            let aad = tls12_aad(self.tx.seq, typ, [3, 3], chunk.len());
            self.tx.key()?.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start + HEADER_LEN + explicit..],
            )
        };
        match sealed {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            Err(_) => {
                out.truncate(start);
                return Err(RecordError::alert(INTERNAL_ERROR, "encryption failed"));
            }
        }
        self.tx.advance()
    }

    fn key_update_rx(&mut self) -> Result<(), RecordError> {
        self.rx = self.rx.next()?;
        self.updates.0 += 1;
        tracing::debug!(received = self.updates.0, "TLS key update from the client");
        Ok(())
    }

    /// Send KeyUpdate(update_not_requested) under the current key, then
    /// switch to the next one (RFC 8446 §4.6.3).
    fn key_update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal_one(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        self.tx = self.tx.next()?;
        self.updates.1 += 1;
        tracing::debug!(sent = self.updates.1, "TLS key update sent");
        Ok(())
    }
}

/// TLS 1.2 additional data: seq_num || type || version || length.
fn tls12_aad(seq: u64, typ: u8, version: [u8; 2], len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9..11].copy_from_slice(&version);
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

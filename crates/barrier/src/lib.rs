//! palisade-barrier: the cryptographic barrier between the server core and the
//! untrusted storage backend.
//!
//! Layout in storage (all other keys are barrier entries):
//!
//! | key | content |
//! |---|---|
//! | `core/seal-config` | plaintext JSON `{secret_shares, secret_threshold}` (not secret) |
//! | `core/root-key` | the root key, AES-256-GCM under the unseal key (AAD = the path) |
//! | `core/keyring` | the keyring (every term's key), AES-256-GCM under the root key |
//!
//! A barrier entry is `term (4 bytes, big endian) || nonce || ciphertext || tag`
//! with the entry's storage path as associated data, so a ciphertext copied to
//! another path, re-labelled with another term or altered in any byte fails to
//! open. `sys/init` splits the unseal key with Shamir; unsealing recombines it,
//! opens the root key and then the keyring. Sealing drops every key (they are
//! zeroized on drop). [`View`] jails an engine to one prefix.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use palisade_crypto::aead::{AeadError, AeadKey};
use palisade_crypto::shamir;
use palisade_storage::{Backend, StorageError, TxnOp};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub const SEAL_CONFIG_PATH: &str = "core/seal-config";
pub const ROOT_KEY_PATH: &str = "core/root-key";
pub const KEYRING_PATH: &str = "core/keyring";
/// After a rekey: the new root key sealed under the previous one, with the
/// time it was written (8 bytes, big-endian nanoseconds) in front. Other
/// processes unsealed before the rekey (HA standbys) follow the rekey with
/// it ([`Barrier::reload_keyring`]); it is deleted after a grace period
/// ([`Barrier::tidy_root_upgrade`]), after which old shares (and the old root
/// key) open nothing stored from the rekey on again.
pub const ROOT_UPGRADE_PATH: &str = "core/root-upgrade";

#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("Vault is sealed")]
    Sealed,
    #[error("Vault is not initialized")]
    NotInitialized,
    #[error("Vault is already initialized")]
    AlreadyInitialized,
    /// Integrity failure: the stored bytes were altered, moved or corrupted.
    #[error("failed to decrypt entry at {path:?}: integrity check failed")]
    Integrity { path: String },
    #[error("entry at {path:?} uses unknown key term {term}")]
    UnknownTerm { path: String, term: u32 },
    #[error("invalid unseal key")]
    InvalidUnsealKey,
    #[error("{0}")]
    Parameters(String),
    #[error("invalid path {0:?}")]
    InvalidPath(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("barrier metadata is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealConfig {
    pub secret_shares: u8,
    pub secret_threshold: u8,
}

/// One operation of an atomic barrier transaction.
pub enum BarrierOp {
    Put { path: String, value: Vec<u8> },
    Delete { path: String },
}

struct Term {
    key: AeadKey,
    install_time: i64,
}

/// The unsealed key material. Dropping it wipes every key.
struct Keyring {
    root: AeadKey,
    terms: BTreeMap<u32, Term>,
    active: u32,
}

#[derive(Serialize, Deserialize)]
struct StoredTerm {
    term: u32,
    key: String,
    install_time: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredKeyring {
    active: u32,
    terms: Vec<StoredTerm>,
}

impl Keyring {
    fn to_stored(&self) -> Zeroizing<Vec<u8>> {
        let stored = StoredKeyring {
            active: self.active,
            terms: self
                .terms
                .iter()
                .map(|(t, k)| StoredTerm {
                    term: *t,
                    key: base64::engine::general_purpose::STANDARD.encode(k.key.expose_bytes()),
                    install_time: k.install_time,
                })
                .collect(),
        };
        let out = Zeroizing::new(serde_json::to_vec(&stored).unwrap_or_default());
        let mut stored = stored;
        for t in stored.terms.iter_mut() {
            zeroize::Zeroize::zeroize(&mut t.key);
        }
        out
    }

    fn from_stored(root: AeadKey, bytes: &[u8]) -> Result<Self, BarrierError> {
        let mut stored: StoredKeyring = serde_json::from_slice(bytes)
            .map_err(|e| BarrierError::Corrupt(format!("keyring: {e}")))?;
        let mut terms = BTreeMap::new();
        for t in stored.terms.iter_mut() {
            let raw = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(&t.key)
                    .map_err(|_| BarrierError::Corrupt("keyring term encoding".into()))?,
            );
            zeroize::Zeroize::zeroize(&mut t.key);
            let key = AeadKey::from_bytes(&raw)
                .map_err(|_| BarrierError::Corrupt("keyring term length".into()))?;
            terms.insert(
                t.term,
                Term {
                    key,
                    install_time: t.install_time,
                },
            );
        }
        if !terms.contains_key(&stored.active) {
            return Err(BarrierError::Corrupt("active term missing".into()));
        }
        Ok(Self {
            root,
            terms,
            active: stored.active,
        })
    }
}

/// Progress of a multi-share unseal, as `sys/seal-status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsealProgress {
    pub sealed: bool,
    pub progress: usize,
    pub nonce: String,
}

#[derive(Default)]
struct Pending {
    shares: Vec<Zeroizing<Vec<u8>>>,
    nonce: String,
}

/// What `sys/key-status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    pub term: u32,
    pub install_time: i64,
}

/// Unseal key shares, each wiped on drop.
pub type Shares = Vec<Zeroizing<Vec<u8>>>;

/// Shortest and longest unseal key share accepted (Vault's bounds: an AES
/// key of 16 to 32 bytes, plus one byte of Shamir overhead).
pub const MIN_SHARE_LEN: usize = 16;
pub const MAX_SHARE_LEN: usize = 33;

/// A new unseal key and its seal configuration, made by
/// [`NewUnsealKey::generate`] and installed by [`Barrier::rekey`]. Only in
/// memory; the key is wiped on drop.
pub struct NewUnsealKey {
    key: AeadKey,
    config: SealConfig,
}

impl NewUnsealKey {
    /// A fresh unseal key split into `config.secret_shares` shares, any
    /// `config.secret_threshold` of which recombine it.
    pub fn generate(config: SealConfig) -> Result<(Self, Shares), BarrierError> {
        let key = AeadKey::generate();
        let parts = shamir::split(
            key.expose_bytes(),
            config.secret_shares as usize,
            config.secret_threshold as usize,
        )
        .map_err(|e| BarrierError::Parameters(e.to_string()))?;
        Ok((Self { key, config }, parts))
    }

    pub fn config(&self) -> SealConfig {
        self.config
    }

    /// Whether `shares` (at least the threshold of them) recombine this key.
    pub fn is_split_of(&self, shares: &[Zeroizing<Vec<u8>>]) -> bool {
        shamir::combine(shares, self.config.secret_threshold as usize)
            .is_ok_and(|k| palisade_crypto::mac::ct_eq(&k, self.key.expose_bytes()))
    }
}

pub struct Barrier {
    backend: Arc<dyn Backend>,
    keyring: RwLock<Option<Arc<Keyring>>>,
    pending: Mutex<Pending>,
    /// Serialises init, unseal, seal and rotate against each other.
    admin: tokio::sync::Mutex<()>,
}

fn lock_err() -> BarrierError {
    BarrierError::Corrupt("lock poisoned".into())
}

impl Barrier {
    pub fn new(backend: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Self {
            backend,
            keyring: RwLock::new(None),
            pending: Mutex::new(Pending::default()),
            admin: tokio::sync::Mutex::new(()),
        })
    }

    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    pub async fn seal_config(&self) -> Result<Option<SealConfig>, BarrierError> {
        match self.backend.get(SEAL_CONFIG_PATH).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| BarrierError::Corrupt(format!("seal config: {e}"))),
        }
    }

    pub async fn initialized(&self) -> Result<bool, BarrierError> {
        Ok(self.seal_config().await?.is_some())
    }

    pub fn sealed(&self) -> bool {
        self.keyring.read().map(|k| k.is_none()).unwrap_or(true)
    }

    /// Create the root key, the first keyring term and the unseal key, and
    /// return the unseal key split into `shares` parts. Leaves the barrier sealed.
    pub async fn initialize(
        &self,
        shares: u8,
        threshold: u8,
    ) -> Result<Vec<Zeroizing<Vec<u8>>>, BarrierError> {
        let _g = self.admin.lock().await;
        if self.initialized().await? {
            return Err(BarrierError::AlreadyInitialized);
        }
        if shares == 0 {
            return Err(BarrierError::Parameters(
                "invalid seal configuration: secret shares must be at least one".into(),
            ));
        }
        if threshold == 0 {
            return Err(BarrierError::Parameters(
                "invalid seal configuration: threshold must be greater than zero".into(),
            ));
        }
        if threshold > shares {
            return Err(BarrierError::Parameters(
                "invalid seal configuration: threshold cannot be larger than secret shares".into(),
            ));
        }
        if shares > 1 && threshold == 1 {
            return Err(BarrierError::Parameters(
                "invalid seal configuration: threshold must be greater than one for multiple shares".into(),
            ));
        }
        let (unseal, parts) = NewUnsealKey::generate(SealConfig {
            secret_shares: shares,
            secret_threshold: threshold,
        })?;
        let term = Term {
            key: AeadKey::generate(),
            install_time: palisade_core::now_nanos(),
        };
        let keyring = Keyring {
            root: AeadKey::generate(),
            terms: BTreeMap::from([(1, term)]),
            active: 1,
        };
        self.store_key_material(&unseal, &keyring).await?;
        Ok(parts)
    }

    /// Unseal directly with the whole unseal key (dev mode, tests).
    pub async fn unseal_with_key(&self, unseal_key: &[u8]) -> Result<(), BarrierError> {
        let _g = self.admin.lock().await;
        self.unseal_locked(unseal_key).await
    }

    async fn unseal_locked(&self, unseal_key: &[u8]) -> Result<(), BarrierError> {
        if !self.sealed() {
            return Ok(());
        }
        let unseal = AeadKey::from_bytes(unseal_key).map_err(|_| BarrierError::InvalidUnsealKey)?;
        let wrapped = self
            .backend
            .get(ROOT_KEY_PATH)
            .await?
            .ok_or(BarrierError::NotInitialized)?;
        let root_bytes = unseal
            .open(ROOT_KEY_PATH.as_bytes(), &wrapped)
            .map_err(|_| BarrierError::InvalidUnsealKey)?;
        let root = AeadKey::from_bytes(&root_bytes)
            .map_err(|_| BarrierError::Corrupt("root key length".into()))?;
        let ring_ct = self
            .backend
            .get(KEYRING_PATH)
            .await?
            .ok_or_else(|| BarrierError::Corrupt("keyring missing".into()))?;
        let ring_bytes =
            root.open(KEYRING_PATH.as_bytes(), &ring_ct)
                .map_err(|_| BarrierError::Integrity {
                    path: KEYRING_PATH.into(),
                })?;
        let ring = Keyring::from_stored(root, &ring_bytes)?;
        *self.keyring.write().map_err(|_| lock_err())? = Some(Arc::new(ring));
        Ok(())
    }

    /// Submit one unseal key share. When `threshold` distinct shares are in,
    /// they are combined and tried; a wrong combination resets the progress.
    pub async fn submit_share(
        &self,
        share: Zeroizing<Vec<u8>>,
    ) -> Result<UnsealProgress, BarrierError> {
        let _g = self.admin.lock().await;
        let cfg = self
            .seal_config()
            .await?
            .ok_or(BarrierError::NotInitialized)?;
        if !self.sealed() {
            return Ok(UnsealProgress {
                sealed: false,
                progress: 0,
                nonce: String::new(),
            });
        }
        let threshold = cfg.secret_threshold as usize;
        let ready = {
            let mut p = self.pending.lock().map_err(|_| lock_err())?;
            if p.shares.is_empty() {
                p.nonce = palisade_core::uuid_v4();
            }
            if !p
                .shares
                .iter()
                .any(|s| palisade_crypto::mac::ct_eq(s, &share))
            {
                p.shares.push(share);
            }
            if p.shares.len() < threshold {
                return Ok(UnsealProgress {
                    sealed: true,
                    progress: p.shares.len(),
                    nonce: p.nonce.clone(),
                });
            }
            std::mem::take(&mut p.shares)
        };
        let combined =
            shamir::combine(&ready, threshold).map_err(|_| BarrierError::InvalidUnsealKey)?;
        drop(ready);
        self.pending.lock().map_err(|_| lock_err())?.nonce.clear();
        self.unseal_locked(&combined).await?;
        Ok(UnsealProgress {
            sealed: false,
            progress: 0,
            nonce: String::new(),
        })
    }

    pub fn unseal_progress(&self) -> UnsealProgress {
        let sealed = self.sealed();
        match self.pending.lock() {
            Ok(p) if sealed => UnsealProgress {
                sealed,
                progress: p.shares.len(),
                nonce: p.nonce.clone(),
            },
            _ => UnsealProgress {
                sealed,
                progress: 0,
                nonce: String::new(),
            },
        }
    }

    pub fn reset_unseal(&self) {
        if let Ok(mut p) = self.pending.lock() {
            p.shares.clear();
            p.nonce.clear();
        }
    }

    /// Drop every key from memory. Data stays unreadable until unsealed again.
    pub async fn seal(&self) -> Result<(), BarrierError> {
        let _g = self.admin.lock().await;
        *self.keyring.write().map_err(|_| lock_err())? = None;
        self.reset_unseal();
        Ok(())
    }

    /// Read the keyring again with the root key in memory: another process
    /// (the active node of an HA cluster) may have added a term
    /// (`sys/rotate`) since this one unsealed. Needs the barrier unsealed.
    pub async fn reload_keyring(&self) -> Result<(), BarrierError> {
        let _g = self.admin.lock().await;
        let current = self.ring()?;
        let ring_ct = self
            .backend
            .get(KEYRING_PATH)
            .await?
            .ok_or_else(|| BarrierError::Corrupt("keyring missing".into()))?;
        let (root, ring_bytes) = match current.root.open(KEYRING_PATH.as_bytes(), &ring_ct) {
            Ok(b) => (
                AeadKey::from_bytes(current.root.expose_bytes()).map_err(aead_internal)?,
                b,
            ),
            // rekeyed since this process unsealed: follow it with the new
            // root key, sealed under the one this process holds
            Err(_) => {
                let integrity = || BarrierError::Integrity {
                    path: KEYRING_PATH.into(),
                };
                let upgrade = self
                    .backend
                    .get(ROOT_UPGRADE_PATH)
                    .await?
                    .ok_or_else(integrity)?;
                let sealed = upgrade.get(8..).ok_or_else(integrity)?;
                let new_root = current
                    .root
                    .open(ROOT_UPGRADE_PATH.as_bytes(), sealed)
                    .map_err(|_| integrity())?;
                let root = AeadKey::from_bytes(&new_root).map_err(|_| integrity())?;
                let b = root
                    .open(KEYRING_PATH.as_bytes(), &ring_ct)
                    .map_err(|_| integrity())?;
                (root, b)
            }
        };
        let ring = Keyring::from_stored(root, &ring_bytes)?;
        *self.keyring.write().map_err(|_| lock_err())? = Some(Arc::new(ring));
        Ok(())
    }

    /// Delete the rekey's root upgrade ([`ROOT_UPGRADE_PATH`]) once it is
    /// older than `grace` (the active node calls it regularly). Returns
    /// whether it was deleted.
    pub async fn tidy_root_upgrade(
        &self,
        grace: std::time::Duration,
    ) -> Result<bool, BarrierError> {
        let _g = self.admin.lock().await;
        let Some(upgrade) = self.backend.get(ROOT_UPGRADE_PATH).await? else {
            return Ok(false);
        };
        let written = upgrade
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0);
        let grace = i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX);
        if palisade_core::now_nanos().saturating_sub(written) < grace {
            return Ok(false);
        }
        self.backend.delete(ROOT_UPGRADE_PATH).await?;
        Ok(true)
    }

    /// A key for `purpose`, derived (HKDF-SHA256) from the keyring's first
    /// term: the same on every process unsealed with this barrier whatever
    /// happened since (`sys/rotate` adds terms, a rekey re-wraps the keyring
    /// under a new root key: the first term stays), unknown to anyone else
    /// (HA nodes authenticate what they forward to each other with it).
    pub fn derive_key(&self, purpose: &str) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
        let ring = self.ring()?;
        let (_, first) = ring
            .terms
            .first_key_value()
            .ok_or_else(|| BarrierError::Corrupt("empty keyring".into()))?;
        palisade_crypto::transit::derive_key(
            first.key.expose_bytes(),
            format!("palisade barrier derived key: {purpose}").as_bytes(),
        )
        .map_err(|_| BarrierError::Corrupt("key derivation".into()))
    }

    /// Add a new keyring term; new writes use it, older terms still decrypt.
    pub async fn rotate(&self) -> Result<KeyStatus, BarrierError> {
        let _g = self.admin.lock().await;
        let current = self.ring()?;
        let mut terms = BTreeMap::new();
        for (t, k) in &current.terms {
            terms.insert(
                *t,
                Term {
                    key: AeadKey::from_bytes(k.key.expose_bytes()).map_err(aead_internal)?,
                    install_time: k.install_time,
                },
            );
        }
        let next = current.active + 1;
        let now = palisade_core::now_nanos();
        terms.insert(
            next,
            Term {
                key: AeadKey::generate(),
                install_time: now,
            },
        );
        let root = AeadKey::from_bytes(current.root.expose_bytes()).map_err(aead_internal)?;
        let ring = Keyring {
            root,
            terms,
            active: next,
        };
        let ct = ring
            .root
            .seal(KEYRING_PATH.as_bytes(), &ring.to_stored())
            .map_err(aead_internal)?;
        self.backend.put(KEYRING_PATH, &ct).await?;
        *self.keyring.write().map_err(|_| lock_err())? = Some(Arc::new(ring));
        Ok(KeyStatus {
            term: next,
            install_time: now,
        })
    }

    /// Combine `shares` with the current threshold and check that the key
    /// they make opens the stored root key (what `sys/rekey/update` and
    /// `sys/generate-root/update` authenticate with). Needs the barrier
    /// unsealed. A wrong combination is [`BarrierError::InvalidUnsealKey`].
    pub async fn check_shares(&self, shares: &[Zeroizing<Vec<u8>>]) -> Result<(), BarrierError> {
        let _g = self.admin.lock().await;
        let current = self.ring()?;
        let cfg = self
            .seal_config()
            .await?
            .ok_or(BarrierError::NotInitialized)?;
        let combined = shamir::combine(shares, cfg.secret_threshold as usize)
            .map_err(|_| BarrierError::InvalidUnsealKey)?;
        let unseal = AeadKey::from_bytes(&combined).map_err(|_| BarrierError::InvalidUnsealKey)?;
        let wrapped = self
            .backend
            .get(ROOT_KEY_PATH)
            .await?
            .ok_or(BarrierError::NotInitialized)?;
        let root = unseal
            .open(ROOT_KEY_PATH.as_bytes(), &wrapped)
            .map_err(|_| BarrierError::InvalidUnsealKey)?;
        // the stored root key is the one in use (rekey changes both under `admin`)
        if !palisade_crypto::mac::ct_eq(&root, current.root.expose_bytes()) {
            return Err(BarrierError::Corrupt(
                "the stored root key is not the one in memory".into(),
            ));
        }
        Ok(())
    }

    /// The root key of `ring` wrapped under `unseal`'s key, the keyring
    /// wrapped under its root key and `unseal`'s seal configuration, written
    /// in one transaction: a crash never leaves a seal configuration without
    /// the keys it describes (initialisation and rekey).
    async fn store_key_material(
        &self,
        unseal: &NewUnsealKey,
        ring: &Keyring,
    ) -> Result<(), BarrierError> {
        self.store_key_material_with(unseal, ring, Vec::new()).await
    }

    async fn store_key_material_with(
        &self,
        unseal: &NewUnsealKey,
        ring: &Keyring,
        extra: Vec<TxnOp>,
    ) -> Result<(), BarrierError> {
        let wrapped_root = unseal
            .key
            .seal(ROOT_KEY_PATH.as_bytes(), ring.root.expose_bytes())
            .map_err(aead_internal)?;
        let wrapped_ring = ring
            .root
            .seal(KEYRING_PATH.as_bytes(), &ring.to_stored())
            .map_err(aead_internal)?;
        let cfg_bytes =
            serde_json::to_vec(&unseal.config).map_err(|e| BarrierError::Corrupt(e.to_string()))?;
        self.backend
            .transaction(
                vec![
                    TxnOp::Put {
                        key: ROOT_KEY_PATH.into(),
                        value: wrapped_root,
                    },
                    TxnOp::Put {
                        key: KEYRING_PATH.into(),
                        value: wrapped_ring,
                    },
                    TxnOp::Put {
                        key: SEAL_CONFIG_PATH.into(),
                        value: cfg_bytes,
                    },
                ]
                .into_iter()
                .chain(extra)
                .collect(),
            )
            .await?;
        Ok(())
    }

    /// Replace the unseal key with `new` and the root key with a fresh one,
    /// in one storage transaction: the root key wrapped under the new unseal
    /// key, the keyring wrapped under the new root key and the new seal
    /// configuration are written together or not at all, so after a crash at
    /// any point either the old shares or the new ones unseal, never neither
    /// (and never a threshold that does not match the key). The same
    /// transaction writes the new root key sealed under the old one
    /// ([`ROOT_UPGRADE_PATH`]) so that other processes unsealed before (HA
    /// standbys) can follow; once that is deleted after its grace period,
    /// older root keys open none of what is stored from here on.
    pub async fn rekey(&self, new: &NewUnsealKey) -> Result<(), BarrierError> {
        let _g = self.admin.lock().await;
        let current = self.ring()?;
        let mut terms = BTreeMap::new();
        for (t, k) in &current.terms {
            terms.insert(
                *t,
                Term {
                    key: AeadKey::from_bytes(k.key.expose_bytes()).map_err(aead_internal)?,
                    install_time: k.install_time,
                },
            );
        }
        let ring = Keyring {
            root: AeadKey::generate(),
            terms,
            active: current.active,
        };
        let mut upgrade = palisade_core::now_nanos().to_be_bytes().to_vec();
        upgrade.extend(
            current
                .root
                .seal(ROOT_UPGRADE_PATH.as_bytes(), ring.root.expose_bytes())
                .map_err(aead_internal)?,
        );
        self.store_key_material_with(
            new,
            &ring,
            vec![TxnOp::Put {
                key: ROOT_UPGRADE_PATH.into(),
                value: upgrade,
            }],
        )
        .await?;
        *self.keyring.write().map_err(|_| lock_err())? = Some(Arc::new(ring));
        Ok(())
    }

    pub fn key_status(&self) -> Result<KeyStatus, BarrierError> {
        let ring = self.ring()?;
        let t = ring
            .terms
            .get(&ring.active)
            .ok_or_else(|| BarrierError::Corrupt("active term".into()))?;
        Ok(KeyStatus {
            term: ring.active,
            install_time: t.install_time,
        })
    }

    fn ring(&self) -> Result<Arc<Keyring>, BarrierError> {
        self.keyring
            .read()
            .map_err(|_| lock_err())?
            .clone()
            .ok_or(BarrierError::Sealed)
    }

    fn check_path(path: &str) -> Result<(), BarrierError> {
        if path.starts_with("core/seal-config")
            || path == ROOT_KEY_PATH
            || path == KEYRING_PATH
            || path == ROOT_UPGRADE_PATH
        {
            return Err(BarrierError::InvalidPath(path.into()));
        }
        palisade_storage::check_key(path)
            .map_err(|_| BarrierError::InvalidPath(path.chars().take(128).collect()))
    }

    fn encrypt(ring: &Keyring, path: &str, plaintext: &[u8]) -> Result<Vec<u8>, BarrierError> {
        let term = ring
            .terms
            .get(&ring.active)
            .ok_or_else(|| BarrierError::Corrupt("active term".into()))?;
        let ct = term
            .key
            .seal(path.as_bytes(), plaintext)
            .map_err(aead_internal)?;
        let mut out = Vec::with_capacity(4 + ct.len());
        out.extend_from_slice(&ring.active.to_be_bytes());
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn decrypt(
        ring: &Keyring,
        path: &str,
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
        if stored.len() < 4 {
            return Err(BarrierError::Integrity { path: path.into() });
        }
        let term = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
        let key = ring
            .terms
            .get(&term)
            .ok_or_else(|| BarrierError::UnknownTerm {
                path: path.into(),
                term,
            })?;
        key.key
            .open(path.as_bytes(), &stored[4..])
            .map_err(|_| BarrierError::Integrity { path: path.into() })
    }

    pub async fn get(&self, path: &str) -> Result<Option<Zeroizing<Vec<u8>>>, BarrierError> {
        Self::check_path(path)?;
        let ring = self.ring()?;
        match self.backend.get(path).await? {
            None => Ok(None),
            Some(ct) => Self::decrypt(&ring, path, &ct).map(Some),
        }
    }

    pub async fn put(&self, path: &str, value: &[u8]) -> Result<(), BarrierError> {
        Self::check_path(path)?;
        let ring = self.ring()?;
        let ct = Self::encrypt(&ring, path, value)?;
        self.backend.put(path, &ct).await?;
        Ok(())
    }

    pub async fn delete(&self, path: &str) -> Result<(), BarrierError> {
        Self::check_path(path)?;
        self.ring()?;
        self.backend.delete(path).await?;
        Ok(())
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.ring()?;
        Ok(self.backend.list(prefix).await?)
    }

    pub async fn transaction(&self, ops: Vec<BarrierOp>) -> Result<(), BarrierError> {
        let ring = self.ring()?;
        let mut txn = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                BarrierOp::Put { path, value } => {
                    Self::check_path(&path)?;
                    let ct = Self::encrypt(&ring, &path, &value)?;
                    txn.push(TxnOp::Put {
                        key: path,
                        value: ct,
                    });
                }
                BarrierOp::Delete { path } => {
                    Self::check_path(&path)?;
                    txn.push(TxnOp::Delete { key: path });
                }
            }
        }
        self.backend.transaction(txn).await?;
        Ok(())
    }
}

fn aead_internal(e: AeadError) -> BarrierError {
    BarrierError::Corrupt(e.to_string())
}

/// A prefix jail over the barrier: every key an engine uses is relative to
/// its mount's `logical/<uuid>/` prefix and may not climb out of it.
#[derive(Clone)]
pub struct View {
    barrier: Arc<Barrier>,
    prefix: String,
}

impl View {
    pub fn new(barrier: Arc<Barrier>, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { barrier, prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> Result<String, BarrierError> {
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(BarrierError::InvalidPath(key.chars().take(128).collect()));
        }
        Ok(format!("{}{}", self.prefix, key))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, BarrierError> {
        self.barrier.get(&self.full(key)?).await
    }
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        self.barrier.put(&self.full(key)?, value).await
    }
    pub async fn delete(&self, key: &str) -> Result<(), BarrierError> {
        self.barrier.delete(&self.full(key)?).await
    }
    /// `prefix` is relative, empty or ending in `/`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        if !prefix.is_empty() {
            let trimmed = prefix
                .strip_suffix('/')
                .ok_or_else(|| BarrierError::InvalidPath(prefix.into()))?;
            self.full(trimmed)?;
        }
        self.barrier
            .list(&format!("{}{}", self.prefix, prefix))
            .await
    }
    pub async fn transaction(&self, ops: Vec<BarrierOp>) -> Result<(), BarrierError> {
        let mut full = Vec::with_capacity(ops.len());
        for op in ops {
            full.push(match op {
                BarrierOp::Put { path, value } => BarrierOp::Put {
                    path: self.full(&path)?,
                    value,
                },
                BarrierOp::Delete { path } => BarrierOp::Delete {
                    path: self.full(&path)?,
                },
            });
        }
        self.barrier.transaction(full).await
    }
    /// Delete every key under this view (used when a mount is disabled).
    pub async fn clear(&self) -> Result<(), BarrierError> {
        let mut stack = vec![String::new()];
        while let Some(p) = stack.pop() {
            for child in self.list(&p).await? {
                let full = format!("{p}{child}");
                if full.ends_with('/') {
                    stack.push(full);
                } else {
                    self.delete(&full).await?;
                }
            }
        }
        Ok(())
    }
}

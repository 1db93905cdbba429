//! Command definitions and their implementations. Exit codes follow Vault's
//! CLI: 0 success, 1 local error (bad flags, invalid input, file problems),
//! 2 remote error (the server refused or could not be reached); `status`
//! exits 2 when the server is sealed.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use palisade_client::{Client, ClientError};
use serde_json::{Map, Value, json};

use crate::output::{self, Format};

#[derive(Parser, Debug)]
#[command(
    name = "palisade",
    version,
    about = "Palisade: secrets server, security gateway and CLI"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Remote {
    /// Server address.
    #[arg(long, env = "PALISADE_ADDR", global = true)]
    pub address: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub format: Format,
    /// CA certificate (PEM) to trust in addition to the system roots.
    #[arg(long = "ca-cert", env = "PALISADE_CACERT", global = true)]
    pub ca_cert: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the secrets server.
    Server(ServerArgs),
    /// Check configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print the seal status of the server.
    Status(Remote),
    /// Store a token in ~/.palisade-token (mode 0600) after checking it
    /// with the server. Without TOKEN (or with `-`) the token is read from
    /// standard input, with a hidden prompt on a terminal: an argument is
    /// visible to every local user in the process list.
    Login {
        token: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Initialise, unseal, seal and rotate.
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// Key/value secrets.
    #[command(subcommand)]
    Kv(KvCmd),
    /// Tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// ACL policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Secrets engines (mounts).
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Audit devices, and offline verification of an audit file.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Run the security gateway, or manage its API keys.
    Gateway(GatewayArgs),
    /// Read any path (as `vault read`).
    Read {
        path: String,
        /// Print only this field of `data`, raw.
        #[arg(long)]
        field: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write to any path: key=value pairs (`@file`, `-` for stdin) are the
    /// JSON body (as `vault write`).
    Write {
        path: String,
        pairs: Vec<String>,
        /// Print only this field of `data`, raw.
        #[arg(long)]
        field: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the keys under a path (as `vault list`).
    List {
        path: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a path (as `vault delete`).
    Delete {
        path: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Encrypt and decrypt with the transit engine; base64 is handled here.
    #[command(subcommand)]
    Transit(TransitCmd),
    /// Certificates from the PKI engine.
    #[command(subcommand)]
    Pki(PkiCmd),
    /// Leases of dynamic secrets (as `vault lease`).
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// The OAuth2 provider's clients (`identity/oidc/client/*`).
    #[command(subcommand)]
    Oauth(OauthCmd),
    /// Log in, read secrets and write them to files, then exit: the init
    /// container that hands a pod its secrets in a memory volume instead of
    /// environment variables (Vault Agent's injector, one shot). Every secret
    /// is read before any file is written; each file is written whole (a new
    /// file, then a rename). The login's token is revoked at the end unless
    /// --token-out keeps it for the application.
    Fetch(FetchArgs),
}

#[derive(Args, Debug)]
pub(crate) struct FetchArgs {
    /// How to log in: `jwt` (a Kubernetes service account token), `approle`,
    /// or `token` (PALISADE_TOKEN / VAULT_TOKEN / ~/.palisade-token).
    #[arg(long, default_value = "jwt", value_parser = ["jwt", "approle", "token"])]
    pub method: String,
    /// Where the auth method is enabled (default: the method's name).
    #[arg(long)]
    pub mount: Option<String>,
    /// The JWT role.
    #[arg(long)]
    pub role: Option<String>,
    /// The JWT: the projected service account token.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub jwt_file: PathBuf,
    /// AppRole role ID.
    #[arg(long)]
    pub role_id: Option<String>,
    /// A file holding the AppRole secret ID.
    #[arg(long)]
    pub secret_id_file: Option<PathBuf>,
    /// The directory to write into (it must exist: a memory volume).
    #[arg(long)]
    pub out: PathBuf,
    /// File mode of what is written (octal; at most 0640).
    #[arg(long, default_value = "0400")]
    pub mode: String,
    /// Also write the login's token to this file in --out, and keep it
    /// valid (for the application's SDK `tokenFile`).
    #[arg(long)]
    pub token_out: Option<String>,
    /// FILE=PATH[#FIELD]: read PATH (KV v2: `secret/data/app/db`) and write
    /// its data as JSON to FILE, or only FIELD, raw.
    #[arg(required = true)]
    pub secrets: Vec<String>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Subcommand, Debug)]
pub(crate) enum OauthCmd {
    /// OAuth2 clients: create, list, rotate-secret, delete.
    #[command(subcommand)]
    Client(OauthClientCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum OauthClientCmd {
    /// Register a client; its secret is printed once (stored only as a keyed hash).
    Create {
        name: String,
        /// Scopes it may ask for, comma-separated.
        #[arg(long)]
        scopes: Option<String>,
        /// Audiences it may ask tokens for, comma-separated (at least one).
        #[arg(long)]
        audiences: String,
        /// client_secret_basic (default), client_secret_post or private_key_jwt.
        #[arg(long)]
        auth_method: Option<String>,
        /// A JWKS file with the client's public keys (private_key_jwt).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Access token lifetime (default 5m).
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the clients' names.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Replace a client's secret; the new one is printed once and the old
    /// one stops working at once.
    RotateSecret {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a client.
    Delete {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum LeaseCmd {
    /// Show a lease: issue and expiry times, TTL, renewable.
    Lookup {
        lease_id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Extend a lease by INCREMENT (default: its TTL), never past its max TTL.
    Renew {
        lease_id: String,
        #[arg(long)]
        increment: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a lease (the credential is removed first), or with --prefix
    /// every lease under a path (needs sudo). --force forgets the leases
    /// even when the engine cannot remove the credentials.
    Revoke {
        lease_id: String,
        #[arg(long)]
        prefix: bool,
        #[arg(long, requires = "prefix")]
        force: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PkiCmd {
    /// Issue a certificate for NAME with ROLE and write cert.pem, key.pem
    /// (0600) and chain.pem into DIR (each replaced atomically).
    Issue {
        role: String,
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "pki")]
        mount: String,
        #[arg(long)]
        ttl: Option<String>,
        /// More DNS names, comma-separated.
        #[arg(long)]
        alt_names: Option<String>,
        #[arg(long)]
        ip_sans: Option<String>,
        /// URI SANs (SPIFFE IDs), comma-separated.
        #[arg(long)]
        uri_sans: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TransitCmd {
    /// Encrypt standard input with KEY; prints the `vault:v<N>:` ciphertext.
    Encrypt {
        key: String,
        /// Mount path of the transit engine.
        #[arg(long, default_value = "transit")]
        mount: String,
        /// Context of a derived key (text; base64-encoded here).
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Decrypt CIPHERTEXT with KEY; writes the plaintext bytes to standard output.
    Decrypt {
        key: String,
        ciphertext: String,
        #[arg(long, default_value = "transit")]
        mount: String,
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// Gateway configuration file (TOML).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<GatewayCmd>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum GatewayCmd {
    /// Manage API keys in the gateway's key store ([apikeys] in the config).
    #[command(subcommand)]
    Apikey(ApikeyCmd),
    /// List, add or lift intrusion-detection bans through the running
    /// gateway's admin listener (the config's [admin] address).
    #[command(subcommand)]
    Bans(BansCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum BansCmd {
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Ban a subject: ip:<address> (IPv6: its /64) or principal:<label>.
    Add {
        subject: String,
        /// How long, e.g. 30m or 24h.
        #[arg(long)]
        duration: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a ban and forget the subject's score and strikes.
    Remove { subject: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ApikeyCmd {
    /// Create a key; the key is printed once and never stored.
    Create {
        #[arg(long)]
        consumer: String,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. 90d or 720h (default: no expiry).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    List {
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    Revoke {
        id: String,
    },
    /// Issue a new key for the same consumer and scopes; the old key stays valid for --overlap.
    Rotate {
        id: String,
        /// How long the old key keeps working, e.g. 24h (default: until revoked).
        #[arg(long)]
        overlap: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ServerArgs {
    /// Dev mode: in a fresh temporary SQLite file, initialised, unsealed, plaintext on loopback.
    #[arg(long)]
    pub dev: bool,
    #[arg(long = "dev-root-token-id", env = "PALISADE_DEV_ROOT_TOKEN_ID")]
    pub dev_root_token_id: Option<String>,
    #[arg(long = "dev-listen-address", default_value = "127.0.0.1:8200")]
    pub dev_listen_address: std::net::SocketAddr,
    /// Dev mode only: enable a file audit device writing here.
    #[arg(long = "dev-audit-file")]
    pub dev_audit_file: Option<PathBuf>,
    /// Server configuration file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCmd {
    /// Validate a server configuration file, reporting every error at once.
    Check { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub(crate) enum OperatorCmd {
    Init {
        #[arg(long = "key-shares", default_value_t = 5)]
        key_shares: u8,
        #[arg(long = "key-threshold", default_value_t = 3)]
        key_threshold: u8,
        #[command(flatten)]
        remote: Remote,
    },
    Unseal {
        /// The key share (prompted from stdin when omitted).
        key: Option<String>,
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        remote: Remote,
    },
    Seal(Remote),
    Rotate(Remote),
    KeyStatus(Remote),
    /// Replace the unseal key with a new one split into new shares (needs a
    /// token with sudo on sys/rekey/*). `--init` starts, then each holder
    /// runs it with their current share; `--verify` sends back new shares
    /// when the rekey was started with `--verify`.
    Rekey(RekeyArgs),
    /// Make a new root token from unseal key shares (needs a token with sudo
    /// on sys/generate-root/*, unless the server allows it without one).
    /// `--init` starts with an OTP, each holder submits a share, and
    /// `--decode ENCODED --otp OTP` turns the result into the token.
    GenerateRoot(GenerateRootArgs),
}

#[derive(Args)]
pub(crate) struct RekeyArgs {
    /// A current unseal key share (or, with --verify, a new one). Omitted
    /// or `-`: read from standard input, with a hidden prompt on a
    /// terminal; an argument is visible to every local user.
    pub key: Option<String>,
    /// Start a rekey.
    #[arg(long, conflicts_with_all = ["cancel", "status", "backup_retrieve", "backup_delete"])]
    pub init: bool,
    /// Cancel the rekey in progress (with --verify: only its verification).
    #[arg(long, conflicts_with_all = ["status", "backup_retrieve", "backup_delete"])]
    pub cancel: bool,
    /// Show the progress of the rekey in progress.
    #[arg(long, conflicts_with_all = ["backup_retrieve", "backup_delete"])]
    pub status: bool,
    /// Number of new shares (with --init).
    #[arg(long = "key-shares", default_value_t = 5)]
    pub key_shares: u16,
    /// Number of new shares needed to unseal (with --init).
    #[arg(long = "key-threshold", default_value_t = 3)]
    pub key_threshold: u16,
    /// With --init: the new shares must be given back before they replace
    /// the old ones. Otherwise: act on the verification.
    #[arg(long)]
    pub verify: bool,
    /// The operation's nonce (default: the one in progress).
    #[arg(long)]
    pub nonce: Option<String>,
    /// PGP keys to encrypt the new shares with: not supported (refused).
    #[arg(long = "pgp-keys")]
    pub pgp_keys: Option<String>,
    #[arg(long = "backup-retrieve")]
    pub backup_retrieve: bool,
    #[arg(long = "backup-delete")]
    pub backup_delete: bool,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Args)]
pub(crate) struct GenerateRootArgs {
    /// An unseal key share. Omitted or `-`: read from standard input, with
    /// a hidden prompt on a terminal.
    pub key: Option<String>,
    /// Start a root token generation (with --otp, or the server makes one).
    #[arg(long, conflicts_with_all = ["cancel", "status", "decode", "generate_otp"])]
    pub init: bool,
    /// Cancel the generation in progress.
    #[arg(long, conflicts_with_all = ["status", "decode", "generate_otp"])]
    pub cancel: bool,
    /// Show the progress of the generation in progress.
    #[arg(long, conflicts_with_all = ["decode", "generate_otp"])]
    pub status: bool,
    /// Print a new OTP (computed locally).
    #[arg(long = "generate-otp", conflicts_with = "decode")]
    pub generate_otp: bool,
    /// Decode this encoded token with --otp (computed locally).
    #[arg(long)]
    pub decode: Option<String>,
    /// The one-time pad: with --init, the one to encode with; with --decode,
    /// the one to decode with (`-`: read from standard input).
    #[arg(long)]
    pub otp: Option<String>,
    /// PGP key to encrypt the token with: not supported (refused).
    #[arg(long = "pgp-key")]
    pub pgp_key: Option<String>,
    /// The operation's nonce (default: the one in progress).
    #[arg(long)]
    pub nonce: Option<String>,
    #[command(flatten)]
    pub remote: Remote,
}

/// Shares, OTPs and encoded tokens never appear in Debug output.
fn redacted(v: &Option<String>) -> &'static str {
    if v.is_some() {
        "Some(<redacted>)"
    } else {
        "None"
    }
}

impl std::fmt::Debug for RekeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RekeyArgs")
            .field("key", &redacted(&self.key))
            .field("init", &self.init)
            .field("cancel", &self.cancel)
            .field("status", &self.status)
            .field("key_shares", &self.key_shares)
            .field("key_threshold", &self.key_threshold)
            .field("verify", &self.verify)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for GenerateRootArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateRootArgs")
            .field("key", &redacted(&self.key))
            .field("init", &self.init)
            .field("cancel", &self.cancel)
            .field("status", &self.status)
            .field("generate_otp", &self.generate_otp)
            .field("decode", &redacted(&self.decode))
            .field("otp", &redacted(&self.otp))
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

#[derive(Args, Debug)]
pub(crate) struct KvPath {
    /// Mount path of the KV engine.
    #[arg(long, default_value = "secret")]
    pub mount: String,
    #[arg(default_value = "")]
    pub path: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KvCmd {
    Get {
        #[command(flatten)]
        p: KvPath,
        #[arg(long, default_value_t = 0)]
        version: u64,
        #[arg(long)]
        field: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Put {
        #[command(flatten)]
        p: KvPath,
        /// key=value pairs
        pairs: Vec<String>,
        #[arg(long)]
        cas: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    Patch {
        #[command(flatten)]
        p: KvPath,
        pairs: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Delete {
        #[command(flatten)]
        p: KvPath,
        #[arg(long, value_delimiter = ',')]
        versions: Vec<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    Undelete {
        #[command(flatten)]
        p: KvPath,
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    Destroy {
        #[command(flatten)]
        p: KvPath,
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    List {
        #[command(flatten)]
        p: KvPath,
        #[command(flatten)]
        remote: Remote,
    },
    #[command(subcommand)]
    Metadata(KvMetaCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum KvMetaCmd {
    Get {
        #[command(flatten)]
        p: KvPath,
        #[command(flatten)]
        remote: Remote,
    },
    Put {
        #[command(flatten)]
        p: KvPath,
        #[arg(long = "max-versions")]
        max_versions: Option<u64>,
        #[arg(long = "cas-required")]
        cas_required: Option<bool>,
        #[arg(long = "delete-version-after")]
        delete_version_after: Option<String>,
        /// key=value custom metadata (repeatable)
        #[arg(long = "custom-metadata")]
        custom_metadata: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Delete {
        #[command(flatten)]
        p: KvPath,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    Create {
        #[arg(long = "policy")]
        policies: Vec<String>,
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long = "explicit-max-ttl")]
        explicit_max_ttl: Option<String>,
        #[arg(long)]
        period: Option<String>,
        #[arg(long = "use-limit")]
        use_limit: Option<i64>,
        #[arg(long)]
        orphan: bool,
        #[arg(long = "no-default-policy")]
        no_default_policy: bool,
        #[arg(long = "display-name")]
        display_name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Lookup {
        token: Option<String>,
        #[arg(long)]
        accessor: bool,
        #[command(flatten)]
        remote: Remote,
    },
    Renew {
        token: Option<String>,
        #[arg(long)]
        increment: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Revoke {
        token: Option<String>,
        #[arg(long)]
        accessor: bool,
        #[arg(long = "self")]
        self_: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    List(Remote),
    Read {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    Write {
        name: String,
        /// Policy file, or - for stdin.
        file: String,
        #[command(flatten)]
        remote: Remote,
    },
    Delete {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Format a policy file in place (local; validates it too).
    Fmt {
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SecretsCmd {
    Enable {
        /// Engine type: kv or kv-v2.
        engine: String,
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Disable {
        path: String,
        #[command(flatten)]
        remote: Remote,
    },
    List(Remote),
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    Enable {
        /// Device type (file).
        kind: String,
        /// file_path=/abs/path and other options.
        options: Vec<String>,
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Disable {
        path: String,
        #[command(flatten)]
        remote: Remote,
    },
    List(Remote),
    /// Check an audit file's hash chain. With --head SEQ:HASH (or --device
    /// NAME, which asks the server's `sys/audit-head/NAME`), also check that
    /// the file reaches that head: a cut-off tail fails.
    Verify {
        file: PathBuf,
        /// The device's head, as `sys/audit-head/<device>` gives it: SEQ:HASH.
        #[arg(long, conflicts_with = "device")]
        head: Option<String>,
        /// Fetch the head of this device from the server (needs sudo on sys/audit-head).
        #[arg(long)]
        device: Option<String>,
        /// The last record of the previous file (SEQ:HASH), for a file that
        /// continues another one after a rotation.
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// The token: flag/env first, then ~/.palisade-token.
fn token() -> Option<String> {
    for var in ["PALISADE_TOKEN", "VAULT_TOKEN"] {
        if let Ok(t) = std::env::var(var)
            && !t.is_empty()
        {
            return Some(t);
        }
    }
    let home = std::env::var("HOME").ok()?;
    std::fs::read_to_string(PathBuf::from(home).join(".palisade-token"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn client(r: &Remote) -> Result<Client, u8> {
    let addr = r
        .address
        .clone()
        .or_else(|| std::env::var("VAULT_ADDR").ok())
        .unwrap_or_else(|| "https://127.0.0.1:8200".to_string());
    let ca = r
        .ca_cert
        .clone()
        .or_else(|| std::env::var("VAULT_CACERT").ok());
    Client::new(&addr, token(), ca.as_deref()).map_err(|e| {
        eprintln!("{e}");
        1
    })
}

fn remote_err(e: ClientError) -> u8 {
    eprintln!("{e}");
    match e {
        ClientError::Config(_) => 1,
        _ => 2,
    }
}

fn local_err(msg: impl std::fmt::Display) -> u8 {
    eprintln!("{msg}");
    1
}

fn pairs(list: &[String]) -> Result<Map<String, Value>, u8> {
    let mut m = Map::new();
    for p in list {
        let Some((k, v)) = p.split_once('=') else {
            return Err(local_err(format!("invalid key=value pair {p:?}")));
        };
        let v = if let Some(file) = v.strip_prefix('@') {
            std::fs::read_to_string(file)
                .map_err(|e| local_err(format!("cannot read {file}: {e}")))?
        } else if v == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(local_err)?;
            s
        } else {
            v.to_string()
        };
        m.insert(k.to_string(), Value::String(v));
    }
    Ok(m)
}

macro_rules! tryc {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}

macro_rules! call {
    ($c:expr, $m:expr, $p:expr, $b:expr) => {
        match $c.request($m, &$p, $b).await {
            Ok(r) => r,
            Err(e) => return remote_err(e),
        }
    };
}

fn init_tracing(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| {
        // rustls warns about each malformed record a peer sends (before any
        // authentication): the gateway counts failed handshakes by reason
        // instead, so a client cannot make this log grow at will
        tracing_subscriber::EnvFilter::new(format!("{level},sqlx=warn,hyper=warn,rustls=error"))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}

pub(crate) async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Server(a) => server(a).await,
        Command::Config(ConfigCmd::Check { file }) => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return local_err(format!("cannot read {}: {e}", file.display())),
            };
            if palisade_gateway::config::looks_like_gateway(&text) {
                return match palisade_gateway::server::read_config(&file, &|k| {
                    std::env::var(k).ok()
                }) {
                    Ok(_) => {
                        println!("{}: OK (gateway)", file.display());
                        0
                    }
                    Err(errs) => {
                        for e in errs.to_string().lines() {
                            eprintln!("{}: {e}", file.display());
                        }
                        1
                    }
                };
            }
            match palisade_server::config::parse(&text, &|k| std::env::var(k).ok()) {
                Ok(_) => {
                    println!("{}: OK", file.display());
                    0
                }
                Err(errs) => {
                    for e in &errs.0 {
                        eprintln!("{}: {e}", file.display());
                    }
                    1
                }
            }
        }
        Command::Status(r) => {
            let c = tryc!(client(&r));
            let reply = call!(c, "GET", "sys/seal-status", None);
            let mut d = reply.data();
            // Vault's `status`: the HA part once unsealed
            let leader = if d["sealed"] == json!(false) {
                Some(call!(c, "GET", "sys/leader", None).data())
            } else {
                None
            };
            let ha_enabled = leader
                .as_ref()
                .is_some_and(|l| l["ha_enabled"] == json!(true));
            let mut rows = vec![
                ("Seal Type".into(), output::scalar(&d["type"])),
                ("Initialized".into(), output::scalar(&d["initialized"])),
                ("Sealed".into(), output::scalar(&d["sealed"])),
                ("Total Shares".into(), output::scalar(&d["n"])),
                ("Threshold".into(), output::scalar(&d["t"])),
                (
                    "Unseal Progress".into(),
                    format!("{}/{}", d["progress"], d["t"]),
                ),
                ("Version".into(), output::scalar(&d["version"])),
                ("Storage Type".into(), output::scalar(&d["storage_type"])),
                ("HA Enabled".into(), ha_enabled.to_string()),
            ];
            if let (true, Some(l)) = (ha_enabled, &leader) {
                let active = l["is_self"] == json!(true);
                rows.push((
                    "HA Mode".into(),
                    if active { "active" } else { "standby" }.into(),
                ));
                rows.push((
                    "Active Node Address".into(),
                    output::scalar(&l["leader_address"]),
                ));
                if let (Some(obj), Some(lo)) = (d.as_object_mut(), l.as_object()) {
                    for k in [
                        "is_self",
                        "active_time",
                        "leader_address",
                        "leader_cluster_address",
                    ] {
                        if let Some(v) = lo.get(k) {
                            obj.insert(k.into(), v.clone());
                        }
                    }
                }
            }
            if let Some(obj) = d.as_object_mut() {
                obj.insert("ha_enabled".into(), json!(ha_enabled));
            }
            output::print(r.format, &d, rows);
            if d["sealed"] == json!(true) { 2 } else { 0 }
        }
        Command::Login { token, remote } => {
            let token = match token.as_deref() {
                None | Some("-") => match read_token() {
                    Ok(t) => t,
                    Err(e) => return local_err(format!("cannot read the token: {e}")),
                },
                Some(t) => {
                    eprintln!(
                        "warning: a token given as an argument is visible in the process list; run `palisade login` and type or pipe it instead"
                    );
                    t.to_string()
                }
            };
            if token.is_empty() {
                return local_err("no token given");
            }
            let mut c = tryc!(client(&remote));
            c.set_token(Some(token.clone()));
            let reply = call!(c, "GET", "auth/token/lookup-self", None);
            let Ok(home) = std::env::var("HOME") else {
                return local_err("HOME is not set");
            };
            let path = PathBuf::from(home).join(".palisade-token");
            if let Err(e) = write_private(&path, token.as_bytes()) {
                return local_err(format!("cannot write {}: {e}", path.display()));
            }
            let d = reply.data();
            println!(
                "Success! You are now authenticated. Token stored in {}.",
                path.display()
            );
            output::print(
                remote.format,
                &d,
                vec![
                    ("token_accessor".into(), output::scalar(&d["accessor"])),
                    ("token_policies".into(), output::scalar(&d["policies"])),
                ],
            );
            0
        }
        Command::Operator(cmd) => operator(cmd).await,
        Command::Kv(cmd) => kv(cmd).await,
        Command::Token(cmd) => token_cmd(cmd).await,
        Command::Policy(cmd) => policy(cmd).await,
        Command::Secrets(cmd) => secrets(cmd).await,
        Command::Read {
            path,
            field,
            remote,
        } => generic(&remote, "GET", &path, None, field).await,
        Command::Write {
            path,
            pairs: kv,
            field,
            remote,
        } => {
            let data = tryc!(pairs(&kv));
            generic(&remote, "PUT", &path, Some(Value::Object(data)), field).await
        }
        Command::List { path, remote } => {
            let c = tryc!(client(&remote));
            let r = call!(c, "LIST", format!("{}/", path.trim_end_matches('/')), None);
            output::list(remote.format, &r.data()["keys"]);
            0
        }
        Command::Delete { path, remote } => {
            let c = tryc!(client(&remote));
            call!(c, "DELETE", path, None);
            println!("Success! Data deleted (if it existed) at: {path}");
            0
        }
        Command::Transit(cmd) => transit(cmd).await,
        Command::Pki(cmd) => pki(cmd).await,
        Command::Lease(cmd) => lease(cmd).await,
        Command::Oauth(OauthCmd::Client(cmd)) => oauth_client(cmd).await,
        Command::Fetch(args) => fetch(args).await,
        Command::Audit(cmd) => audit(cmd).await,
        Command::Gateway(a) => gateway(a).await,
    }
}

/// Write `bytes` to `path` as a new 0600 file: written to a fresh temporary
/// file (O_EXCL, so nothing planted there is followed) in the same directory,
/// then renamed over `path`. A symlink at `path` is refused rather than
/// followed, and an existing file's looser mode is not kept.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(m) = std::fs::symlink_metadata(path)
        && !m.file_type().is_file()
    {
        return Err(std::io::Error::other(
            "it is a symlink or not a regular file; remove it first",
        ));
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}", palisade_core::uuid_v4()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The token for `login`, from standard input: one line, whitespace trimmed.
/// On a terminal the prompt goes to stderr and echo is off while typing.
fn read_token() -> std::io::Result<String> {
    read_secret("Token (will be hidden): ")
}

/// A secret from standard input: one line, whitespace trimmed. On a
/// terminal `prompt` goes to stderr and echo is off while typing.
fn read_secret(prompt: &str) -> std::io::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut echo_off = false;
    if tty {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        echo_off = stty("-echo");
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if echo_off {
        stty("echo");
        eprintln!();
    }
    r?;
    Ok(line.trim().to_string())
}

async fn server(a: ServerArgs) -> u8 {
    if a.dev {
        if a.config.is_some() {
            return local_err("--dev and --config cannot be combined");
        }
        init_tracing("info", false);
        let opts = palisade_server::DevOptions {
            root_token_id: a.dev_root_token_id,
            listen: a.dev_listen_address,
            audit_file: a.dev_audit_file,
        };
        return match palisade_server::run_dev(opts, shutdown_signal()).await {
            Ok(()) => 0,
            Err(e) => local_err(format!("error: {e}")),
        };
    }
    let Some(file) = a.config else {
        return local_err("either --dev or --config FILE is required");
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => return local_err(format!("cannot read {}: {e}", file.display())),
    };
    let cfg = match palisade_server::config::parse(&text, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{}: {e}", file.display());
            }
            return 1;
        }
    };
    init_tracing(
        &cfg.log_level,
        cfg.log_format == palisade_server::config::LogFormat::Json,
    );
    match palisade_server::run(cfg, shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => local_err(format!("error: {e}")),
    }
}

async fn operator(cmd: OperatorCmd) -> u8 {
    match cmd {
        OperatorCmd::Init {
            key_shares,
            key_threshold,
            remote,
        } => {
            let c = tryc!(client(&remote));
            let r = call!(
                c,
                "PUT",
                "sys/init",
                Some(&json!({"secret_shares": key_shares, "secret_threshold": key_threshold}))
            );
            let d = r.data();
            match remote.format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default())
                }
                Format::Table => {
                    if let Some(keys) = d["keys_base64"].as_array() {
                        for (i, k) in keys.iter().enumerate() {
                            println!("Unseal Key {}: {}", i + 1, output::scalar(k));
                        }
                    }
                    println!(
                        "\nInitial Root Token: {}\n",
                        output::scalar(&d["root_token"])
                    );
                    println!(
                        "Palisade initialized with {key_shares} key shares and a key threshold of {key_threshold}."
                    );
                }
            }
            0
        }
        OperatorCmd::Unseal { key, reset, remote } => {
            let c = tryc!(client(&remote));
            let body = if reset {
                json!({"reset": true})
            } else {
                let key = match key {
                    Some(k) => k,
                    None => {
                        let mut s = String::new();
                        if std::io::stdin().read_line(&mut s).is_err() {
                            return local_err("cannot read key from stdin");
                        }
                        s.trim().to_string()
                    }
                };
                json!({"key": key})
            };
            let r = call!(c, "PUT", "sys/unseal", Some(&body));
            let d = r.data();
            output::print(
                remote.format,
                &d,
                vec![
                    ("Sealed".into(), output::scalar(&d["sealed"])),
                    (
                        "Unseal Progress".into(),
                        format!("{}/{}", d["progress"], d["t"]),
                    ),
                ],
            );
            0
        }
        OperatorCmd::Seal(remote) => {
            let c = tryc!(client(&remote));
            call!(c, "PUT", "sys/seal", None);
            println!("Success! Palisade is sealed.");
            0
        }
        OperatorCmd::Rotate(remote) => {
            let c = tryc!(client(&remote));
            call!(c, "PUT", "sys/rotate", None);
            let r = call!(c, "GET", "sys/key-status", None);
            let d = r.data();
            output::print(
                remote.format,
                &d,
                vec![
                    ("Key Term".into(), output::scalar(&d["term"])),
                    ("Install Time".into(), output::scalar(&d["install_time"])),
                ],
            );
            0
        }
        OperatorCmd::Rekey(a) => rekey(a).await,
        OperatorCmd::GenerateRoot(a) => generate_root(a).await,
        OperatorCmd::KeyStatus(remote) => {
            let c = tryc!(client(&remote));
            let r = call!(c, "GET", "sys/key-status", None);
            let d = r.data();
            output::print(
                remote.format,
                &d,
                vec![
                    ("Key Term".into(), output::scalar(&d["term"])),
                    ("Install Time".into(), output::scalar(&d["install_time"])),
                ],
            );
            0
        }
    }
}

fn kvp(p: &KvPath, part: &str) -> String {
    format!(
        "{}/{}/{}",
        p.mount.trim_matches('/'),
        part,
        p.path.trim_matches('/')
    )
}

async fn kv(cmd: KvCmd) -> u8 {
    match cmd {
        KvCmd::Get {
            p,
            version,
            field,
            remote,
        } => {
            let c = tryc!(client(&remote));
            let path = if version > 0 {
                format!("{}?version={version}", kvp(&p, "data"))
            } else {
                kvp(&p, "data")
            };
            let r = call!(c, "GET", path, None);
            let d = r.data();
            if let Some(f) = field {
                return match d["data"].get(&f) {
                    Some(v) => {
                        println!("{}", output::scalar(v));
                        0
                    }
                    None => local_err(format!("field {f:?} not present in secret")),
                };
            }
            match remote.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(r.body.as_ref().unwrap_or(&Value::Null))
                        .unwrap_or_default()
                ),
                Format::Table => {
                    println!("======= Metadata =======");
                    print!("{}", output::table(&output::object_rows(&d["metadata"])));
                    println!("\n====== Data ======");
                    print!("{}", output::table(&output::object_rows(&d["data"])));
                }
            }
            0
        }
        KvCmd::Put {
            p,
            pairs: kv,
            cas,
            remote,
        } => {
            let data = tryc!(pairs(&kv));
            if data.is_empty() {
                return local_err("must supply data (key=value pairs)");
            }
            let c = tryc!(client(&remote));
            let mut body = json!({"data": data});
            if let Some(cas) = cas {
                body["options"] = json!({"cas": cas});
            }
            let r = call!(c, "PUT", kvp(&p, "data"), Some(&body));
            let d = r.data();
            output::print(remote.format, &d, output::object_rows(&d));
            0
        }
        KvCmd::Patch {
            p,
            pairs: kv,
            remote,
        } => {
            let data = tryc!(pairs(&kv));
            let c = tryc!(client(&remote));
            let r = call!(c, "PATCH", kvp(&p, "data"), Some(&json!({"data": data})));
            let d = r.data();
            output::print(remote.format, &d, output::object_rows(&d));
            0
        }
        KvCmd::Delete {
            p,
            versions,
            remote,
        } => {
            let c = tryc!(client(&remote));
            if versions.is_empty() {
                call!(c, "DELETE", kvp(&p, "data"), None);
            } else {
                call!(
                    c,
                    "POST",
                    kvp(&p, "delete"),
                    Some(&json!({"versions": versions}))
                );
            }
            println!(
                "Success! Data deleted (if it existed) at: {}",
                kvp(&p, "data")
            );
            0
        }
        KvCmd::Undelete {
            p,
            versions,
            remote,
        } => {
            let c = tryc!(client(&remote));
            call!(
                c,
                "POST",
                kvp(&p, "undelete"),
                Some(&json!({"versions": versions}))
            );
            println!("Success! Data written to: {}", kvp(&p, "undelete"));
            0
        }
        KvCmd::Destroy {
            p,
            versions,
            remote,
        } => {
            let c = tryc!(client(&remote));
            call!(
                c,
                "POST",
                kvp(&p, "destroy"),
                Some(&json!({"versions": versions}))
            );
            println!("Success! Data written to: {}", kvp(&p, "destroy"));
            0
        }
        KvCmd::List { p, remote } => {
            let c = tryc!(client(&remote));
            let path = format!("{}/", kvp(&p, "metadata").trim_end_matches('/'));
            let r = call!(c, "LIST", path, None);
            output::list(remote.format, &r.data()["keys"]);
            0
        }
        KvCmd::Metadata(m) => match m {
            KvMetaCmd::Get { p, remote } => {
                let c = tryc!(client(&remote));
                let r = call!(c, "GET", kvp(&p, "metadata"), None);
                let d = r.data();
                output::print(remote.format, &d, output::object_rows(&d));
                0
            }
            KvMetaCmd::Put {
                p,
                max_versions,
                cas_required,
                delete_version_after,
                custom_metadata,
                remote,
            } => {
                let mut body = Map::new();
                if let Some(v) = max_versions {
                    body.insert("max_versions".into(), json!(v));
                }
                if let Some(v) = cas_required {
                    body.insert("cas_required".into(), json!(v));
                }
                if let Some(v) = delete_version_after {
                    body.insert("delete_version_after".into(), json!(v));
                }
                if !custom_metadata.is_empty() {
                    body.insert(
                        "custom_metadata".into(),
                        Value::Object(tryc!(pairs(&custom_metadata))),
                    );
                }
                let c = tryc!(client(&remote));
                call!(c, "POST", kvp(&p, "metadata"), Some(&Value::Object(body)));
                println!("Success! Data written to: {}", kvp(&p, "metadata"));
                0
            }
            KvMetaCmd::Delete { p, remote } => {
                let c = tryc!(client(&remote));
                call!(c, "DELETE", kvp(&p, "metadata"), None);
                println!(
                    "Success! Data deleted (if it existed) at: {}",
                    kvp(&p, "metadata")
                );
                0
            }
        },
    }
}

fn auth_rows(a: &Value) -> Vec<(String, String)> {
    vec![
        ("token".into(), output::scalar(&a["client_token"])),
        ("token_accessor".into(), output::scalar(&a["accessor"])),
        ("token_duration".into(), format!("{}s", a["lease_duration"])),
        ("token_renewable".into(), output::scalar(&a["renewable"])),
        (
            "token_policies".into(),
            output::scalar(&a["token_policies"]),
        ),
    ]
}

async fn token_cmd(cmd: TokenCmd) -> u8 {
    match cmd {
        TokenCmd::Create {
            policies,
            ttl,
            explicit_max_ttl,
            period,
            use_limit,
            orphan,
            no_default_policy,
            display_name,
            remote,
        } => {
            let c = tryc!(client(&remote));
            let mut body = Map::new();
            if !policies.is_empty() {
                body.insert("policies".into(), json!(policies));
            }
            for (k, v) in [
                ("ttl", ttl),
                ("explicit_max_ttl", explicit_max_ttl),
                ("period", period),
                ("display_name", display_name),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if let Some(n) = use_limit {
                body.insert("num_uses".into(), json!(n));
            }
            if no_default_policy {
                body.insert("no_default_policy".into(), json!(true));
            }
            let path = if orphan {
                "auth/token/create-orphan"
            } else {
                "auth/token/create"
            };
            let r = call!(c, "POST", path, Some(&Value::Object(body)));
            let body = r.body.unwrap_or(Value::Null);
            output::print(remote.format, &body, auth_rows(&body["auth"]));
            0
        }
        TokenCmd::Lookup {
            token,
            accessor,
            remote,
        } => {
            let c = tryc!(client(&remote));
            let r = match (token, accessor) {
                (Some(a), true) => call!(
                    c,
                    "POST",
                    "auth/token/lookup-accessor",
                    Some(&json!({"accessor": a}))
                ),
                (Some(t), false) => {
                    call!(c, "POST", "auth/token/lookup", Some(&json!({"token": t})))
                }
                (None, true) => return local_err("an accessor is required with --accessor"),
                (None, false) => call!(c, "GET", "auth/token/lookup-self", None),
            };
            let mut d = r.data();
            if let Some(o) = d.as_object_mut() {
                o.remove("id");
            }
            output::print(remote.format, &d, output::object_rows(&d));
            0
        }
        TokenCmd::Renew {
            token,
            increment,
            remote,
        } => {
            let c = tryc!(client(&remote));
            let mut body = Map::new();
            if let Some(i) = increment {
                body.insert("increment".into(), json!(i));
            }
            let r = match token {
                Some(t) => {
                    body.insert("token".into(), json!(t));
                    call!(c, "POST", "auth/token/renew", Some(&Value::Object(body)))
                }
                None => call!(
                    c,
                    "POST",
                    "auth/token/renew-self",
                    Some(&Value::Object(body))
                ),
            };
            let body = r.body.unwrap_or(Value::Null);
            output::print(remote.format, &body, auth_rows(&body["auth"]));
            0
        }
        TokenCmd::Revoke {
            token,
            accessor,
            self_,
            remote,
        } => {
            let c = tryc!(client(&remote));
            match (token, accessor, self_) {
                (_, _, true) => call!(c, "POST", "auth/token/revoke-self", None),
                (Some(a), true, false) => call!(
                    c,
                    "POST",
                    "auth/token/revoke-accessor",
                    Some(&json!({"accessor": a}))
                ),
                (Some(t), false, false) => {
                    call!(c, "POST", "auth/token/revoke", Some(&json!({"token": t})))
                }
                (None, _, false) => return local_err("a token (or --self) is required"),
            };
            println!("Success! Revoked token (if it existed)");
            0
        }
    }
}

async fn policy(cmd: PolicyCmd) -> u8 {
    match cmd {
        PolicyCmd::List(remote) => {
            let c = tryc!(client(&remote));
            let r = call!(c, "GET", "sys/policy", None);
            let d = r.data();
            match remote.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&d["policies"]).unwrap_or_default()
                ),
                Format::Table => {
                    for p in d["policies"].as_array().cloned().unwrap_or_default() {
                        println!("{}", output::scalar(&p));
                    }
                }
            }
            0
        }
        PolicyCmd::Read { name, remote } => {
            let c = tryc!(client(&remote));
            let r = call!(c, "GET", format!("sys/policy/{name}"), None);
            let d = r.data();
            match remote.format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default())
                }
                Format::Table => println!("{}", output::scalar(&d["rules"])),
            }
            0
        }
        PolicyCmd::Write { name, file, remote } => {
            let text = if file == "-" {
                let mut s = String::new();
                if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
                    return local_err(e);
                }
                s
            } else {
                match std::fs::read_to_string(&file) {
                    Ok(t) => t,
                    Err(e) => return local_err(format!("cannot read {file}: {e}")),
                }
            };
            let c = tryc!(client(&remote));
            call!(
                c,
                "PUT",
                format!("sys/policy/{name}"),
                Some(&json!({"policy": text}))
            );
            println!("Success! Uploaded policy: {name}");
            0
        }
        PolicyCmd::Delete { name, remote } => {
            let c = tryc!(client(&remote));
            call!(c, "DELETE", format!("sys/policy/{name}"), None);
            println!("Success! Deleted policy: {name}");
            0
        }
        PolicyCmd::Fmt { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return local_err(format!("cannot read {}: {e}", file.display())),
            };
            match palisade_policy::format_hcl(&text) {
                Ok(f) => {
                    if let Err(e) = std::fs::write(&file, f) {
                        return local_err(format!("cannot write {}: {e}", file.display()));
                    }
                    println!("Success! Formatted policy: {}", file.display());
                    0
                }
                Err(e) => local_err(format!("{}: {e}", file.display())),
            }
        }
    }
}

/// `read` and `write`: the answer's `data` as a table or JSON, one field
/// raw, or Vault's "Success!" line for an answer without data.
async fn generic(
    remote: &Remote,
    method: &str,
    path: &str,
    body: Option<Value>,
    field: Option<String>,
) -> u8 {
    let c = tryc!(client(remote));
    let r = call!(c, method, path, body.as_ref());
    let d = r.data();
    if let Some(f) = field {
        return match d.get(&f) {
            Some(v) => {
                println!("{}", output::scalar(v));
                0
            }
            None => local_err(format!("field {f:?} not present in the response")),
        };
    }
    if r.body.is_none() {
        println!("Success! Data written to: {path}");
        return 0;
    }
    output::print(remote.format, &d, with_lease_rows(r.body.as_ref(), &d));
    0
}

/// Vault's `lease_id`, `lease_duration` and `lease_renewable` rows first,
/// when the answer carries a lease (a dynamic secret).
fn with_lease_rows(body: Option<&Value>, d: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Some(b) = body
        && let Some(id) = b["lease_id"].as_str().filter(|id| !id.is_empty())
    {
        rows.push(("lease_id".to_owned(), id.to_owned()));
        rows.push((
            "lease_duration".to_owned(),
            palisade_server::token::format_duration(b["lease_duration"].as_i64().unwrap_or(0)),
        ));
        rows.push((
            "lease_renewable".to_owned(),
            output::scalar(&b["renewable"]),
        ));
    }
    rows.extend(output::object_rows(d));
    rows
}

async fn lease(cmd: LeaseCmd) -> u8 {
    match cmd {
        LeaseCmd::Lookup { lease_id, remote } => {
            let c = tryc!(client(&remote));
            let r = call!(
                c,
                "PUT",
                "sys/leases/lookup",
                Some(&json!({ "lease_id": lease_id }))
            );
            let d = r.data();
            output::print(remote.format, &d, output::object_rows(&d));
            0
        }
        LeaseCmd::Renew {
            lease_id,
            increment,
            remote,
        } => {
            let mut body = json!({ "lease_id": lease_id });
            if let Some(i) = increment {
                body["increment"] = json!(i);
            }
            let c = tryc!(client(&remote));
            let r = call!(c, "PUT", "sys/leases/renew", Some(&body));
            let b = r.body.clone().unwrap_or(Value::Null);
            output::print(remote.format, &b, with_lease_rows(Some(&b), &Value::Null));
            0
        }
        LeaseCmd::Revoke {
            lease_id,
            prefix,
            force,
            remote,
        } => {
            let c = tryc!(client(&remote));
            let (path, body) = match (prefix, force) {
                (true, true) => (format!("sys/leases/revoke-force/{lease_id}"), None),
                (true, false) => (format!("sys/leases/revoke-prefix/{lease_id}"), None),
                _ => (
                    "sys/leases/revoke".to_owned(),
                    Some(json!({ "lease_id": lease_id })),
                ),
            };
            call!(c, "PUT", path, body.as_ref());
            println!("Success! Revoked lease: {lease_id}");
            0
        }
    }
}

async fn oauth_client(cmd: OauthClientCmd) -> u8 {
    match cmd {
        OauthClientCmd::Create {
            name,
            scopes,
            audiences,
            auth_method,
            jwks,
            ttl,
            remote,
        } => {
            let split = |s: &str| -> Vec<String> {
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            let mut body = json!({ "allowed_audiences": split(&audiences) });
            if let Some(s) = scopes {
                body["allowed_scopes"] = json!(split(&s));
            }
            if let Some(m) = auth_method {
                body["token_endpoint_auth_method"] = json!(m);
            }
            if let Some(t) = ttl {
                body["access_token_ttl"] = json!(t);
            }
            if let Some(p) = jwks {
                match std::fs::read_to_string(&p) {
                    Ok(text) => body["jwks"] = json!(text),
                    Err(e) => return local_err(format!("cannot read {}: {e}", p.display())),
                }
            }
            let c = tryc!(client(&remote));
            let r = call!(
                c,
                "POST",
                format!("identity/oidc/client/{name}"),
                Some(&body)
            );
            let d = r.data();
            output::print(remote.format, &d, output::object_rows(&d));
            0
        }
        OauthClientCmd::List { remote } => {
            let c = tryc!(client(&remote));
            let r = call!(c, "LIST", "identity/oidc/client", None::<&Value>);
            output::list(remote.format, &r.data()["keys"]);
            0
        }
        OauthClientCmd::RotateSecret { name, remote } => {
            let c = tryc!(client(&remote));
            let r = call!(
                c,
                "POST",
                format!("identity/oidc/client/{name}/rotate-secret"),
                Some(&json!({}))
            );
            let d = r.data();
            output::print(remote.format, &d, output::object_rows(&d));
            0
        }
        OauthClientCmd::Delete { name, remote } => {
            let c = tryc!(client(&remote));
            call!(
                c,
                "DELETE",
                format!("identity/oidc/client/{name}"),
                None::<&Value>
            );
            println!("Success! Deleted client: {name}");
            0
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn transit(cmd: TransitCmd) -> u8 {
    use base64::Engine as _;
    match cmd {
        TransitCmd::Encrypt {
            key,
            mount,
            context,
            remote,
        } => {
            let mut input = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut input) {
                return local_err(format!("cannot read standard input: {e}"));
            }
            let mut body = json!({ "plaintext": b64(&input) });
            if let Some(c) = context {
                body["context"] = json!(b64(c.as_bytes()));
            }
            let c = tryc!(client(&remote));
            let path = format!("{}/encrypt/{key}", mount.trim_matches('/'));
            let r = call!(c, "POST", path, Some(&body));
            match r.data()["ciphertext"].as_str() {
                Some(ct) => {
                    println!("{ct}");
                    0
                }
                None => local_err("the server's answer has no ciphertext"),
            }
        }
        TransitCmd::Decrypt {
            key,
            ciphertext,
            mount,
            context,
            remote,
        } => {
            let mut body = json!({ "ciphertext": ciphertext });
            if let Some(c) = context {
                body["context"] = json!(b64(c.as_bytes()));
            }
            let c = tryc!(client(&remote));
            let path = format!("{}/decrypt/{key}", mount.trim_matches('/'));
            let r = call!(c, "POST", path, Some(&body));
            let plain = r.data()["plaintext"]
                .as_str()
                .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok());
            match plain {
                Some(p) => match std::io::Write::write_all(&mut std::io::stdout(), &p) {
                    Ok(()) => 0,
                    Err(e) => local_err(format!("cannot write standard output: {e}")),
                },
                None => local_err("the server's answer has no plaintext"),
            }
        }
    }
}

/// Write `text` to `dir/name` with `mode`: a new file beside it, then a
/// rename, so a reader never sees half a file and a symlink at the name is
/// replaced, never followed.
fn write_replacing(dir: &Path, name: &str, text: &str, mode: u32) -> std::io::Result<()> {
    let tmp = stage(dir, name, text, mode)?;
    let done = std::fs::rename(&tmp, dir.join(name));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// A new file beside `dir/name` holding `text`, synced, with exactly `mode`
/// (set after creation, so the process's umask does not narrow it); the
/// caller renames it into place or removes it.
fn stage(dir: &Path, name: &str, text: &str, mode: u32) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let tmp = dir.join(format!(".{name}.{}", palisade_core::uuid_v4()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A file name `fetch` may write in its directory: one plain component.
fn fetch_file_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid file name {name:?}: letters, digits, '-', '_' and '.', not starting with '.'"
        ))
    }
}

/// One FILE=PATH[#FIELD] of `fetch`.
fn fetch_spec(spec: &str) -> Result<(String, String, Option<String>), String> {
    let (file, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: expected FILE=PATH[#FIELD]"))?;
    fetch_file_name(file)?;
    let (path, field) = match rest.split_once('#') {
        Some((p, f)) if !f.is_empty() => (p, Some(f.to_string())),
        Some(_) => return Err(format!("{spec:?}: an empty #FIELD")),
        None => (rest, None),
    };
    let path = path.trim_matches('/');
    // a URL parser reads `\\` as `/` (and then resolves `..`): refused, as
    // control characters are, so PATH is exactly the API path read
    if path.is_empty()
        || path.split('/').any(|seg| {
            seg.is_empty()
                || seg == "."
                || seg == ".."
                || seg.contains(['?', '#', '%', '\\'])
                || seg.chars().any(char::is_control)
        })
    {
        return Err(format!("{spec:?}: invalid path"));
    }
    Ok((file.to_string(), path.to_string(), field))
}

async fn fetch(args: FetchArgs) -> u8 {
    let digits = args.mode.strip_prefix("0o").unwrap_or(&args.mode);
    let parsed = if !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        u32::from_str_radix(digits, 8).ok()
    } else {
        None
    };
    let mode = match parsed {
        Some(m) if m & !0o640 == 0 && m & 0o400 != 0 => m,
        _ => {
            return local_err(
                "--mode: octal, owner-readable, at most 0640 (no write or execute bits for anyone but the owner's write)",
            );
        }
    };
    let mut specs = Vec::new();
    for s in &args.secrets {
        specs.push(tryc!(fetch_spec(s).map_err(local_err)));
    }
    if let Some(t) = &args.token_out {
        if args.method == "token" {
            return local_err("--token-out keeps a login's token: use --method jwt or approle");
        }
        tryc!(fetch_file_name(t).map_err(local_err));
        if specs.iter().any(|(f, _, _)| f == t) {
            return local_err(format!("{t:?} is both --token-out and a secret's file"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (f, _, _) in &specs {
        if !seen.insert(f.clone()) {
            return local_err(format!("{f:?} is named twice"));
        }
    }
    if !args.out.is_dir() {
        return local_err(format!("--out {}: not a directory", args.out.display()));
    }
    let mut c = tryc!(client(&args.remote));
    // log in (nothing is written if this fails)
    let login_token: Option<String> = match args.method.as_str() {
        "token" => {
            if token().is_none() {
                return local_err(
                    "--method token: no token in PALISADE_TOKEN, VAULT_TOKEN or ~/.palisade-token",
                );
            }
            None
        }
        m => {
            let mount = args.mount.clone().unwrap_or_else(|| m.to_string());
            let body = if m == "jwt" {
                let Some(role) = &args.role else {
                    return local_err("--method jwt needs --role");
                };
                let jwt = match std::fs::read_to_string(&args.jwt_file) {
                    Ok(j) => j.trim().to_string(),
                    Err(e) => {
                        return local_err(format!(
                            "cannot read {}: {}",
                            args.jwt_file.display(),
                            e.kind()
                        ));
                    }
                };
                json!({ "role": role, "jwt": jwt })
            } else {
                let (Some(role_id), Some(file)) = (&args.role_id, &args.secret_id_file) else {
                    return local_err("--method approle needs --role-id and --secret-id-file");
                };
                let secret_id = match std::fs::read_to_string(file) {
                    Ok(s) => s.trim().to_string(),
                    Err(e) => {
                        return local_err(format!("cannot read {}: {}", file.display(), e.kind()));
                    }
                };
                json!({ "role_id": role_id, "secret_id": secret_id })
            };
            c.set_token(None);
            let r = call!(
                c,
                "POST",
                format!("auth/{}/login", mount.trim_matches('/')),
                Some(&body)
            );
            let Some(t) = r
                .body
                .as_ref()
                .and_then(|b| b["auth"]["client_token"].as_str())
            else {
                return local_err("the login answered no auth.client_token");
            };
            c.set_token(Some(t.to_string()));
            Some(t.to_string())
        }
    };
    let logged_in = login_token.is_some();
    // read everything first: a failure writes nothing
    let mut files = Vec::new();
    let mut failed = None;
    for (file, path, field) in &specs {
        match c.request("GET", path, None).await {
            Ok(r) => {
                let body = r.body.unwrap_or(Value::Null);
                let data = &body["data"];
                // KV v2 wraps the secret in data.data beside data.metadata
                // (an object with the version): only a read of a `data/`
                // path is taken for one, so a KV v1 secret that happens to
                // have `data` and `metadata` keys is written as it is
                let kv2 = path.split('/').nth(1) == Some("data")
                    && data
                        .get("metadata")
                        .is_some_and(|m| m.get("version").is_some_and(Value::is_u64))
                    && data.get("data").is_some();
                let data = if kv2 { &data["data"] } else { data };
                let text = match field {
                    None if data.is_object() => format!("{data}\n"),
                    None => {
                        failed = Some(format!("{path}: no data"));
                        break;
                    }
                    Some(f) => match &data[f.as_str()] {
                        Value::Null => {
                            failed = Some(format!("{path}: no field {f:?}"));
                            break;
                        }
                        Value::String(v) => v.clone(),
                        other => other.to_string(),
                    },
                };
                files.push((file.clone(), text));
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let token_text = if failed.is_none() && args.token_out.is_some() {
        login_token.map(|t| format!("{t}\n"))
    } else {
        None
    };
    let mut code = 0;
    if let Some(e) = failed {
        eprintln!("{e}");
        code = 2;
    } else {
        // every file staged (written, synced) before any is renamed into
        // place: a failure to write one leaves the others as they were
        let mut all: Vec<(&str, &str)> = files
            .iter()
            .map(|(f, t)| (f.as_str(), t.as_str()))
            .collect();
        if let (Some(name), Some(t)) = (&args.token_out, &token_text) {
            all.push((name.as_str(), t.as_str()));
        }
        // a rename cannot replace a directory: found before anything is written
        for (name, _) in &all {
            if std::fs::symlink_metadata(args.out.join(name)).is_ok_and(|m| m.is_dir()) {
                eprintln!(
                    "cannot write {}: a directory is in the way",
                    args.out.join(name).display()
                );
                code = 1;
            }
        }
        let mut staged = Vec::new();
        for (name, text) in all.iter().filter(|_| code == 0) {
            match stage(&args.out, name, text, mode) {
                Ok(tmp) => staged.push((tmp, *name)),
                Err(e) => {
                    eprintln!("cannot write {}: {e}", args.out.join(name).display());
                    code = 1;
                    break;
                }
            }
        }
        if code == 0 {
            for (tmp, name) in &staged {
                if let Err(e) = std::fs::rename(tmp, args.out.join(name)) {
                    eprintln!("cannot write {}: {e}", args.out.join(name).display());
                    code = 1;
                    break;
                }
            }
        }
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
        if code == 0 {
            eprintln!(
                "wrote {} file(s) to {}{}",
                all.len(),
                args.out.display(),
                if token_text.is_some() {
                    " (the token kept valid)"
                } else {
                    ""
                }
            );
        }
    }
    // the login's token is of no further use unless the application keeps it
    if logged_in
        && (token_text.is_none() || code != 0)
        && let Err(e) = c
            .request("POST", "auth/token/revoke-self", Some(&json!({})))
            .await
    {
        // a token left valid is a credential nobody watches: say so and fail
        let why = match &e {
            ClientError::Api { status, errors, .. } => format!("{status} {}", errors.join("; ")),
            other => other.to_string(),
        };
        eprintln!(
            "the login's token could not be revoked ({why}): it stays valid until its TTL ends; \
             give the role the default policy (or `update` on auth/token/revoke-self)"
        );
        if code == 0 {
            code = 2;
        }
    }
    code
}

async fn pki(cmd: PkiCmd) -> u8 {
    match cmd {
        PkiCmd::Issue {
            role,
            name,
            out,
            mount,
            ttl,
            alt_names,
            ip_sans,
            uri_sans,
            remote,
        } => {
            if !out.is_dir() {
                return local_err(format!("{} is not a directory", out.display()));
            }
            let mut body = json!({ "common_name": name });
            for (k, v) in [
                ("ttl", ttl),
                ("alt_names", alt_names),
                ("ip_sans", ip_sans),
                ("uri_sans", uri_sans),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let c = tryc!(client(&remote));
            let path = format!("{}/issue/{role}", mount.trim_matches('/'));
            let r = call!(c, "POST", path, Some(&body));
            let d = r.data();
            let (Some(cert), Some(key)) = (d["certificate"].as_str(), d["private_key"].as_str())
            else {
                return local_err("the server's answer has no certificate or key");
            };
            let chain: String = d["ca_chain"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|p| format!("{}\n", p.trim_end()))
                        .collect()
                })
                .unwrap_or_default();
            for (file, text, mode) in [
                ("key.pem", format!("{}\n", key.trim_end()), 0o600),
                ("cert.pem", format!("{}\n", cert.trim_end()), 0o644),
                ("chain.pem", chain, 0o644),
            ] {
                if let Err(e) = write_replacing(&out, file, &text, mode) {
                    return local_err(format!("cannot write {}: {e}", out.join(file).display()));
                }
            }
            println!(
                "Success! Wrote cert.pem, key.pem and chain.pem to {} (serial {}, expires {})",
                out.display(),
                d["serial_number"].as_str().unwrap_or_default(),
                d["expiration"]
            );
            0
        }
    }
}

async fn secrets(cmd: SecretsCmd) -> u8 {
    match cmd {
        SecretsCmd::Enable {
            engine,
            path,
            version,
            description,
            remote,
        } => {
            let c = tryc!(client(&remote));
            let path = path.unwrap_or_else(|| engine.clone());
            let mut body = json!({"type": engine});
            if let Some(v) = version {
                body["options"] = json!({"version": v});
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            call!(
                c,
                "POST",
                format!("sys/mounts/{}", path.trim_matches('/')),
                Some(&body)
            );
            println!(
                "Success! Enabled the {engine} secrets engine at: {}/",
                path.trim_matches('/')
            );
            0
        }
        SecretsCmd::Disable { path, remote } => {
            let c = tryc!(client(&remote));
            call!(
                c,
                "DELETE",
                format!("sys/mounts/{}", path.trim_matches('/')),
                None
            );
            println!(
                "Success! Disabled the secrets engine (if it existed) at: {}/",
                path.trim_matches('/')
            );
            0
        }
        SecretsCmd::List(remote) => {
            let c = tryc!(client(&remote));
            let r = call!(c, "GET", "sys/mounts", None);
            let d = r.data();
            let rows = d
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                format!(
                                    "{}    {}",
                                    output::scalar(&v["type"]),
                                    output::scalar(&v["description"])
                                ),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            output::print(remote.format, &d, rows);
            0
        }
    }
}

async fn audit(cmd: AuditCmd) -> u8 {
    match cmd {
        AuditCmd::Verify {
            file,
            head,
            device,
            after,
            remote,
        } => {
            let parse_head = |flag: &str, v: &str| -> Result<palisade_audit::Head, u8> {
                let (seq, hash) = v
                    .split_once(':')
                    .ok_or_else(|| local_err(format!("--{flag}: expected SEQ:HASH")))?;
                let seq = seq
                    .parse::<u64>()
                    .map_err(|_| local_err(format!("--{flag}: SEQ must be a number")))?;
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(local_err(format!("--{flag}: HASH must be 64 hex digits")));
                }
                Ok(palisade_audit::Head {
                    seq,
                    hash: hash.to_ascii_lowercase(),
                })
            };
            let after = match &after {
                Some(a) => Some(tryc!(parse_head("after", a))),
                None => None,
            };
            let head = match (&head, &device) {
                (Some(h), _) => Some(tryc!(parse_head("head", h))),
                (None, Some(d)) => {
                    let c = tryc!(client(&remote));
                    let reply = call!(
                        c,
                        "GET",
                        format!("sys/audit-head/{}", d.trim_end_matches('/')),
                        None
                    );
                    let d = reply.data();
                    match (d["seq"].as_u64(), d["hash"].as_str()) {
                        (Some(seq), Some(hash)) => Some(palisade_audit::Head {
                            seq,
                            hash: hash.to_string(),
                        }),
                        _ => return local_err("the device has written no record yet"),
                    }
                }
                (None, None) => None,
            };
            match palisade_audit::verify_range(&file, after.as_ref(), head.as_ref()) {
                Ok(rep) => {
                    let reach = match &head {
                        Some(h) => format!(", reaches the head at seq {}", h.seq),
                        None => String::new(),
                    };
                    println!(
                        "{}: OK, {} lines, hash chain intact{reach}",
                        file.display(),
                        rep.lines
                    );
                    0
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    1
                }
            }
        }
        AuditCmd::Enable {
            kind,
            options,
            path,
            description,
            remote,
        } => {
            let opts = tryc!(pairs(&options));
            let c = tryc!(client(&remote));
            let path = path.unwrap_or_else(|| kind.clone());
            let mut body = json!({"type": kind, "options": opts});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            call!(
                c,
                "PUT",
                format!("sys/audit/{}", path.trim_matches('/')),
                Some(&body)
            );
            println!(
                "Success! Enabled the {kind} audit device at: {}/",
                path.trim_matches('/')
            );
            0
        }
        AuditCmd::Disable { path, remote } => {
            let c = tryc!(client(&remote));
            call!(
                c,
                "DELETE",
                format!("sys/audit/{}", path.trim_matches('/')),
                None
            );
            println!(
                "Success! Disabled audit device (if it was enabled) at: {}/",
                path.trim_matches('/')
            );
            0
        }
        AuditCmd::List(remote) => {
            let c = tryc!(client(&remote));
            let r = call!(c, "GET", "sys/audit", None);
            let d = r.data();
            let rows = d
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                format!(
                                    "{}    {}",
                                    output::scalar(&v["type"]),
                                    output::scalar(&v["options"]["file_path"])
                                ),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            output::print(remote.format, &d, rows);
            0
        }
    }
}

fn now_secs() -> i64 {
    palisade_core::now_nanos() / 1_000_000_000
}

/// The gateway configuration file, read and checked; its errors printed
/// one `FILE: <error>` line each (exit code 1).
fn gateway_config(
    file: &std::path::Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<palisade_gateway::config::GatewayConfig, u8> {
    palisade_gateway::server::read_config(file, var).map_err(|errs| {
        for e in errs.to_string().lines() {
            eprintln!("{}: {e}", file.display());
        }
        1
    })
}

async fn gateway(a: GatewayArgs) -> u8 {
    let Some(file) = a.config else {
        return local_err("--config FILE is required");
    };
    let var = |k: &str| std::env::var(k).ok();
    match a.command {
        None => {
            let cfg = tryc!(gateway_config(&file, &var));
            init_tracing(&cfg.log_level, true);
            let mut forwards: Vec<Box<dyn palisade_gateway::ops::Forward>> = Vec::new();
            if let Some(s) = &cfg.syslog {
                match palisade_gateway::ops::syslog::Forwarder::start(s) {
                    Ok(f) => forwards.push(Box::new(f)),
                    Err(e) => return local_err(format!("error: {e}")),
                }
            }
            if let Some(o) = &cfg.otlp {
                match palisade_gateway::ops::otlp::Exporter::start(o) {
                    Ok(x) => forwards.push(Box::new(x)),
                    Err(e) => return local_err(format!("error: {e}")),
                }
            }
            let sink = match &cfg.security_log_file {
                Some(f) => palisade_gateway::ops::log::Sink::file_and(f, forwards),
                None => palisade_gateway::ops::log::Sink::stdout_and(forwards),
            };
            let sink = match sink {
                Ok(s) => std::sync::Arc::new(s),
                Err(e) => {
                    let what = match &cfg.security_log_file {
                        Some(f) => f.display().to_string(),
                        None => "stdout".into(),
                    };
                    eprintln!("error: cannot open {what} for the security log: {e}");
                    return 1;
                }
            };
            let var: palisade_gateway::server::EnvLookup =
                std::sync::Arc::new(|k: &str| std::env::var(k).ok());
            match palisade_gateway::server::start(file, var, sink, shutdown_signal()).await {
                Ok((bound, handle)) => {
                    for (name, addr) in &bound.listeners {
                        tracing::info!(listener = %name, address = %addr, "gateway listening");
                    }
                    tracing::info!(address = %bound.admin, "admin listening");
                    let _ = handle.await;
                    0
                }
                Err(e) => local_err(format!("error: {e}")),
            }
        }
        Some(GatewayCmd::Apikey(cmd)) => {
            let cfg = tryc!(gateway_config(&file, &var));
            // a Palisade-kept table is managed with the operator's token
            // when VAULT_TOKEN is set (else with the gateway's own login)
            let token = var("VAULT_TOKEN")
                .filter(|t| !t.is_empty())
                .map(palisade_core::Secret::new);
            let store = palisade_gateway::gateway::apikey_store(&cfg, token).await;
            let code = match store {
                Ok(Some(s)) => apikey(&s, cmd).await,
                Ok(None) => local_err("the configuration has no [apikeys] section"),
                Err(e) => local_err(format!("cannot open key store: {e}")),
            };
            // an AppRole login made for this command is revoked with it
            if let Some(p) = &cfg.palisade
                && let Ok(c) = palisade_gateway::ops::palisade::Client::shared(p)
            {
                c.logout().await;
            }
            code
        }
        Some(GatewayCmd::Bans(cmd)) => {
            let cfg = tryc!(gateway_config(&file, &var));
            bans(cfg.admin, cmd).await
        }
    }
}

/// `palisade gateway bans`: the admin listener's `/bans`.
async fn bans(admin: std::net::SocketAddr, cmd: BansCmd) -> u8 {
    // a wildcard bind is reached on loopback
    let ip = match admin.ip() {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let base = format!(
        "http://{}/bans",
        std::net::SocketAddr::new(ip, admin.port())
    );
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => return local_err(format!("error: {e}")),
    };
    let req = match &cmd {
        BansCmd::List { .. } => http.get(&base),
        BansCmd::Add {
            subject,
            duration,
            reason,
        } => {
            let secs = tryc!(ttl_secs(duration));
            http.post(&base)
                .json(&json!({"subject": subject, "duration_s": secs, "reason": reason}))
        }
        BansCmd::Remove { subject } => {
            // the subject is one path segment to the admin router's wildcard:
            // escaped, so '/' (an IPv6 /64) and '%' reach it as written
            let mut url = match reqwest::Url::parse(&base) {
                Ok(u) => u,
                Err(e) => return local_err(format!("error: {e}")),
            };
            if let Ok(mut seg) = url.path_segments_mut() {
                seg.push(subject);
            }
            http.delete(url)
        }
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return local_err(format!(
                "error: cannot reach the gateway's admin listener at {base}: {e}"
            ));
        }
    };
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("unexpected answer");
        let code = body["error"]["code"].as_str().unwrap_or("");
        return local_err(format!("error: {msg} ({code}, {status})"));
    }
    match cmd {
        BansCmd::List { format } => {
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                ),
                _ => {
                    let bans = body["bans"].as_array().cloned().unwrap_or_default();
                    if bans.is_empty() {
                        println!("no bans");
                    }
                    // a reason comes from whoever wrote the shared store:
                    // printed escaped, never as terminal control sequences
                    let safe = |v: &Value| output::scalar(v).escape_debug().to_string();
                    for b in bans {
                        println!(
                            "{}  {}s left  strikes {}  {}  {}",
                            safe(&b["subject"]),
                            safe(&b["remaining_s"]),
                            safe(&b["strikes"]),
                            if b["shared"] == true {
                                "shared"
                            } else {
                                "local"
                            },
                            safe(&b["reason"]),
                        );
                    }
                }
            }
            0
        }
        BansCmd::Add { .. } => {
            println!(
                "banned {} for {}s",
                output::scalar(&body["subject"]),
                output::scalar(&body["remaining_s"])
            );
            0
        }
        BansCmd::Remove { .. } => {
            if body["removed"] == true {
                println!("lifted the ban of {}", output::scalar(&body["subject"]));
            } else {
                println!("{} was not banned", output::scalar(&body["subject"]));
            }
            0
        }
    }
}

fn ttl_secs(s: &str) -> Result<i64, u8> {
    palisade_core::parse_duration(s)
        .map(|d| d.as_secs() as i64)
        .map_err(local_err)
}

fn key_json(r: &palisade_apikey::ApiKeyRecord) -> Value {
    json!({
        "id": r.id, "consumer": r.consumer, "scopes": r.scopes, "created_at": r.created_at,
        "expires_at": r.expires_at, "revoked_at": r.revoked_at, "description": r.description,
    })
}

async fn apikey(store: &palisade_apikey::ApiKeyStore, cmd: ApikeyCmd) -> u8 {
    match cmd {
        ApikeyCmd::Create {
            consumer,
            scopes,
            ttl,
            description,
            format,
        } => {
            let expires_at = match ttl {
                Some(t) => Some(now_secs() + tryc!(ttl_secs(&t))),
                None => None,
            };
            match store
                .create(palisade_apikey::NewKey {
                    consumer,
                    scopes,
                    expires_at,
                    description,
                })
                .await
            {
                Ok(issued) => {
                    let mut j = key_json(&issued.record);
                    j["key"] = json!(issued.key.expose());
                    output::print(
                        format,
                        &j,
                        vec![
                            ("key".into(), issued.key.expose().clone()),
                            ("id".into(), issued.record.id.clone()),
                            ("consumer".into(), issued.record.consumer.clone()),
                            ("scopes".into(), issued.record.scopes.join(",")),
                        ],
                    );
                    if format == Format::Table {
                        eprintln!(
                            "\nStore the key now: it is shown once and only its keyed hash is kept."
                        );
                    }
                    0
                }
                Err(e) => local_err(format!("error: {e}")),
            }
        }
        ApikeyCmd::List { consumer, format } => match store.list(consumer.as_deref()).await {
            Ok(keys) => {
                match format {
                    Format::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &keys.iter().map(key_json).collect::<Vec<_>>()
                        )
                        .unwrap_or_default()
                    ),
                    Format::Table => {
                        println!(
                            "{:<14} {:<20} {:<24} {:<12} DESCRIPTION",
                            "ID", "CONSUMER", "SCOPES", "STATE"
                        );
                        let now = now_secs();
                        for k in keys {
                            let state = if k.revoked_at.is_some() {
                                "revoked"
                            } else if k.expires_at.is_some_and(|e| e <= now) {
                                "expired"
                            } else {
                                "active"
                            };
                            println!(
                                "{:<14} {:<20} {:<24} {:<12} {}",
                                k.id,
                                k.consumer,
                                k.scopes.join(","),
                                state,
                                k.description
                            );
                        }
                    }
                }
                0
            }
            Err(e) => local_err(format!("error: {e}")),
        },
        ApikeyCmd::Revoke { id } => match store.revoke(&id).await {
            Ok(true) => {
                println!("Success! Revoked API key {id}");
                0
            }
            Ok(false) => local_err(format!("no API key with id {id}")),
            Err(e) => local_err(format!("error: {e}")),
        },
        ApikeyCmd::Rotate {
            id,
            overlap,
            format,
        } => {
            let old_expires_at = match overlap {
                Some(o) => Some(now_secs() + tryc!(ttl_secs(&o))),
                None => None,
            };
            match store.rotate(&id, old_expires_at).await {
                Ok(issued) => {
                    let mut j = key_json(&issued.record);
                    j["key"] = json!(issued.key.expose());
                    output::print(
                        format,
                        &j,
                        vec![
                            ("key".into(), issued.key.expose().clone()),
                            ("id".into(), issued.record.id.clone()),
                            ("replaces".into(), id),
                        ],
                    );
                    0
                }
                Err(e) => local_err(format!("error: {e}")),
            }
        }
    }
}

/// A key share from the argument, or from standard input when it is absent
/// or `-` (hidden prompt on a terminal). Never echoed.
fn share_arg(key: Option<String>) -> Result<String, u8> {
    let key = match key.as_deref() {
        None | Some("-") => read_secret("Unseal Key (will be hidden): ")
            .map_err(|e| local_err(format!("cannot read the key share: {e}")))?,
        Some(k) => k.trim().to_string(),
    };
    if key.is_empty() {
        return Err(local_err("no key share given"));
    }
    Ok(key)
}

fn progress(d: &Value, of: &str) -> String {
    format!("{}/{}", d["progress"], d[of])
}

fn rekey_rows(d: &Value) -> Vec<(String, String)> {
    let mut rows = vec![
        ("Nonce".into(), output::scalar(&d["nonce"])),
        ("Started".into(), output::scalar(&d["started"])),
        ("Rekey Progress".into(), progress(d, "required")),
        ("New Shares".into(), output::scalar(&d["n"])),
        ("New Threshold".into(), output::scalar(&d["t"])),
        (
            "Verification Required".into(),
            output::scalar(&d["verification_required"]),
        ),
    ];
    if let Some(v) = d.get("verification_nonce") {
        rows.push(("Verification Nonce".into(), output::scalar(v)));
    }
    rows
}

fn verify_rows(d: &Value) -> Vec<(String, String)> {
    vec![
        ("Nonce".into(), output::scalar(&d["nonce"])),
        ("Started".into(), output::scalar(&d["started"])),
        ("New Shares".into(), output::scalar(&d["n"])),
        ("New Threshold".into(), output::scalar(&d["t"])),
        ("Verification Progress".into(), progress(d, "t")),
    ]
}

/// `palisade operator rekey`: Vault's `operator rekey` flows.
async fn rekey(a: RekeyArgs) -> u8 {
    let c = tryc!(client(&a.remote));
    let fmt = a.remote.format;
    if a.backup_retrieve {
        let r = call!(c, "GET", "sys/rekey/backup", None);
        let d = r.data();
        output::print(fmt, &d, output::object_rows(&d));
        return 0;
    }
    if a.backup_delete {
        call!(c, "DELETE", "sys/rekey/backup", None);
        println!("Success! Delete stored keys (if they existed)");
        return 0;
    }
    if a.init {
        let mut body = json!({
            "secret_shares": a.key_shares,
            "secret_threshold": a.key_threshold,
            "require_verification": a.verify,
        });
        if let Some(p) = &a.pgp_keys {
            body["pgp_keys"] = json!(p.split(',').map(str::trim).collect::<Vec<_>>());
        }
        let r = call!(c, "PUT", "sys/rekey/init", Some(&body));
        let d = r.data();
        output::print(fmt, &d, rekey_rows(&d));
        return 0;
    }
    if a.cancel {
        if a.verify {
            let r = call!(c, "DELETE", "sys/rekey/verify", None);
            let d = r.data();
            match fmt {
                Format::Json => output::print(fmt, &d, Vec::new()),
                Format::Table => println!(
                    "Success! Rekey verification canceled. The new verification nonce is {}.",
                    output::scalar(&d["nonce"])
                ),
            }
        } else {
            call!(c, "DELETE", "sys/rekey/init", None);
            println!("Success! Canceled rekeying (if it was started)");
        }
        return 0;
    }
    let status_path = if a.verify {
        "sys/rekey/verify"
    } else {
        "sys/rekey/init"
    };
    if a.status {
        let r = call!(c, "GET", status_path, None);
        let d = r.data();
        let rows = if a.verify {
            verify_rows(&d)
        } else {
            rekey_rows(&d)
        };
        output::print(fmt, &d, rows);
        return 0;
    }
    // one share: from the argument or standard input
    let status = call!(c, "GET", status_path, None).data();
    let nonce = a
        .nonce
        .clone()
        .unwrap_or_else(|| output::scalar(&status["nonce"]));
    let key = tryc!(share_arg(a.key));
    if a.verify {
        let r = call!(
            c,
            "PUT",
            "sys/rekey/verify",
            Some(&json!({"key": key, "nonce": nonce}))
        );
        let d = r.data();
        if d["complete"] == json!(true) {
            match fmt {
                Format::Json => output::print(fmt, &d, Vec::new()),
                Format::Table => println!(
                    "Success! Rekey verification was successful. The unseal key was replaced: from now on the new shares unseal, the old ones no longer do."
                ),
            }
        } else {
            output::print(fmt, &d, verify_rows(&d));
        }
        return 0;
    }
    let r = call!(
        c,
        "PUT",
        "sys/rekey/update",
        Some(&json!({"key": key, "nonce": nonce}))
    );
    let d = r.data();
    if d["complete"] != json!(true) {
        output::print(fmt, &d, rekey_rows(&d));
        return 0;
    }
    if fmt == Format::Json {
        output::print(fmt, &d, Vec::new());
        return 0;
    }
    let keys = d["keys_base64"].as_array().cloned().unwrap_or_default();
    for (i, k) in keys.iter().enumerate() {
        println!("Key {}: {}", i + 1, output::scalar(k));
    }
    println!("\nOperation nonce: {}\n", output::scalar(&d["nonce"]));
    let (n, t) = (keys.len(), output::scalar(&status["t"]));
    if d["verification_required"] == json!(true) {
        println!(
            "Palisade has created a new unseal key, split into {n} key shares with a key threshold of {t}. These will not be active until after verification is complete: until then the old shares still unseal. Please securely distribute the key shares printed above, then at least {t} holders verify theirs with `palisade operator rekey --verify`.\n\nVerification nonce: {}",
            output::scalar(&d["verification_nonce"])
        );
    } else {
        println!(
            "Palisade rekeyed with {n} key shares and a key threshold of {t}. Please securely distribute the key shares printed above. When Palisade is sealed, restarted or stopped, you must supply at least {t} of these keys to unseal it; the old shares no longer work."
        );
    }
    0
}

fn generate_root_rows(d: &Value) -> Vec<(String, String)> {
    let mut rows = vec![
        ("Nonce".into(), output::scalar(&d["nonce"])),
        ("Started".into(), output::scalar(&d["started"])),
        ("Progress".into(), progress(d, "required")),
        ("Complete".into(), output::scalar(&d["complete"])),
    ];
    if d["otp"].as_str().is_some_and(|o| !o.is_empty()) {
        rows.push(("OTP".into(), output::scalar(&d["otp"])));
    }
    if d["encoded_token"].as_str().is_some_and(|o| !o.is_empty()) {
        rows.push(("Encoded Token".into(), output::scalar(&d["encoded_token"])));
    } else {
        rows.push(("OTP Length".into(), output::scalar(&d["otp_length"])));
    }
    rows
}

/// `palisade operator generate-root`: Vault's `operator generate-root` flows.
async fn generate_root(a: GenerateRootArgs) -> u8 {
    if a.generate_otp {
        println!(
            "{}",
            palisade_server::token::random_base62(palisade_server::rootops::OTP_LENGTH)
        );
        return 0;
    }
    if let Some(encoded) = &a.decode {
        let otp = match a.otp.as_deref() {
            None => {
                return local_err(
                    "--decode needs --otp (or --otp - to read it from standard input)",
                );
            }
            Some("-") => tryc!(
                read_secret("OTP (will be hidden): ")
                    .map_err(|e| local_err(format!("cannot read the OTP: {e}")))
            ),
            Some(o) => o.to_string(),
        };
        return match palisade_server::rootops::decode_token(encoded.trim(), &otp) {
            Ok(token) => {
                println!("{token}");
                0
            }
            Err(e) => local_err(format!("cannot decode: {e}")),
        };
    }
    let c = tryc!(client(&a.remote));
    let fmt = a.remote.format;
    if a.init {
        let mut body = json!({});
        if let Some(o) = &a.otp {
            body["otp"] = json!(o);
        }
        if let Some(p) = &a.pgp_key {
            body["pgp_key"] = json!(p);
        }
        let r = call!(c, "PUT", "sys/generate-root/attempt", Some(&body));
        let d = r.data();
        output::print(fmt, &d, generate_root_rows(&d));
        return 0;
    }
    if a.cancel {
        call!(c, "DELETE", "sys/generate-root/attempt", None);
        println!("Success! Root token generation canceled (if it was started)");
        return 0;
    }
    if a.status {
        let r = call!(c, "GET", "sys/generate-root/attempt", None);
        let d = r.data();
        output::print(fmt, &d, generate_root_rows(&d));
        return 0;
    }
    let nonce = match &a.nonce {
        Some(n) => n.clone(),
        None => output::scalar(&call!(c, "GET", "sys/generate-root/attempt", None).data()["nonce"]),
    };
    let key = tryc!(share_arg(a.key));
    let r = call!(
        c,
        "PUT",
        "sys/generate-root/update",
        Some(&json!({"key": key, "nonce": nonce}))
    );
    let d = r.data();
    output::print(fmt, &d, generate_root_rows(&d));
    0
}

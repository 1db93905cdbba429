//! palisade-policy: Vault ACL policies, in HCL or JSON. It owns parsing policy text into
//! path rules ([`Policy`]), merging a token's policies into one [`Acl`], and
//! answering "what may this token do on this path" ([`Acl::capabilities`]),
//! which the server's `Core::begin` asks after token lookup and before any
//! engine runs. It also owns the built-in [`DEFAULT_POLICY`] text and the
//! canonical formatter behind `palisade policy fmt` ([`format_hcl`]).
//!
//! # Semantics
//!
//! Matching follows HashiCorp Vault's `vault/acl.go` and `vault/policy.go`:
//!
//! - Patterns are exact (`secret/data/foo`), prefix globs (a trailing `*`
//!   matches any continuation, across `/`), or contain `+` segment wildcards
//!   (`secret/+/teamb`, one whole segment), which may also end in `*`. A `*`
//!   anywhere but last is a literal character. One leading `/` is stripped.
//! - Rules with the identical pattern are merged across (and within)
//!   policies: capabilities are unioned, and a deny in any of them makes the
//!   rule exactly `{deny}`.
//! - Lookup: an exact rule wins outright (for LIST also the path without its
//!   trailing `/`); otherwise the single highest-priority matching glob or
//!   segment rule decides, by Vault's five priority rules (see
//!   [`Acl::capabilities`]). Capabilities are never unioned across different
//!   patterns, so a more specific rule can both narrow and widen a broader one.
//!
//! # Fail closed
//!
//! Vault path-block keys we do not enforce yet (`allowed_parameters`,
//! `control_group`, wrapping TTLs, ...) and templated paths
//! (`{{identity.entity.id}}`) make a policy invalid instead of being ignored:
//! loading such a policy without its restriction would grant more than its
//! author wrote.
//!
//! Input is parsed as HCL 2 (hcl-rs). Vault parses HCL 1, so a few legacy
//! spellings it tolerates are rejected here: a block's `{` on the next line
//! and repeated attribute keys.
//!
//! Text whose first non-whitespace character is `{` is a JSON policy, as in
//! Vault (`{"path": {"secret/*": {"capabilities": ["read"]}}}`): read with
//! serde_json and checked by the same path-block rules as HCL (`json`). It
//! must be valid JSON without repeated keys (HCL 1 is more lenient).

#![forbid(unsafe_code)]

mod acl;
mod capability;
mod format;
mod json;
mod nesting;
mod policy;

#[cfg(test)]
mod tests;

pub use acl::Acl;
pub use capability::{Capabilities, Capability};
pub use format::format_hcl;
pub use policy::Policy;

/// Why policy text was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not valid HCL.
    #[error("failed to parse policy: line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A top-level key other than `path` or `name`.
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// A key inside a path block that Vault does not know either.
    #[error("path {path:?}: invalid key {key:?}")]
    InvalidPathKey { path: String, key: String },
    /// A Vault path-block key whose restriction we cannot enforce yet.
    #[error("path {path:?}: {key} is not supported")]
    Unsupported { path: String, key: String },
    #[error("path {path:?}: invalid capability {capability:?}")]
    InvalidCapability { path: String, capability: String },
    /// Any other problem with one path block (bad value type, legacy
    /// `policy` value, `+*`, templating).
    #[error("path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// A structural problem outside a path block.
    #[error("{0}")]
    Invalid(String),
    /// The formatter could not produce equivalent output (a bug; the input is
    /// left untouched by callers).
    #[error("cannot format policy: {0}")]
    Format(String),
}

impl PolicyError {
    fn from_hcl(err: hcl::Error) -> PolicyError {
        match err {
            hcl::Error::Parse(e) => PolicyError::Syntax {
                line: e.location().line(),
                column: e.location().column(),
                message: e.message().to_owned(),
            },
            other => PolicyError::Invalid(format!("failed to parse policy: {other}")),
        }
    }
}

/// Vault's built-in `default` policy, attached to every non-root token unless
/// opted out. Reproduced from Vault (`vault/policy_store.go`) except for its
/// two templated `identity/entity/{id,name}/{{...}}` rules, which Palisade
/// cannot render (it has no identity store) and would otherwise reject.
pub const DEFAULT_POLICY: &str = r#"
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its resultant ACL from all policies. This is useful
# for UIs. It is an internal path because the format may change at any time
# based on how the internal ACL features and capabilities change.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for
# old clients, new path for newer
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead
# of time and does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

# Allow checking the status of a Control Group request if the user has the
# accessor
path "sys/control-group/request" {
    capabilities = ["update"]
}

# Allow a token to make requests to the Authorization Endpoint for OIDC providers.
path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
"#;

//! Capabilities: the verbs a path rule grants, and the small bitset that holds them.

/// One capability a path rule can grant (or, for [`Capability::Deny`], revoke).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    Create,
    Read,
    Update,
    Patch,
    Delete,
    List,
    Sudo,
    Deny,
}

impl Capability {
    /// Every capability, in the alphabetical order Vault's `sys/capabilities`
    /// reports them (it sorts its answer).
    const ALPHABETICAL: [Capability; 8] = [
        Capability::Create,
        Capability::Delete,
        Capability::Deny,
        Capability::List,
        Capability::Patch,
        Capability::Read,
        Capability::Sudo,
        Capability::Update,
    ];

    /// The name used in policy HCL and API responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Create => "create",
            Capability::Read => "read",
            Capability::Update => "update",
            Capability::Patch => "patch",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Sudo => "sudo",
            Capability::Deny => "deny",
        }
    }

    /// Parses a capability name. Exact, lower-case match only: Vault rejects
    /// `"Read"`, and so do we.
    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALPHABETICAL
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    fn bit(self) -> u16 {
        match self {
            Capability::Create => 1 << 0,
            Capability::Read => 1 << 1,
            Capability::Update => 1 << 2,
            Capability::Patch => 1 << 3,
            Capability::Delete => 1 << 4,
            Capability::List => 1 << 5,
            Capability::Sudo => 1 << 6,
            Capability::Deny => 1 << 7,
        }
    }
}

/// A set of capabilities (bitset). Default = empty.
///
/// The set itself is a plain bitset; the "deny wins" rule is applied where
/// sets are built (policy parsing and ACL merging), so anything an [`crate::Acl`]
/// returns that contains [`Capability::Deny`] contains nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities(u16);

impl Capabilities {
    /// No capability at all (no access).
    pub fn empty() -> Self {
        Capabilities(0)
    }

    /// Every capability except [`Capability::Deny`]; what a root ACL holds.
    pub fn all() -> Self {
        let mut caps = Capabilities::empty();
        for c in Capability::ALPHABETICAL {
            if c != Capability::Deny {
                caps.insert(c);
            }
        }
        caps
    }

    /// Exactly `{deny}`.
    pub(crate) fn deny() -> Self {
        Capabilities(Capability::Deny.bit())
    }

    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn insert(&mut self, c: Capability) {
        self.0 |= c.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Union of two sets, then Vault's rule that an explicit deny replaces
    /// everything else (`NewACL` merging and `parsePaths` both do this).
    pub(crate) fn merged(self, other: Capabilities) -> Capabilities {
        let union = Capabilities(self.0 | other.0);
        if union.contains(Capability::Deny) {
            Capabilities::deny()
        } else {
            union
        }
    }

    /// Names as Vault's `sys/capabilities` returns them: sorted alphabetically,
    /// and exactly `["deny"]` when the set holds deny or is empty (Vault
    /// reports "no access" as deny, never as an empty list).
    pub fn names(self) -> Vec<&'static str> {
        if self.is_empty() || self.contains(Capability::Deny) {
            return vec![Capability::Deny.as_str()];
        }
        Capability::ALPHABETICAL
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(Capability::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_name() {
        for c in Capability::ALPHABETICAL {
            assert_eq!(Capability::parse(c.as_str()), Some(c));
        }
        assert_eq!(Capability::parse("Read"), None);
        assert_eq!(Capability::parse("write"), None);
        assert_eq!(Capability::parse("root"), None);
    }

    #[test]
    fn names_are_sorted_and_deny_is_exclusive() {
        let mut caps = Capabilities::empty();
        assert_eq!(caps.names(), ["deny"]);
        caps.insert(Capability::Update);
        caps.insert(Capability::Create);
        caps.insert(Capability::Sudo);
        caps.insert(Capability::List);
        assert_eq!(caps.names(), ["create", "list", "sudo", "update"]);
        caps.insert(Capability::Deny);
        assert_eq!(caps.names(), ["deny"]);
        assert_eq!(
            Capabilities::all().names(),
            [
                "create", "delete", "list", "patch", "read", "sudo", "update"
            ]
        );
        assert!(!Capabilities::all().contains(Capability::Deny));
        assert!(Capabilities::default().is_empty());
    }

    #[test]
    fn merge_lets_deny_win() {
        let mut read = Capabilities::empty();
        read.insert(Capability::Read);
        let mut list = Capabilities::empty();
        list.insert(Capability::List);
        assert_eq!(read.merged(list).names(), ["list", "read"]);
        assert_eq!(read.merged(Capabilities::deny()), Capabilities::deny());
        assert_eq!(Capabilities::deny().merged(read), Capabilities::deny());
    }
}

//! Users, roles and grants: replicated state, changed through the log like any write and
//! applied by every node's state machine at the same index, so a change decided at index `i`
//! holds for every request served at a read point past `i`, on every node.
//!
//! - A **role** grants read, or read and write, on key prefixes (`""` is every key). The role
//!   [`ADMIN`] is built in: users, roles, reconfiguration, handovers, and every key.
//! - A **user** has a password (stored as an Argon2 hash) and roles. `root` is created with
//!   [`ADMIN`] from the config at the first start of a cluster ([`AuthOp::Bootstrap`]).
//! - A **token** (`POST /auth/token`) names a user and its generation and expires; it is signed
//!   with the cluster's token key (part of this state) and checked without a log write. A
//!   user's generation changes with its password and when it is deleted, which ends its tokens.
//! - **Nodes** prove themselves with their node certificate (`node-<pid>`), never a password.
//!
//! The state lives in the node's state store under the reserved key [`STATE_KEY`] (no client
//! key starts with a NUL byte), so checkpoints and state transfers carry it with the keys.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The state store key the auth state is kept under.
pub const STATE_KEY: &str = "\u{0}auth";
/// The role that may administer the cluster.
pub const ADMIN: &str = "admin";
/// The user created at the first start of a cluster.
pub const ROOT: &str = "root";

/// A role's grants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Key prefixes this role may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Key prefixes this role may read and write.
    #[serde(default)]
    pub write: Vec<String>,
}

/// A user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The password's Argon2 hash (PHC string); `None`: the user authenticates by certificate
    /// only.
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
    /// Changes with the password and at every re-creation: tokens name it.
    pub generation: u64,
}

/// A change of the auth state, decided through the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AuthOp {
    /// Creates `root` (with [`ADMIN`]) and the token key, if the cluster has no user yet.
    Bootstrap {
        root_password_hash: String,
        token_key: Vec<u8>,
    },
    /// Creates a user, or sets its password.
    PutUser {
        name: String,
        password_hash: Option<String>,
    },
    DeleteUser {
        name: String,
    },
    PutRole {
        name: String,
        role: Role,
    },
    DeleteRole {
        name: String,
    },
    Grant {
        user: String,
        role: String,
    },
    Revoke {
        user: String,
        role: String,
    },
}

impl AuthOp {
    /// What the change is about, for logs.
    pub fn describe(&self) -> String {
        match self {
            AuthOp::Bootstrap { .. } => "bootstrap root".into(),
            AuthOp::PutUser { name, .. } => format!("put user {name}"),
            AuthOp::DeleteUser { name } => format!("delete user {name}"),
            AuthOp::PutRole { name, .. } => format!("put role {name}"),
            AuthOp::DeleteRole { name } => format!("delete role {name}"),
            AuthOp::Grant { user, role } => format!("grant {role} to {user}"),
            AuthOp::Revoke { user, role } => format!("revoke {role} from {user}"),
        }
    }
}

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// A user, by certificate (`generation: None`) or by a token of that generation.
    User {
        name: String,
        generation: Option<u64>,
    },
    /// A node of the cluster, by its node certificate.
    Node(u64),
}

impl Principal {
    /// The name audit lines use.
    pub fn name(&self) -> String {
        match self {
            Principal::User { name, .. } => name.clone(),
            Principal::Node(pid) => format!("node-{pid}"),
        }
    }
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// Any authenticated principal (cluster status, metrics).
    Status,
    Read(&'a str),
    Write(&'a str),
    /// Users, roles, reconfiguration, handovers.
    Admin,
    /// Nodes only: state transfers.
    Node,
}

/// The replicated auth state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// The key tokens are signed with (random, chosen at bootstrap).
    pub token_key: Vec<u8>,
    /// The next generation a user gets.
    pub next_generation: u64,
}

/// Why a change or a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No such user, a token of another generation, or (at bootstrap) users exist.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// The change itself is invalid (an unknown role, a name that is not allowed, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Whether `name` may name a user or a role: 1 to 63 letters, digits and dashes, not starting
/// with a dash (it must fit a certificate's DNS name `client-<name>`).
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl AuthState {
    /// Whether the cluster has been bootstrapped.
    pub fn is_set_up(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether `who` may do `access` now.
    pub fn check(&self, who: &Principal, access: Access<'_>) -> Result<(), Refused> {
        let (name, generation) = match who {
            Principal::Node(_) => {
                return match access {
                    Access::Status | Access::Node => Ok(()),
                    _ => Err(Refused::Forbidden(format!(
                        "{} is a node: it may only transfer state and read status",
                        who.name()
                    ))),
                }
            }
            Principal::User { name, generation } => (name, generation),
        };
        let Some(user) = self.users.get(name) else {
            return Err(Refused::Unauthenticated(format!("no user {name}")));
        };
        if generation.is_some_and(|g| g != user.generation) {
            return Err(Refused::Unauthenticated(format!(
                "the token of {name} was issued before its password changed"
            )));
        }
        let admin = user.roles.contains(ADMIN);
        let roles = || user.roles.iter().filter_map(|r| self.roles.get(r));
        let allowed = match access {
            Access::Status => true,
            Access::Admin => admin,
            Access::Node => false,
            Access::Read(key) => {
                admin
                    || roles().any(|r| {
                        r.read
                            .iter()
                            .chain(&r.write)
                            .any(|p| key.starts_with(p.as_str()))
                    })
            }
            Access::Write(key) => {
                admin || roles().any(|r| r.write.iter().any(|p| key.starts_with(p.as_str())))
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Refused::Forbidden(match access {
                Access::Read(key) => format!("{name} may not read {key:?}"),
                Access::Write(key) => format!("{name} may not write {key:?}"),
                Access::Node => format!("{name} is not a node"),
                _ => format!("{name} is not an admin"),
            }))
        }
    }

    /// Applies a decided change made by `by` (`None`: the cluster itself, for
    /// [`AuthOp::Bootstrap`]). The same on every node.
    pub fn apply(&mut self, by: Option<&Principal>, op: &AuthOp) -> Result<(), Refused> {
        // Every change but the bootstrap needs an admin as its author.
        if !matches!(op, AuthOp::Bootstrap { .. }) {
            match by {
                Some(who) => self.check(who, Access::Admin)?,
                None => return Err(Refused::Forbidden("a change without an author".into())),
            }
        }
        match op {
            AuthOp::Bootstrap {
                root_password_hash,
                token_key,
            } => {
                if self.is_set_up() {
                    return Err(Refused::Invalid("the cluster has users already".into()));
                }
                self.token_key = token_key.clone();
                self.next_generation = 1;
                let root = User {
                    password_hash: Some(root_password_hash.clone()),
                    roles: BTreeSet::from([ADMIN.to_string()]),
                    generation: self.take_generation(),
                };
                self.users.insert(ROOT.into(), root);
            }
            AuthOp::PutUser {
                name,
                password_hash,
            } => {
                if !valid_name(name) {
                    return Err(Refused::Invalid(format!(
                        "{name:?} is not a valid user name"
                    )));
                }
                let generation = self.take_generation();
                let user = self.users.entry(name.clone()).or_default();
                user.password_hash = password_hash.clone();
                user.generation = generation;
            }
            AuthOp::DeleteUser { name } => {
                if name == ROOT {
                    return Err(Refused::Invalid("root cannot be deleted".into()));
                }
                if self.users.remove(name).is_none() {
                    return Err(Refused::Invalid(format!("no user {name}")));
                }
            }
            AuthOp::PutRole { name, role } => {
                if !valid_name(name) || name == ADMIN {
                    return Err(Refused::Invalid(format!("{name:?} cannot be defined")));
                }
                self.roles.insert(name.clone(), role.clone());
            }
            AuthOp::DeleteRole { name } => {
                if self.roles.remove(name).is_none() {
                    return Err(Refused::Invalid(format!("no role {name}")));
                }
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
            }
            AuthOp::Grant { user, role } => {
                if role != ADMIN && !self.roles.contains_key(role) {
                    return Err(Refused::Invalid(format!("no role {role}")));
                }
                let Some(u) = self.users.get_mut(user) else {
                    return Err(Refused::Invalid(format!("no user {user}")));
                };
                u.roles.insert(role.clone());
            }
            AuthOp::Revoke { user, role } => {
                if user == ROOT && role == ADMIN {
                    return Err(Refused::Invalid("root stays an admin".into()));
                }
                let Some(u) = self.users.get_mut(user) else {
                    return Err(Refused::Invalid(format!("no user {user}")));
                };
                if !u.roles.remove(role) {
                    return Err(Refused::Invalid(format!("{user} does not have {role}")));
                }
            }
        }
        Ok(())
    }

    fn take_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation - 1
    }

    /// Checks `password` for `name` (slow on purpose: run it off the async workers).
    pub fn verify_password(&self, name: &str, password: &str) -> Result<u64, Refused> {
        let refused = || Refused::Unauthenticated("wrong user name or password".into());
        let user = self.users.get(name);
        // A user without a password (or none at all) is checked against a stand-in hash all
        // the same, so that the time of the answer does not tell which users exist.
        let hash = match user.and_then(|u| u.password_hash.as_deref()) {
            Some(hash) => hash,
            None => stand_in_hash(),
        };
        let parsed = PasswordHash::new(hash).map_err(|_| refused())?;
        let verified = Argon2::default().verify_password(password.as_bytes(), &parsed);
        match (user, verified) {
            (Some(u), Ok(())) if u.password_hash.is_some() => Ok(u.generation),
            _ => Err(refused()),
        }
    }

    /// A token for user `name` of `generation`, valid until `expires` (seconds since the Unix
    /// epoch).
    pub fn issue_token(&self, name: &str, generation: u64, expires: u64) -> String {
        let claims = serde_json::json!({ "u": name, "g": generation, "e": expires });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("v1.{payload}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.token_key);
        let tag = hmac::sign(&key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The principal a token names, if its signature holds and it has not expired at `now`.
    /// Whether the user still exists (with that generation) is for [`AuthState::check`].
    pub fn principal_of_token(&self, token: &str, now: u64) -> Result<Principal, Refused> {
        let bad = |why: &str| Refused::Unauthenticated(format!("invalid token: {why}"));
        if self.token_key.is_empty() {
            return Err(bad("the cluster has no token key yet"));
        }
        let (signed, tag) = token.rsplit_once('.').ok_or_else(|| bad("malformed"))?;
        let payload = signed
            .strip_prefix("v1.")
            .ok_or_else(|| bad("unknown version"))?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad("malformed"))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.token_key);
        hmac::verify(&key, signed.as_bytes(), &tag).map_err(|_| bad("bad signature"))?;
        let claims = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| bad("malformed"))?;
        let claims: serde_json::Value =
            serde_json::from_slice(&claims).map_err(|_| bad("malformed"))?;
        let (Some(name), Some(generation), Some(expires)) = (
            claims["u"].as_str(),
            claims["g"].as_u64(),
            claims["e"].as_u64(),
        ) else {
            return Err(bad("malformed"));
        };
        if expires <= now {
            return Err(bad("expired"));
        }
        Ok(Principal::User {
            name: name.to_string(),
            generation: Some(generation),
        })
    }
}

/// A hash of a random password, made once: what a missing user's password is checked against.
fn stand_in_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let password = random_bytes(16)
            .map(|b| URL_SAFE_NO_PAD.encode(b))
            .unwrap_or_default();
        hash_password(&password).unwrap_or_default()
    })
}

/// `n` random bytes from the operating system.
fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness from the operating system".to_string())?;
    Ok(bytes)
}

/// An Argon2 hash of `password`, with a random salt (slow on purpose).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_bytes(16)?).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A new random token key.
pub fn new_token_key() -> Result<Vec<u8>, String> {
    random_bytes(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal::User {
            name: name.into(),
            generation: None,
        }
    }

    /// A cluster with root, a role `reader` (read `app/`) and `writer` (write `app/logs/`),
    /// and alice holding `reader`.
    fn state() -> AuthState {
        let mut s = AuthState::default();
        let hash = hash_password("secret").unwrap();
        s.apply(
            None,
            &AuthOp::Bootstrap {
                root_password_hash: hash,
                token_key: new_token_key().unwrap(),
            },
        )
        .unwrap();
        let root = Some(user(ROOT));
        let role = |read: &[&str], write: &[&str]| Role {
            read: read.iter().map(|s| s.to_string()).collect(),
            write: write.iter().map(|s| s.to_string()).collect(),
        };
        for op in [
            AuthOp::PutRole {
                name: "reader".into(),
                role: role(&["app/"], &[]),
            },
            AuthOp::PutRole {
                name: "writer".into(),
                role: role(&[], &["app/logs/"]),
            },
            AuthOp::PutUser {
                name: "alice".into(),
                password_hash: Some(hash_password("pw").unwrap()),
            },
            AuthOp::Grant {
                user: "alice".into(),
                role: "reader".into(),
            },
        ] {
            s.apply(root.as_ref(), &op).unwrap();
        }
        s
    }

    #[test]
    fn grants_let_through_exactly_their_prefixes() {
        let mut s = state();
        let alice = user("alice");
        assert!(s.check(&alice, Access::Read("app/x")).is_ok());
        assert!(s.check(&alice, Access::Read("other")).is_err());
        assert!(s.check(&alice, Access::Write("app/x")).is_err());
        let grant = AuthOp::Grant {
            user: "alice".into(),
            role: "writer".into(),
        };
        s.apply(Some(&user(ROOT)), &grant).unwrap();
        assert!(s.check(&alice, Access::Write("app/logs/1")).is_ok());
        assert!(s.check(&alice, Access::Write("app/other")).is_err());
        assert!(s.check(&alice, Access::Admin).is_err());
        assert!(s.check(&user(ROOT), Access::Write("anything")).is_ok());
        assert!(s.check(&Principal::Node(2), Access::Node).is_ok());
        assert!(s.check(&Principal::Node(2), Access::Read("app/x")).is_err());
        assert!(s.check(&alice, Access::Node).is_err());
    }

    #[test]
    fn only_admins_change_auth_and_root_cannot_be_removed() {
        let mut s = state();
        let op = AuthOp::PutUser {
            name: "mallory".into(),
            password_hash: None,
        };
        assert!(matches!(
            s.apply(Some(&user("alice")), &op),
            Err(Refused::Forbidden(_))
        ));
        assert!(s.apply(None, &op).is_err());
        let root = Some(user(ROOT));
        let delete_root = AuthOp::DeleteUser { name: ROOT.into() };
        assert!(s.apply(root.as_ref(), &delete_root).is_err());
        let again = AuthOp::Bootstrap {
            root_password_hash: "x".into(),
            token_key: vec![1],
        };
        assert!(s.apply(None, &again).is_err(), "bootstrap happens once");
    }

    #[test]
    fn tokens_expire_and_end_with_a_password_change() {
        let mut s = state();
        let generation = s.verify_password("alice", "pw").unwrap();
        assert!(s.verify_password("alice", "wrong").is_err());
        assert!(s.verify_password("nobody", "pw").is_err());
        let token = s.issue_token("alice", generation, 1000);
        let who = s.principal_of_token(&token, 999).unwrap();
        assert!(s.check(&who, Access::Read("app/x")).is_ok());
        assert!(s.principal_of_token(&token, 1000).is_err(), "expired");
        let mut forged = token.clone();
        forged.replace_range(5..6, if &token[5..6] == "A" { "B" } else { "A" });
        assert!(s.principal_of_token(&forged, 999).is_err());
        let new_password = AuthOp::PutUser {
            name: "alice".into(),
            password_hash: Some(hash_password("new").unwrap()),
        };
        s.apply(Some(&user(ROOT)), &new_password).unwrap();
        assert!(matches!(
            s.check(&who, Access::Read("app/x")),
            Err(Refused::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_revoked_role_no_longer_grants() {
        let mut s = state();
        let revoke = AuthOp::Revoke {
            user: "alice".into(),
            role: "reader".into(),
        };
        s.apply(Some(&user(ROOT)), &revoke).unwrap();
        assert!(s.check(&user("alice"), Access::Read("app/x")).is_err());
    }

    #[test]
    fn names_fit_a_certificate() {
        assert!(valid_name("alice-2"));
        for bad in ["", "-a", "a b", "a_b", "ü", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}

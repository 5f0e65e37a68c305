//! SCRAM credentials (DescribeUserScramCredentials, AlterUserScramCredentials), as a Kafka
//! broker keeps them when none of its listeners authenticates with SASL/SCRAM: taken, checked
//! as Kafka checks them, listed, and used for nothing, since the front end serves no SASL.
//!
//! Only what describing them shows is kept (each user's mechanisms and iteration counts, in
//! `scram-credentials.meta` in the data directory): the salts and salted passwords sent are
//! dropped, so the file holds nothing that could serve to authenticate.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::Server;
use super::acls::{Client, op};
use crate::error::{Error, Result};
use crate::storage::io::StdFs;
use crate::storage::meta;

const FILE: &str = "scram-credentials.meta";
const VERSION: u32 = 1;
/// Kafka's bounds on a credential's iterations.
const MIN_ITERATIONS: i32 = 4096;
const MAX_ITERATIONS: i32 = 16384;
/// The most users with credentials kept, and the longest user name: bounds on the file.
const MAX_USERS: usize = 10_000;
const MAX_USER_BYTES: usize = 1_024;
/// Kafka's codes of SCRAM-SHA-256 and SCRAM-SHA-512.
const MECHANISMS: [i8; 2] = [1, 2];

/// Each user's credentials: mechanism → iterations.
type Users = BTreeMap<String, BTreeMap<i8, i32>>;

/// One change to a user's credentials: the mechanism, and to upsert, the iterations and
/// whether both a salt and a salted password came (`None` deletes).
type Change = (i8, Option<(i32, bool)>);

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    users: Users,
}

/// The SCRAM credentials of one broker.
pub(super) struct Credentials {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    changing: Mutex<()>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("path", &self.path).finish()
    }
}

impl Credentials {
    pub(super) fn open(dir: &Path) -> Result<Credentials> {
        let path = dir.join(FILE);
        let users = match meta::read::<Stored>(&path)? {
            None => Users::new(),
            Some(s) if s.version > VERSION => {
                return Err(Error::UnsupportedFormat {
                    path,
                    found: s.version,
                    supported: VERSION,
                });
            }
            Some(s) => s.users,
        };
        Ok(Credentials {
            path,
            users: RwLock::new(Arc::new(users)),
            changing: Mutex::new(()),
        })
    }
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from(s.into())
}

/// The users named more than once in `names`.
fn repeated<'a>(names: impl Iterator<Item = &'a str>) -> std::collections::HashSet<&'a str> {
    let mut seen = HashMap::new();
    for name in names {
        *seen.entry(name).or_insert(0) += 1;
    }
    seen.into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(name, _)| name)
        .collect()
}

/// DescribeUserScramCredentials: each user's mechanisms and iterations (every user when none
/// is named); RESOURCE_NOT_FOUND for a user without credentials, DUPLICATE_RESOURCE for one
/// named twice. Needs DESCRIBE on the cluster.
pub(super) fn describe(
    server: &Server,
    client: &Client,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !client.may_on_cluster(server, op::DESCRIBE) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let users = server.shared.scram.users.read().clone();
    let info = |mechanisms: &BTreeMap<i8, i32>| {
        mechanisms
            .iter()
            .map(|(&mechanism, &iterations)| {
                CredentialInfo::default()
                    .with_mechanism(mechanism)
                    .with_iterations(iterations)
            })
            .collect()
    };
    let results = match request.users.filter(|u| !u.is_empty()) {
        None => users
            .iter()
            .map(|(user, mechanisms)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(text(user.clone()))
                    .with_credential_infos(info(mechanisms))
            })
            .collect(),
        Some(named) => {
            let twice = repeated(named.iter().map(|u| u.name.as_str()));
            let mut answered = std::collections::HashSet::new();
            named
                .iter()
                .filter(|u| answered.insert(u.name.as_str()))
                .map(|u| {
                    let reply = DescribeUserScramCredentialsResult::default().with_user(u.name.clone());
                    let refuse = |code: ResponseError, why: String| {
                        reply
                            .clone()
                            .with_error_code(code.code())
                            .with_error_message(Some(text(why)))
                    };
                    if twice.contains(u.name.as_str()) {
                        return refuse(
                            ResponseError::DuplicateResource,
                            "the user is named more than once".to_string(),
                        );
                    }
                    match users.get(u.name.as_str()) {
                        Some(mechanisms) => reply.clone().with_credential_infos(info(mechanisms)),
                        None => refuse(
                            ResponseError::ResourceNotFound,
                            "the user has no SCRAM credential".to_string(),
                        ),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// AlterUserScramCredentials: deletions and upsertions, answered per user; a user whose
/// changes are all valid has them applied, one with any invalid change has none. Needs ALTER
/// on the cluster.
pub(super) fn alter(
    server: &Server,
    client: &Client,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut changes: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for d in &request.deletions {
        changes
            .entry(d.name.to_string())
            .or_default()
            .push((d.mechanism, None));
    }
    for u in &request.upsertions {
        changes.entry(u.name.to_string()).or_default().push((
            u.mechanism,
            Some((u.iterations, !u.salt.is_empty() && !u.salted_password.is_empty())),
        ));
    }
    let allowed = client.may_on_cluster(server, op::ALTER);
    let _changing = server.shared.scram.changing.lock();
    let current = server.shared.scram.users.read().clone();
    let mut next = Users::clone(&current);
    let mut outcome: Vec<(String, Option<(ResponseError, String)>)> = Vec::new();
    for (user, changes) in changes {
        let refused = if !allowed {
            Some((
                ResponseError::ClusterAuthorizationFailed,
                "the client may not alter credentials".to_string(),
            ))
        } else {
            check(&user, &changes, current.get(&user))
        };
        if refused.is_none() {
            let mechanisms = next.entry(user.clone()).or_default();
            for &(mechanism, iterations) in &changes {
                match iterations {
                    Some((i, _)) => mechanisms.insert(mechanism, i),
                    None => mechanisms.remove(&mechanism),
                };
            }
            if mechanisms.is_empty() {
                next.remove(&user);
            }
        }
        outcome.push((user, refused));
    }
    let written = if next.len() > MAX_USERS {
        Err(format!(
            "a broker keeps the credentials of at most {MAX_USERS} users"
        ))
    } else if next != *current {
        let stored = Stored {
            version: VERSION,
            users: next,
        };
        let scram = &server.shared.scram;
        match meta::write(&StdFs, &scram.path, &stored) {
            Ok(()) => {
                *scram.users.write() = Arc::new(stored.users);
                Ok(())
            }
            Err(e) => {
                // A failure after the file's rename leaves the new credentials in it.
                if let Ok(Some(on_disk)) = meta::read::<Stored>(&scram.path) {
                    *scram.users.write() = Arc::new(on_disk.users);
                }
                Err(e.to_string())
            }
        }
    } else {
        Ok(())
    };
    let results = outcome
        .into_iter()
        .map(|(user, refused)| {
            let refused = match (refused, &written) {
                (Some(r), _) => Some(r),
                (None, Err(why)) => Some((ResponseError::UnknownServerError, why.clone())),
                (None, Ok(())) => None,
            };
            let reply = AlterUserScramCredentialsResult::default().with_user(text(user));
            match refused {
                Some((code, why)) => reply
                    .with_error_code(code.code())
                    .with_error_message(Some(text(why))),
                None => reply,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Why `user`'s changes are refused, as Kafka refuses them: an empty name, a mechanism named
/// twice, an unknown mechanism, an empty salt or salted password, iterations out of Kafka's
/// bounds, the deletion of a credential the user does not have.
fn check(user: &str, changes: &[Change], has: Option<&BTreeMap<i8, i32>>) -> Option<(ResponseError, String)> {
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Some((
            ResponseError::UnacceptableCredential,
            format!("a user name has 1 to {MAX_USER_BYTES} bytes"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for &(mechanism, iterations) in changes {
        if !seen.insert(mechanism) {
            return Some((
                ResponseError::DuplicateResource,
                format!("mechanism {mechanism} is altered twice for the user"),
            ));
        }
        if !MECHANISMS.contains(&mechanism) {
            return Some((
                ResponseError::UnsupportedSaslMechanism,
                format!("unknown SCRAM mechanism {mechanism}"),
            ));
        }
        match iterations {
            Some((_, false)) => {
                return Some((
                    ResponseError::UnacceptableCredential,
                    "the salt and the salted password must not be empty".to_string(),
                ));
            }
            Some((i, _)) if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&i) => {
                return Some((
                    ResponseError::UnacceptableCredential,
                    format!("{i} iterations: between {MIN_ITERATIONS} and {MAX_ITERATIONS} are taken"),
                ));
            }
            None if !has.is_some_and(|m| m.contains_key(&mechanism)) => {
                return Some((
                    ResponseError::ResourceNotFound,
                    "the user has no such credential to delete".to_string(),
                ));
            }
            _ => {}
        }
    }
    None
}

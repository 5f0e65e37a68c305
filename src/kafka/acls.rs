//! Access control lists, kept and applied as Kafka's authorizer does when it is configured with
//! `allow.everyone.if.no.acl.found=true`: a request on a resource that no ACL names is allowed;
//! once ACLs name a resource, only what they allow is, and a DENY wins over any ALLOW.
//!
//! The front end has no authentication (no SASL, no TLS), so every client is the principal
//! `User:ANONYMOUS`, known by its host (the peer's IP address): ACLs name `User:*` or
//! `User:ANONYMOUS` and a host, or `*`, to apply. The lists are kept in the broker's data
//! directory (`acls.meta`, replaced atomically), so they survive restarts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::Server;

use crate::error::{Error, Result};
use crate::storage::io::StdFs;
use crate::storage::meta;

/// The name of the file that keeps the ACLs, in the broker's data directory.
const FILE: &str = "acls.meta";
/// The layout of that file.
const VERSION: u32 = 1;
/// The most ACLs a broker keeps (each change rewrites their file); a creation past it is
/// refused.
pub const MAX_ACLS: usize = 10_000;
/// The longest resource name, principal or host an ACL may have. With [`MAX_ACLS`] it bounds
/// the ACLs' file and the memory they take.
pub const MAX_ACL_FIELD_BYTES: usize = 1_024;

/// The principal every client is: the front end authenticates no one.
pub(super) const ANONYMOUS: &str = "User:ANONYMOUS";
/// An ACL's principal or host that matches every one, and a LITERAL resource name that
/// matches every resource of its type.
const WILDCARD: &str = "*";
const ANY_USER: &str = "User:*";

/// Kafka's resource type codes (5 and 6, transactional ids and delegation tokens, lie between
/// these).
pub(super) mod resource {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const USER: i8 = 7;
}

/// Kafka's pattern type codes.
pub(super) mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's ACL operation codes (13 is CREATE_TOKENS).
pub(super) mod op {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const DESCRIBE_TOKENS: i8 = 14;
}

/// Kafka's permission type codes.
pub(super) mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The name of the one cluster resource.
pub(super) const CLUSTER_NAME: &str = "kafka-cluster";

/// One ACL: a resource pattern and an entry saying who may (or may not) do what from where.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(super) struct Acl {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// What DescribeAcls and DeleteAcls look for: `None` and the ANY codes match everything; the
/// MATCH pattern type matches the ACLs that apply to the named resource.
#[derive(Clone, Debug)]
pub(super) struct Filter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl Acl {
    /// Refuses an ACL that Kafka would not create: a pattern type other than LITERAL or
    /// PREFIXED, an unknown or ANY resource type, operation or permission, an empty resource
    /// name, or a principal without its `Type:` prefix.
    pub(super) fn validate(&self) -> std::result::Result<(), String> {
        for field in [&self.resource_name, &self.principal, &self.host] {
            if field.len() > MAX_ACL_FIELD_BYTES {
                return Err(format!("an ACL's names are at most {MAX_ACL_FIELD_BYTES} bytes"));
            }
        }
        if !(resource::TOPIC..=resource::USER).contains(&self.resource_type) {
            return Err(format!("invalid resource type {}", self.resource_type));
        }
        if ![pattern::LITERAL, pattern::PREFIXED].contains(&self.pattern_type) {
            return Err(format!(
                "invalid pattern type {}: an ACL is LITERAL or PREFIXED",
                self.pattern_type
            ));
        }
        if !(op::ALL..=op::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err(format!("invalid operation {}", self.operation));
        }
        if ![permission::DENY, permission::ALLOW].contains(&self.permission) {
            return Err(format!("invalid permission type {}", self.permission));
        }
        if self.resource_name.is_empty() {
            return Err("the resource name should not be empty".to_string());
        }
        if self.resource_type == resource::CLUSTER && self.resource_name != CLUSTER_NAME {
            return Err(format!("the cluster resource is named {CLUSTER_NAME:?}"));
        }
        if !self.principal.contains(':') {
            return Err(format!(
                "could not parse principal {:?}: no colon separates its type from its name",
                self.principal
            ));
        }
        Ok(())
    }

    /// Whether the ACL's entry applies to this client.
    fn applies_to(&self, host: &str) -> bool {
        (self.principal == ANONYMOUS || self.principal == ANY_USER)
            && (self.host == host || self.host == WILDCARD)
    }
}

impl Filter {
    /// Refuses a filter with a code Kafka does not know (its UNKNOWN), as Kafka does.
    pub(super) fn validate(&self) -> std::result::Result<(), String> {
        let known = (resource::ANY..=resource::USER).contains(&self.resource_type)
            && (pattern::ANY..=pattern::PREFIXED).contains(&self.pattern_type)
            && (op::ANY..=op::DESCRIBE_TOKENS).contains(&self.operation)
            && (permission::ANY..=permission::ALLOW).contains(&self.permission);
        if known {
            Ok(())
        } else {
            Err("the ACL filter must not contain UNKNOWN elements".to_string())
        }
    }

    /// Whether `acl` is one this filter selects.
    pub(super) fn matches(&self, acl: &Acl) -> bool {
        let resource = (self.resource_type == resource::ANY || self.resource_type == acl.resource_type)
            && match (self.pattern_type, &self.resource_name) {
                (pattern::ANY | pattern::MATCH, None) => true,
                (p, None) => p == acl.pattern_type,
                (pattern::ANY, Some(name)) => *name == acl.resource_name,
                (pattern::MATCH, Some(name)) => match acl.pattern_type {
                    pattern::LITERAL => *name == acl.resource_name || acl.resource_name == WILDCARD,
                    pattern::PREFIXED => name.starts_with(&acl.resource_name),
                    _ => false,
                },
                (p, Some(name)) => p == acl.pattern_type && *name == acl.resource_name,
            };
        resource
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == op::ANY || self.operation == acl.operation)
            && (self.permission == permission::ANY || self.permission == acl.permission)
    }
}

/// Whether an ALLOW of `granted` allows `wanted`: the same operation, ALL, or one that implies
/// it (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS).
fn implies(granted: i8, wanted: i8) -> bool {
    granted == wanted
        || granted == op::ALL
        || (wanted == op::DESCRIBE && [op::READ, op::WRITE, op::DELETE, op::ALTER].contains(&granted))
        || (wanted == op::DESCRIBE_CONFIGS && granted == op::ALTER_CONFIGS)
}

/// A host as ACLs and clients name it: an IP address in its canonical text (an IPv4 address
/// mapped into IPv6 as IPv4, IPv6 compressed), anything else (`*`, a name) as given.
pub(super) fn canonical_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host.to_string(),
    }
}

/// ACLs by resource type, then name.
type ByName = HashMap<i8, HashMap<String, Vec<Acl>>>;

/// The ACLs, indexed for checks: by resource type and name, LITERAL and PREFIXED apart, so a
/// check looks up the resource's name, the wildcard, and each prefix of the name.
#[derive(Default)]
struct Index {
    all: Vec<Acl>,
    literal: ByName,
    prefixed: ByName,
    /// The resource types any ACL names.
    types: HashSet<i8>,
    /// The lengths of the PREFIXED ACLs' names, by resource type: the prefixes of a name
    /// worth looking up.
    prefix_lengths: HashMap<i8, std::collections::BTreeSet<usize>>,
}

impl Index {
    fn new(all: Vec<Acl>) -> Index {
        let mut index = Index::default();
        for acl in &all {
            let by_name = if acl.pattern_type == pattern::PREFIXED {
                &mut index.prefixed
            } else {
                &mut index.literal
            };
            by_name
                .entry(acl.resource_type)
                .or_default()
                .entry(acl.resource_name.clone())
                .or_default()
                .push(acl.clone());
            index.types.insert(acl.resource_type);
            if acl.pattern_type == pattern::PREFIXED {
                index
                    .prefix_lengths
                    .entry(acl.resource_type)
                    .or_default()
                    .insert(acl.resource_name.len());
            }
        }
        index.all = all;
        index
    }

    /// The ACLs that cover a resource.
    fn covering<'a>(&'a self, resource_type: i8, name: &'a str) -> impl Iterator<Item = &'a Acl> {
        let literal = self.literal.get(&resource_type);
        let prefixed = self.prefixed.get(&resource_type);
        let exact = literal.and_then(|m| m.get(name)).into_iter().flatten();
        let wildcard = literal
            .filter(|_| name != WILDCARD)
            .and_then(|m| m.get(WILDCARD))
            .into_iter()
            .flatten();
        // Only the lengths some PREFIXED ACL has: at most as many lookups as distinct lengths,
        // each hashing at most MAX_ACL_FIELD_BYTES, however long the name.
        let lengths = self.prefix_lengths.get(&resource_type);
        let prefixes = prefixed.zip(lengths).into_iter().flat_map(move |(m, lengths)| {
            lengths
                .range(..=name.len())
                .filter_map(move |&n| name.get(..n))
                .filter_map(move |prefix| m.get(prefix))
                .flatten()
        });
        exact.chain(wildcard).chain(prefixes)
    }
}

/// The ACLs of one broker.
pub(super) struct Acls {
    path: PathBuf,
    current: RwLock<Arc<Index>>,
    /// Held by a change from reading the current ACLs to installing the new ones.
    changing: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    acls: Vec<Acl>,
}

impl std::fmt::Debug for Acls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acls")
            .field("path", &self.path)
            .field("count", &self.current.read().all.len())
            .finish()
    }
}

impl Acls {
    /// The ACLs kept in `dir` (none if the file is not there).
    pub(super) fn open(dir: &Path) -> Result<Acls> {
        let path = dir.join(FILE);
        let acls = Self::read(&path)?;
        Ok(Acls {
            path,
            current: RwLock::new(Arc::new(Index::new(acls))),
            changing: Mutex::new(()),
        })
    }

    fn read(path: &Path) -> Result<Vec<Acl>> {
        match meta::read::<Stored>(path)? {
            None => Ok(Vec::new()),
            Some(s) if s.version > VERSION => Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found: s.version,
                supported: VERSION,
            }),
            Some(s) => Ok(s.acls),
        }
    }

    /// Whether a client at `host` may do `operation` on the resource `name` of `resource_type`.
    pub(super) fn allows(&self, host: &str, operation: i8, resource_type: i8, name: &str) -> bool {
        let index = self.current.read().clone();
        if index.all.is_empty() {
            return true;
        }
        let mut any = false;
        let mut allowed = false;
        for acl in index.covering(resource_type, name) {
            any = true;
            if !acl.applies_to(host) {
                continue;
            }
            if acl.permission == permission::DENY && (acl.operation == operation || acl.operation == op::ALL)
            {
                return false;
            }
            allowed |= acl.permission == permission::ALLOW && implies(acl.operation, operation);
        }
        allowed || !any
    }

    /// Whether a client at `host` may do `operation` on some resource of `resource_type`, as
    /// Kafka's authorization by resource type answers it: when it may on a resource named
    /// "hardcode" (Kafka's own probe: true when no wildcard or prefix denies it or names it),
    /// or when an ACL that allows it names a resource it is not denied on.
    pub(super) fn allows_some(&self, host: &str, operation: i8, resource_type: i8) -> bool {
        let index = self.current.read().clone();
        if !index.types.contains(&resource_type) || self.allows(host, operation, resource_type, "hardcode") {
            return true;
        }
        index.all.iter().any(|acl| {
            acl.resource_type == resource_type
                && acl.permission == permission::ALLOW
                && acl.applies_to(host)
                && implies(acl.operation, operation)
                && self.allows(host, operation, resource_type, &acl.resource_name)
        })
    }

    /// The ACLs `filter` selects.
    pub(super) fn describe(&self, filter: &Filter) -> Vec<Acl> {
        let index = self.current.read().clone();
        index.all.iter().filter(|a| filter.matches(a)).cloned().collect()
    }

    /// Adds `acls` (each already valid; one already kept is kept once), all or none: an error
    /// if they would pass [`MAX_ACLS`] or cannot be written.
    pub(super) fn create(&self, acls: &[Acl]) -> std::result::Result<(), String> {
        if acls.len() > MAX_ACLS {
            return Err(format!("a broker keeps at most {MAX_ACLS} ACLs"));
        }
        let _changing = self.changing.lock();
        let index = self.current.read().clone();
        let mut kept: HashSet<&Acl> = index.all.iter().collect();
        let mut all = index.all.clone();
        for acl in acls {
            if kept.insert(acl) {
                all.push(acl.clone());
            }
        }
        if all.len() > MAX_ACLS {
            return Err(format!("a broker keeps at most {MAX_ACLS} ACLs"));
        }
        if all.len() != index.all.len() {
            self.install(all)?;
        }
        Ok(())
    }

    /// Removes the ACLs the filters select: for each filter, the ones it selects (an ACL
    /// two filters select is listed by both, as Kafka lists it), or an error if nothing could
    /// be written.
    pub(super) fn delete(&self, filters: &[Filter]) -> std::result::Result<Vec<Vec<Acl>>, String> {
        let _changing = self.changing.lock();
        let index = self.current.read().clone();
        let removed: Vec<Vec<Acl>> = filters
            .iter()
            .map(|f| index.all.iter().filter(|a| f.matches(a)).cloned().collect())
            .collect();
        let gone: HashSet<&Acl> = removed.iter().flatten().collect();
        if !gone.is_empty() {
            let kept = index.all.iter().filter(|a| !gone.contains(a)).cloned().collect();
            self.install(kept)?;
        }
        Ok(removed)
    }

    /// Writes `acls` to the file, then makes them the current ones. If the write fails, the
    /// ACLs are what the file then holds (a failure after its rename leaves the new ones).
    fn install(&self, acls: Vec<Acl>) -> std::result::Result<(), String> {
        let stored = Stored {
            version: VERSION,
            acls,
        };
        match meta::write(&StdFs, &self.path, &stored) {
            Ok(()) => {
                *self.current.write() = Arc::new(Index::new(stored.acls));
                Ok(())
            }
            Err(e) => {
                if let Ok(on_disk) = Self::read(&self.path) {
                    *self.current.write() = Arc::new(Index::new(on_disk));
                }
                Err(e.to_string())
            }
        }
    }
}

/// The client a request comes from, as ACLs know it.
#[derive(Clone, Debug)]
pub(super) struct Client {
    /// The peer's IP address, as ACL hosts name it.
    pub host: String,
}

impl Client {
    pub(super) fn at(peer: std::net::SocketAddr) -> Client {
        Client {
            host: peer.ip().to_canonical().to_string(),
        }
    }

    /// Whether this client may do `operation` on the resource `name` of `resource_type`
    /// (anything, on a server that does not apply ACLs).
    pub(super) fn may(&self, server: &Server, operation: i8, resource_type: i8, name: &str) -> bool {
        !server.config.acls
            || server
                .shared
                .acls
                .allows(&self.host, operation, resource_type, name)
    }

    /// Whether this client may do `operation` on the cluster.
    pub(super) fn may_on_cluster(&self, server: &Server, operation: i8) -> bool {
        self.may(server, operation, resource::CLUSTER, CLUSTER_NAME)
    }
}

fn text(s: String) -> StrBytes {
    StrBytes::from(s)
}

const CLUSTER_DENIED: &str = "the client may not do this on the cluster";
const NO_AUTHORIZER: &str = "this server applies no ACLs (see ServerConfig::acls)";

/// DescribeAcls: the ACLs the filter selects, grouped by resource pattern (DESCRIBE on the
/// cluster needed).
pub(super) fn describe_acls(
    server: &Server,
    client: &Client,
    request: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let refuse = |code: ResponseError, why: String| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(text(why)))
    };
    if !server.config.acls {
        return refuse(ResponseError::SecurityDisabled, NO_AUTHORIZER.to_string());
    }
    if !client.may_on_cluster(server, op::DESCRIBE) {
        return refuse(
            ResponseError::ClusterAuthorizationFailed,
            CLUSTER_DENIED.to_string(),
        );
    }
    let filter = Filter {
        resource_type: request.resource_type_filter,
        resource_name: request.resource_name_filter.map(|n| n.to_string()),
        pattern_type: request.pattern_type_filter,
        principal: request.principal_filter.map(|n| n.to_string()),
        host: request.host_filter.map(|n| canonical_host(&n)),
        operation: request.operation,
        permission: request.permission_type,
    };
    if let Err(why) = filter.validate() {
        return refuse(ResponseError::InvalidRequest, why);
    }
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    let mut at: HashMap<(i8, String, i8), usize> = HashMap::new();
    for acl in server.shared.acls.describe(&filter) {
        let key = (acl.resource_type, acl.resource_name.clone(), acl.pattern_type);
        let i = *at.entry(key).or_insert_with(|| {
            resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(acl.resource_type)
                    .with_resource_name(text(acl.resource_name.clone()))
                    .with_pattern_type(acl.pattern_type),
            );
            resources.len() - 1
        });
        resources[i].acls.push(
            AclDescription::default()
                .with_principal(text(acl.principal))
                .with_host(text(acl.host))
                .with_operation(acl.operation)
                .with_permission_type(acl.permission),
        );
    }
    DescribeAclsResponse::default().with_resources(resources)
}

/// CreateAcls: each valid creation kept (ALTER on the cluster needed); an invalid one refused
/// alone with INVALID_REQUEST, as Kafka does.
pub(super) fn create_acls(
    server: &Server,
    client: &Client,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let refused = |code: ResponseError, why: &str| {
        AclCreationResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from(why.to_string())))
    };
    let denied = match () {
        () if !server.config.acls => Some((ResponseError::SecurityDisabled, NO_AUTHORIZER)),
        () if !client.may_on_cluster(server, op::ALTER) => {
            Some((ResponseError::ClusterAuthorizationFailed, CLUSTER_DENIED))
        }
        () => None,
    };
    if let Some((code, why)) = denied {
        let results = request.creations.iter().map(|_| refused(code, why)).collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let checked: Vec<std::result::Result<Acl, String>> = request
        .creations
        .into_iter()
        .map(|c| {
            let acl = Acl {
                resource_type: c.resource_type,
                resource_name: c.resource_name.to_string(),
                pattern_type: c.resource_pattern_type,
                principal: c.principal.to_string(),
                host: canonical_host(&c.host),
                operation: c.operation,
                permission: c.permission_type,
            };
            acl.validate().map(|()| acl)
        })
        .collect();
    let valid: Vec<Acl> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
    let written = if valid.is_empty() {
        Ok(())
    } else {
        server.shared.acls.create(&valid)
    };
    let results = checked
        .iter()
        .map(|c| match (c, &written) {
            (Err(why), _) => refused(ResponseError::InvalidRequest, why),
            (Ok(_), Err(why)) => refused(ResponseError::UnknownServerError, why),
            (Ok(_), Ok(())) => AclCreationResult::default(),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// DeleteAcls: for each filter, the ACLs it removed (ALTER on the cluster needed).
pub(super) fn delete_acls(
    server: &Server,
    client: &Client,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let refused = |code: ResponseError, why: &str| {
        DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from(why.to_string())))
    };
    let denied = match () {
        () if !server.config.acls => Some((ResponseError::SecurityDisabled, NO_AUTHORIZER)),
        () if !client.may_on_cluster(server, op::ALTER) => {
            Some((ResponseError::ClusterAuthorizationFailed, CLUSTER_DENIED))
        }
        () => None,
    };
    if let Some((code, why)) = denied {
        let results = request.filters.iter().map(|_| refused(code, why)).collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let filters: Vec<Filter> = request
        .filters
        .into_iter()
        .map(|f| Filter {
            resource_type: f.resource_type_filter,
            resource_name: f.resource_name_filter.map(|n| n.to_string()),
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter.map(|n| n.to_string()),
            host: f.host_filter.map(|n| canonical_host(&n)),
            operation: f.operation,
            permission: f.permission_type,
        })
        .collect();
    let checked: Vec<std::result::Result<(), String>> = filters.iter().map(Filter::validate).collect();
    let valid: Vec<Filter> = filters
        .iter()
        .zip(&checked)
        .filter(|(_, c)| c.is_ok())
        .map(|(f, _)| f.clone())
        .collect();
    let removed = server.shared.acls.delete(&valid);
    let mut removed = match removed {
        Ok(r) => r.into_iter(),
        Err(why) => {
            let results = checked
                .iter()
                .map(|c| match c {
                    Err(bad) => refused(ResponseError::InvalidRequest, bad),
                    Ok(()) => refused(ResponseError::UnknownServerError, &why),
                })
                .collect();
            return DeleteAclsResponse::default().with_filter_results(results);
        }
    };
    let results = checked
        .iter()
        .map(|c| match c {
            Err(bad) => refused(ResponseError::InvalidRequest, bad),
            Ok(()) => {
                let matching = removed
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|acl| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(acl.resource_type)
                            .with_resource_name(text(acl.resource_name))
                            .with_pattern_type(acl.pattern_type)
                            .with_principal(text(acl.principal))
                            .with_host(text(acl.host))
                            .with_operation(acl.operation)
                            .with_permission_type(acl.permission)
                    })
                    .collect();
                DeleteAclsFilterResult::default().with_matching_acls(matching)
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        resource_type: i8,
        name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Acl {
        Acl {
            resource_type,
            resource_name: name.to_string(),
            pattern_type,
            principal: principal.to_string(),
            host: host.to_string(),
            operation,
            permission,
        }
    }

    #[test]
    fn kafkas_rules_decide() {
        let dir = tempfile::tempdir().unwrap();
        let acls = Acls::open(dir.path()).unwrap();
        use op::*;
        use pattern::*;
        use permission::*;
        use resource::*;
        // No ACLs: everything is allowed.
        assert!(acls.allows("10.0.0.1", WRITE, TOPIC, "t"));
        acls.create(&[
            acl(TOPIC, "t", LITERAL, ANY_USER, "10.0.0.1", READ, ALLOW),
            acl(TOPIC, "t", LITERAL, ANONYMOUS, "10.0.0.2", ALL, DENY),
            acl(TOPIC, "logs-", PREFIXED, "User:*", "*", WRITE, ALLOW),
            acl(TOPIC, "*", LITERAL, "User:*", "*", ALTER_CONFIGS, ALLOW),
            acl(GROUP, "g", LITERAL, "User:bob", "*", READ, ALLOW),
        ])
        .unwrap();
        // READ allowed from .1 and implies DESCRIBE; WRITE is not.
        assert!(acls.allows("10.0.0.1", READ, TOPIC, "t"));
        assert!(acls.allows("10.0.0.1", DESCRIBE, TOPIC, "t"));
        assert!(!acls.allows("10.0.0.1", WRITE, TOPIC, "t"));
        // The wildcard's ALTER_CONFIGS covers every topic and implies DESCRIBE_CONFIGS.
        assert!(acls.allows("10.0.0.1", DESCRIBE_CONFIGS, TOPIC, "t"));
        assert!(acls.allows("10.0.0.3", DESCRIBE_CONFIGS, TOPIC, "other"));
        // Now that an ACL names every topic, what none allows is denied.
        assert!(!acls.allows("10.0.0.3", READ, TOPIC, "other"));
        // DENY ALL from .2 wins over the wildcard's ALLOW.
        assert!(!acls.allows("10.0.0.2", ALTER_CONFIGS, TOPIC, "t"));
        // Prefixed.
        assert!(acls.allows("10.0.0.9", WRITE, TOPIC, "logs-1"));
        assert!(!acls.allows("10.0.0.9", WRITE, TOPIC, "log"));
        // The group's ACL names another principal: the anonymous client may not.
        assert!(!acls.allows("10.0.0.1", READ, GROUP, "g"));
        assert!(acls.allows("10.0.0.1", READ, GROUP, "h"));
        // Some topic may be written from anywhere (logs-*); only .1 may read one (t).
        assert!(acls.allows_some("10.0.0.9", WRITE, TOPIC));
        assert!(acls.allows_some("10.0.0.1", READ, TOPIC));
        assert!(!acls.allows_some("10.0.0.9", READ, TOPIC));
        // No ACL names a transactional id: every client may.
        assert!(acls.allows_some("10.0.0.9", WRITE, 5));

        // Kept across a reopening; deleted by filter.
        let acls = Acls::open(dir.path()).unwrap();
        let everything = Filter {
            resource_type: resource::ANY,
            resource_name: None,
            pattern_type: pattern::ANY,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        assert_eq!(acls.describe(&everything).len(), 5);
        let matching_t = Filter {
            resource_type: TOPIC,
            resource_name: Some("t".to_string()),
            pattern_type: MATCH,
            ..everything.clone()
        };
        assert_eq!(acls.describe(&matching_t).len(), 3);
        let removed = acls.delete(&[matching_t, everything.clone()]).unwrap();
        // An ACL both filters select is listed by both, as Kafka lists it.
        assert_eq!((removed[0].len(), removed[1].len()), (3, 5));
        assert!(Acls::open(dir.path()).unwrap().describe(&everything).is_empty());
    }

    #[test]
    fn hosts_are_compared_as_canonical_addresses() {
        assert_eq!(canonical_host("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(canonical_host("0:0:0:0:0:0:0:1"), "::1");
        for kept in ["*", "10.0.0.1", "example.com"] {
            assert_eq!(canonical_host(kept), kept);
        }
        // A PREFIXED ACL covers a long name through one lookup of its own length.
        let dir = tempfile::tempdir().unwrap();
        let acls = Acls::open(dir.path()).unwrap();
        acls.create(&[acl(
            resource::TOPIC,
            "ab",
            pattern::PREFIXED,
            ANY_USER,
            "*",
            op::WRITE,
            permission::DENY,
        )])
        .unwrap();
        let long = format!("ab{}", "x".repeat(32_000));
        assert!(!acls.allows("::1", op::WRITE, resource::TOPIC, &long));
        assert!(
            !acls.allows("::1", op::READ, resource::TOPIC, &long),
            "named, so only what is allowed"
        );
        assert!(acls.allows("::1", op::WRITE, resource::TOPIC, "a"));
    }

    #[test]
    fn invalid_acls_and_filters_are_refused() {
        use pattern::*;
        let good = acl(
            resource::TOPIC,
            "t",
            LITERAL,
            "User:a",
            "*",
            op::READ,
            permission::ALLOW,
        );
        assert!(good.validate().is_ok());
        let bad = [
            Acl {
                pattern_type: MATCH,
                ..good.clone()
            },
            Acl {
                resource_type: resource::ANY,
                ..good.clone()
            },
            Acl {
                operation: op::ANY,
                ..good.clone()
            },
            Acl {
                permission: permission::ANY,
                ..good.clone()
            },
            Acl {
                resource_name: String::new(),
                ..good.clone()
            },
            Acl {
                principal: "a".to_string(),
                ..good.clone()
            },
            Acl {
                resource_type: resource::CLUSTER,
                ..good.clone()
            },
        ];
        for acl in bad {
            assert!(acl.validate().is_err(), "{acl:?}");
        }
        let filter = Filter {
            resource_type: 0,
            resource_name: None,
            pattern_type: ANY,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        assert!(filter.validate().is_err());
    }
}

//! SCRAM credentials, as a Kafka broker without SASL/SCRAM listeners keeps them: altered and
//! described over the wire, checked as Kafka checks them, kept across restarts, and stored
//! without the salts and salted passwords (the front end authenticates no one with them).
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Fsync};
use tokio::net::TcpStream;

const SHA_256: i8 = 1;
const SHA_512: i8 = 2;

fn text(t: &'static str) -> StrBytes {
    StrBytes::from_static_str(t)
}

fn upsert(user: &'static str, mechanism: i8, iterations: i32) -> ScramCredentialUpsertion {
    ScramCredentialUpsertion::default()
        .with_name(text(user))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salt(Bytes::from_static(b"pinch-of-salt"))
        .with_salted_password(Bytes::from_static(b"SECRET-SALTED-PASSWORD"))
}

fn delete(user: &'static str, mechanism: i8) -> ScramCredentialDeletion {
    ScramCredentialDeletion::default()
        .with_name(text(user))
        .with_mechanism(mechanism)
}

async fn alter(
    s: &mut TcpStream,
    deletions: Vec<ScramCredentialDeletion>,
    upsertions: Vec<ScramCredentialUpsertion>,
) -> Vec<(String, i16)> {
    let request = AlterUserScramCredentialsRequest::default()
        .with_deletions(deletions)
        .with_upsertions(upsertions);
    let reply: AlterUserScramCredentialsResponse =
        wire::ask(s, ApiKey::AlterUserScramCredentials, 0, &request).await;
    reply
        .results
        .iter()
        .map(|r| (r.user.to_string(), r.error_code))
        .collect()
}

/// Each user's error code and credentials (mechanism, iterations).
async fn describe(s: &mut TcpStream, users: Option<&[&'static str]>) -> Vec<(String, i16, Vec<(i8, i32)>)> {
    let users = users.map(|u| {
        u.iter()
            .map(|&n| UserName::default().with_name(text(n)))
            .collect()
    });
    let request = DescribeUserScramCredentialsRequest::default().with_users(users);
    let reply: DescribeUserScramCredentialsResponse =
        wire::ask(s, ApiKey::DescribeUserScramCredentials, 0, &request).await;
    assert_eq!(reply.error_code, 0);
    reply
        .results
        .iter()
        .map(|r| {
            let infos = r
                .credential_infos
                .iter()
                .map(|c| (c.mechanism, c.iterations))
                .collect();
            (r.user.to_string(), r.error_code, infos)
        })
        .collect()
}

fn user(name: &str, code: i16, infos: &[(i8, i32)]) -> (String, i16, Vec<(i8, i32)>) {
    (name.to_string(), code, infos.to_vec())
}

#[tokio::test]
async fn scram_credentials_are_checked_listed_and_kept_without_secrets() {
    // RESOURCE_NOT_FOUND 91, DUPLICATE_RESOURCE 92, UNACCEPTABLE_CREDENTIAL 93,
    // UNSUPPORTED_SASL_MECHANISM 33.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let (addr, stop) = wire::serve(&broker, Default::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let c = &mut c;
    assert_eq!(describe(c, Some(&["alice"])).await, [user("alice", 91, &[])]);

    let altered = alter(
        c,
        vec![delete("carol", SHA_256)],
        vec![
            upsert("alice", SHA_256, 8192),
            upsert("alice", SHA_512, 4096),
            upsert("bob", SHA_256, 100),
            upsert("dave", 7, 8192),
            upsert("", SHA_256, 8192),
            upsert("erin", SHA_256, 8192).with_salt(Bytes::new()),
        ],
    )
    .await;
    let expected = [
        ("", 93),
        ("alice", 0),
        ("bob", 93),
        ("carol", 91),
        ("dave", 33),
        ("erin", 93),
    ];
    let expected: Vec<(String, i16)> = expected.iter().map(|&(u, e)| (u.to_string(), e)).collect();
    assert_eq!(altered, expected);

    let alice = user("alice", 0, &[(SHA_256, 8192), (SHA_512, 4096)]);
    assert_eq!(
        describe(c, Some(&["alice", "bob"])).await,
        [alice.clone(), user("bob", 91, &[])]
    );
    assert_eq!(
        describe(c, Some(&["alice", "alice"])).await,
        [user("alice", 92, &[])]
    );
    assert_eq!(describe(c, None).await, std::slice::from_ref(&alice));

    // Kept across a restart (the broker reopened from its directory); the file holds no salt
    // or salted password.
    drop(stop);
    let broker = wire::reopen(broker, dir.path()).await;
    let (addr, stop) = wire::serve(&broker, Default::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let c = &mut c;
    assert_eq!(describe(c, Some(&["alice"])).await, [alice]);
    let stored = std::fs::read(dir.path().join("scram-credentials.meta")).unwrap();
    for secret in [&b"SECRET-SALTED-PASSWORD"[..], b"pinch-of-salt"] {
        assert!(!stored.windows(secret.len()).any(|w| w == secret));
    }

    // Deleted one mechanism at a time.
    let deleted = alter(
        c,
        vec![delete("alice", SHA_256), delete("alice", SHA_512)],
        vec![],
    )
    .await;
    assert_eq!(deleted, [("alice".to_string(), 0)]);
    assert_eq!(describe(c, Some(&["alice"])).await, [user("alice", 91, &[])]);
    drop(stop);
}

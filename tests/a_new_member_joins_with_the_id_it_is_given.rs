//! JoinGroup v4 and later, as in Kafka: a new dynamic member (empty member id) is answered
//! MEMBER_ID_REQUIRED with its id and joins with it; until then it is no member, so joins a
//! client gave up on leave no ghost members holding partitions, and an id not used within the
//! session timeout is forgotten.
#![cfg(feature = "kafka")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::{
    ApiKey, GroupId, JoinGroupRequest, JoinGroupResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rivulet::{Broker, Fsync};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const MEMBER_ID_REQUIRED: i16 = 79;
const UNKNOWN_MEMBER_ID: i16 = 25;

fn join(stream: &mut TcpStream, version: i16, member_id: &str, session_ms: i32) -> Result<JoinGroupResponse> {
    // Versions before 4 in their own group, so no join waits for the others' rebalance.
    let group = format!("g{}", version.min(4));
    let body = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from(group)))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(5_000)
        .with_member_id(StrBytes::from(member_id.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(&[
                    0, 1, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0,
                ])),
        ]);
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::JoinGroup as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("raw")))
        .encode(&mut frame, ApiKey::JoinGroup.request_header_version(version))?;
    body.encode(&mut frame, version)?;
    stream.write_all(&(frame.len() as u32).to_be_bytes())?;
    stream.write_all(&frame)?;
    let mut len = [0; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    let mut buf = Bytes::from(buf);
    ResponseHeader::decode(&mut buf, ApiKey::JoinGroup.response_header_version(version))?;
    Ok(JoinGroupResponse::decode(&mut buf, version)?)
}

#[test]
fn a_new_member_gets_its_id_first_and_joins_with_it() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    runtime.spawn(rivulet::kafka::serve(
        listener,
        broker.clone(),
        std::future::pending(),
    ));
    let mut stream = TcpStream::connect(addr)?;

    // Two joins the client gave up on, then the one it completes: one member.
    let first = join(&mut stream, 5, "", 10_000)?;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    assert!(first.member_id.starts_with("raw-"), "{:?}", first.member_id);
    let retried = join(&mut stream, 5, "", 10_000)?;
    assert_eq!(retried.error_code, MEMBER_ID_REQUIRED);
    assert_ne!(retried.member_id, first.member_id);
    assert!(
        broker
            .coordinator()
            .describe("g4")
            .expect("known")
            .members
            .is_empty()
    );
    let joined = join(&mut stream, 5, &retried.member_id, 10_000)?;
    assert_eq!(joined.error_code, 0);
    assert_eq!(
        (joined.member_id.as_str(), joined.generation_id),
        (retried.member_id.as_str(), 1)
    );
    assert_eq!(
        broker.coordinator().describe("g4").expect("known").members.len(),
        1
    );

    // An id not joined with within the session timeout is forgotten.
    let late = join(&mut stream, 4, "", 200)?;
    assert_eq!(late.error_code, MEMBER_ID_REQUIRED);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        join(&mut stream, 4, &late.member_id, 200)?.error_code,
        UNKNOWN_MEMBER_ID
    );

    // Before v4 a new member joins at once.
    let old = join(&mut stream, 3, "", 10_000)?;
    assert_eq!(old.error_code, 0);
    assert!(!old.member_id.is_empty());
    Ok(())
}

//! Talking raw Kafka protocol to `rivulet::kafka::serve_with` on 127.0.0.1:0: requests
//! encoded and responses decoded with the `kafka-protocol` crate. Included with
//! `#[path = "common/wire.rs"] mod wire;` by the Kafka tests that need it.
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rivulet::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server on 127.0.0.1:0 for `broker`; dropping the sender stops it.
pub async fn serve(
    broker: &Broker,
    config: rivulet::kafka::ServerConfig,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(rivulet::kafka::serve_with(
        listener,
        broker.clone(),
        config,
        async {
            stopped.await.ok();
        },
    ));
    (addr, stop)
}

/// Sends one frame; the response frame, or `None` if the server closed the connection.
pub async fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Option<Bytes> {
    send(stream, frame).await?;
    receive(stream).await
}

/// Sends one frame with its length prefix, in one write (two small writes would wait on
/// Nagle's algorithm for the server's delayed acknowledgement).
pub async fn send(stream: &mut TcpStream, frame: &[u8]) -> Option<()> {
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out).await.ok()
}

/// The next response frame, or `None` if the server closed the connection.
pub async fn receive(stream: &mut TcpStream) -> Option<Bytes> {
    let len = stream.read_u32().await.ok()?;
    let mut buf = vec![0; len as usize];
    stream.read_exact(&mut buf).await.ok()?;
    Some(Bytes::from(buf))
}

/// A request frame (header with correlation id 7, then `body`).
pub fn request<T: Encodable>(api: ApiKey, version: i16, body: &T) -> BytesMut {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("wire")))
        .encode(&mut out, api.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    out
}

/// Decodes a response frame, checking its correlation id.
pub fn response<T: Decodable>(api: ApiKey, version: i16, mut frame: Bytes) -> T {
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    T::decode(&mut frame, version).unwrap()
}

/// Sends `request` as `api` at `version` and decodes its answer (the server must answer).
pub async fn ask<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    let frame = exchange(stream, &self::request(api, version, request))
        .await
        .expect("an answer");
    response(api, version, frame)
}

/// A Produce (acks -1) of `records` to `topic`'s partition 0.
pub fn produce_request(topic: &'static str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

/// `broker` dropped and its directory opened again (with `Fsync::Never`), once the servers
/// that held it have let it go: what a restart of the process finds.
pub async fn reopen(broker: Broker, dir: &std::path::Path) -> Broker {
    drop(broker);
    for _ in 0..500 {
        match Broker::builder(dir).fsync(rivulet::Fsync::Never).open() {
            Ok(broker) => return broker,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    panic!("the broker in {} did not open again", dir.display());
}

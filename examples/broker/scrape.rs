//! `--metrics ADDR`: the broker's metrics (see `rivulet::telemetry`) for Prometheus to scrape,
//! over plain HTTP at any path, with each group's committed lag added at every scrape.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rivulet::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Installs the Prometheus recorder: before the broker opens, so its logs' counters reach it.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    rivulet::telemetry::describe_metrics();
    metrics::describe_gauge!(
        "rivulet_group_lag",
        "Records between a group's committed offset and its partition's end"
    );
    Ok(handle)
}

/// The most bytes of a scrape request read before answering (its headers are not needed).
const MAX_REQUEST: usize = 8 << 10;

/// Scrapes answered at once; a connection past them is closed unanswered.
const MAX_SCRAPES: usize = 4;

/// How long one scrape may take, from its connection to its last byte sent.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers scrapes on `listener` until the process ends.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, broker: Broker) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::warn!("metrics: {MAX_SCRAPES} scrapes under way; {peer} refused");
            continue;
        };
        let handle = handle.clone();
        let broker = broker.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(SCRAPE_TIMEOUT, answer(&mut stream, &handle, broker)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::debug!("metrics: {peer}: {e}"),
                Err(_) => log::debug!("metrics: {peer}: took longer than {SCRAPE_TIMEOUT:?}"),
            }
            drop(slot);
        });
    }
}

async fn answer(
    stream: &mut tokio::net::TcpStream,
    handle: &PrometheusHandle,
    broker: Broker,
) -> std::io::Result<()> {
    // Read the request line and headers (bounded); nothing is done for a partial request.
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() >= MAX_REQUEST {
            return Err(std::io::Error::other("a request too long"));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("a request cut short"));
        }
        request.extend_from_slice(&buf[..n]);
    }
    // Group lag reads the offsets store: off the runtime's workers.
    tokio::task::spawn_blocking(move || group_lag(&broker))
        .await
        .map_err(std::io::Error::other)?;
    handle.run_upkeep();
    let body = handle.render();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Sets `rivulet_group_lag` for every partition every group has committed an offset for.
fn group_lag(broker: &Broker) {
    let Ok(groups) = broker.list_groups() else { return };
    for (group, _) in groups {
        let Ok(offsets) = broker.group_offsets(&group) else {
            continue;
        };
        for o in offsets {
            metrics::gauge!(
                "rivulet_group_lag",
                "group" => group.clone(),
                "topic" => o.partition.topic.clone(),
                "partition" => o.partition.partition.to_string()
            )
            .set(o.lag as f64);
        }
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}

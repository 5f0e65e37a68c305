//! Three cluster nodes in one process on loopback, started and ready. Included with
//! `#[path = "common/three_nodes.rs"] mod three_nodes;` by the cluster tests that need it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rivulet::cluster::{Cluster, ClusterBuilder};

/// Starts nodes 1, 2 and 3 (founding voters of one cluster, each in a directory of its own)
/// and waits until each is ready; blocks, so call it off the async runtime. The directories
/// go with the returned guards.
pub fn start() -> (Vec<Cluster>, Vec<tempfile::TempDir>) {
    // Free loopback ports for the peers (bound and released).
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let voters: Vec<(u64, SocketAddr)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap()))
        .collect();
    drop(listeners);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Cluster> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            ClusterBuilder::new(i as u64 + 1, d.path().join("node"))
                .voters(voters.iter().copied())
                .start()
                .expect("the node starts")
        })
        .collect();
    for n in &nodes {
        n.wait_ready(Duration::from_secs(30)).unwrap();
    }
    (nodes, dirs)
}

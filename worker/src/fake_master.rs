//! What the worker's tests of calls to the master share: a gRPC master of
//! the test's own on a loopback port, and a wait on a condition.
#![allow(clippy::expect_used)]

use std::time::Duration;

use faena_proto::grpc::master_server::{Master, MasterServer};
use faena_proto::secret::Secret;
use tonic::transport::server::TcpIncoming;
use tonic::{Response, Status};

use crate::client::{Client, Session};

/// The answer of a call a fake master does not take.
pub(crate) fn nope<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this test"))
}

/// Serves `master` on a free loopback port; a client of it.
pub(crate) fn serve(master: impl Master) -> (Client, Session) {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = incoming.local_addr().expect("addr");
    let svc = MasterServer::new(master);
    tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming));
    let tls = faena_common::tls::TlsArgs::default();
    crate::client::connect(&format!("http://{addr}"), &Secret::new("t"), &tls).expect("client")
}

/// Waits (at most 10 s) until `done`.
pub(crate) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

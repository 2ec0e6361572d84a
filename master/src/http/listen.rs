//! HTTPS (and so WSS) on the web port (`FAENA_WEB_TLS`): REST, the page
//! and Socket.IO carry the API token and users' own AI keys, so off a
//! trusted network they go over TLS with the master's certificate.
//!
//! [`TlsListener`] is an axum [`Listener`] whose TLS handshakes run side by side, each on its
//! own task with a deadline, at most [`MAX_HANDSHAKES`] at once: a client
//! that opens a connection and never finishes its handshake holds one
//! permit for [`HANDSHAKE_TIMEOUT`], not the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handshakes in progress at most; past it new connections wait in the
/// kernel's backlog.
pub const MAX_HANDSHAKES: usize = 1024;
/// Longest a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's address, as the web side reads it (`ConnectInfo<PeerAddr>`)
/// over plain HTTP and HTTPS alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, WebListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, WebListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The web port: plain, or with TLS ([`TlsListener`]).
#[derive(Debug)]
pub enum WebListener {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl Listener for WebListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            Self::Plain(tcp) => {
                let (stream, peer) = Listener::accept(tcp).await;
                // Server-sent events are small writes right after the headers: no Nagle.
                let _ = stream.set_nodelay(true);
                (Either::Left(stream), peer)
            }
            Self::Tls(tls) => {
                let (stream, peer) = tls.accept().await;
                (Either::Right(stream), peer)
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match self {
            Self::Plain(tcp) => Listener::local_addr(tcp),
            Self::Tls(tls) => Listener::local_addr(tls),
        }
    }
}

/// Connections whose handshake is done, handed to the server in order.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (on `tasks`, until `stop`): `config` is the
    /// master's certificate. ALPN offers HTTP/1.1 only: over HTTP/2 a
    /// browser opens its WebSocket with an extended CONNECT (RFC 8441),
    /// which axum's server announces but Socket.IO's upgrade does not take.
    pub fn new(tcp: TcpListener, config: &ServerConfig, tasks: &TaskTracker, stop: CancellationToken) -> Self {
        Self::with_limits(tcp, config, tasks, stop, MAX_HANDSHAKES, HANDSHAKE_TIMEOUT)
    }

    fn with_limits(
        tcp: TcpListener,
        config: &ServerConfig,
        tasks: &TaskTracker,
        stop: CancellationToken,
        max_handshakes: usize,
        handshake_timeout: Duration,
    ) -> Self {
        let mut config = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let local = tcp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        let handshakes = tasks.clone();
        tasks.spawn(async move {
            let permits = Arc::new(Semaphore::new(max_handshakes));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (stream, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: give it a moment.
                            tracing::warn!(error = %e, "web port: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                // Server-sent events are small writes right after the headers: no Nagle.
                let _ = stream.set_nodelay(true);
                let (acceptor, tx, stop) = (acceptor.clone(), tx.clone(), stop.clone());
                handshakes.spawn(async move {
                    let _permit = permit;
                    let shake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
                    let tls = tokio::select! {
                        () = stop.cancelled() => return,
                        r = shake => r,
                    };
                    match tls {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "web port: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "web port: TLS handshake timed out"),
                    }
                });
            }
        });
        Self { ready, local }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop stopped (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use std::time::{Duration, Instant};

    use axum::serve::Listener;
    use faena_common::tls::TlsArgs;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::TlsListener;

    #[tokio::test]
    async fn a_handshake_that_never_ends_holds_its_permit_only_until_its_deadline() {
        let dir = std::env::temp_dir().join(format!("faena-listen-test-{}", uuid::Uuid::new_v4()));
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-certs.sh");
        let made = std::process::Command::new(script).arg("--out").arg(&dir).output().expect("make-certs.sh");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let tls = TlsArgs {
            tls_ca_file: Some(dir.join("ca.pem")),
            tls_cert_file: Some(dir.join("master.pem")),
            tls_key_file: Some(dir.join("master.key")),
        };
        let server = tls.server_config().expect("server config").expect("an identity");
        let client = TlsConnector::from(tls.client_config().expect("client config"));

        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let deadline = Duration::from_millis(400);
        let mut listener = TlsListener::with_limits(tcp, &server, &tasks, stop.clone(), 1, deadline);

        // A client that connects and says nothing takes the one permit...
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let honest = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            client.connect(ServerName::try_from("localhost").expect("name"), tcp).await.map(drop)
        });
        // ... so the honest one is served once its deadline frees it, not before.
        let (_io, peer) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.expect("served");
        assert!(started.elapsed() >= deadline, "served while the only permit was held");
        assert_eq!(peer.ip(), addr.ip());
        honest.await.expect("task").expect("the honest client's handshake");
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

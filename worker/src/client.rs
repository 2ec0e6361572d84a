//! The gRPC client to the master, with the cluster token on every call and
//! the session of the current registration on every call after it.

use std::sync::Arc;
use std::time::Duration;

use faena_common::retry::Policy;
use faena_proto::grpc::SESSION_METADATA;
use faena_proto::grpc::master_client::MasterClient;
use faena_proto::secret::Secret;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::WorkerError;

pub type Client = MasterClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` and, once registered,
/// `faena-session: <session>`; never prints either.
#[derive(Clone)]
pub struct Bearer {
    token: MetadataValue<Ascii>,
    session: Session,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer([redacted])")
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.token.clone());
        if let Some(session) = self.session.0.value.read().clone() {
            req.metadata_mut().insert(SESSION_METADATA, session);
        }
        Ok(req)
    }
}

/// The session the master gave this worker's current registration, shared
/// with the client's interceptor.
///
/// A unit can arrive on the jobs topic before the worker has read the
/// answer to the registration it was dispatched under (the worker
/// subscribes first, and the master dispatches as soon as it registered
/// the worker). Calls made for it then would carry no session, or the one
/// before, and be refused: a piece of a streamed answer lost, a job's key
/// not fetched. So calls for units wait for [`Session::current`] first.
#[derive(Clone, Default)]
pub struct Session(Arc<SessionInner>);

struct SessionInner {
    value: RwLock<Option<MetadataValue<Ascii>>>,
    /// Whether `value` is the answer of the last registration sent (false
    /// while one is on its way, and before the first).
    current: watch::Sender<bool>,
}

impl Default for SessionInner {
    fn default() -> Self {
        Self { value: RwLock::new(None), current: watch::Sender::new(false) }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session([redacted])")
    }
}

/// How long a call for a unit waits for a registration's answer before it
/// goes anyway (and meets whatever the master answers): a registration is
/// answered in milliseconds when the master is there.
pub const SESSION_WAIT: Duration = Duration::from_secs(10);

impl Session {
    /// A registration is on its way: calls for units wait for its answer.
    /// The session held so far still goes with the registration itself (the
    /// master lets the same instance take its worker id back with it).
    pub fn registering(&self) {
        self.0.current.send_replace(false);
    }

    /// Takes the session a registration returned (one that cannot go in a
    /// header is dropped: calls then fail and the worker registers again).
    pub fn set(&self, session: &str) {
        *self.0.value.write() = session.parse().ok();
        self.0.current.send_replace(true);
    }

    /// Waits, at most `within`, until the session is the last
    /// registration's answer; whether it is.
    pub async fn current(&self, within: Duration) -> bool {
        let mut rx = self.0.current.subscribe();
        tokio::time::timeout(within, rx.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok())
    }

    /// Calls waiting in [`Session::current`] now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.0.current.receiver_count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid master URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the cluster token has characters that cannot go in a header")]
    Token,
    #[error(transparent)]
    Tls(#[from] faena_common::tls::TlsError),
    #[error("TLS to the master: {0} (check FAENA_TLS_CA_FILE)")]
    TlsSetup(String),
}

/// A lazily connecting client: it reconnects by itself after the master
/// restarts. Its calls carry what is put in the returned [`Session`].
/// An `https://` URL connects over TLS, trusting the CA file in `tls` (or
/// the system's roots).
/// Most masters one worker is told of.
pub const MAX_MASTERS: usize = 16;

/// The masters `--master-url` names (comma-separated, blanks ignored).
pub fn master_urls(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// A client of the masters `urls` names: one, or several balanced — a
/// call goes to one that is up, and a master that goes away is left out
/// until it answers again (a standby forwards to the leader, so any
/// master will do).
pub fn connect(urls: &str, token: &Secret, tls: &faena_common::tls::TlsArgs) -> Result<(Client, Session), ClientError> {
    let endpoints =
        master_urls(urls).into_iter().take(MAX_MASTERS).map(|u| endpoint(u, tls)).collect::<Result<Vec<_>, _>>()?;
    let channel = match endpoints.as_slice() {
        [one] => one.connect_lazy(),
        _ => tonic::transport::Channel::balance_list(endpoints.into_iter()),
    };
    let token = format!("Bearer {}", token.expose()).parse().map_err(|_| ClientError::Token)?;
    let session = Session::default();
    let client = MasterClient::with_interceptor(channel, Bearer { token, session: session.clone() })
        .max_decoding_message_size(8 * 1024 * 1024)
        .max_encoding_message_size(8 * 1024 * 1024);
    Ok((client, session))
}

fn endpoint(url: &str, tls: &faena_common::tls::TlsArgs) -> Result<Endpoint, ClientError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::Url { url: url.to_owned(), reason: e.to_string() })?;
    if url.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        config = match tls.ca_pem()? {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        endpoint = endpoint.tls_config(config).map_err(|e| ClientError::TlsSetup(e.to_string()))?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(endpoint)
}

/// Calls the master until it answers (`call` makes one try). A wrong token,
/// a request it refuses, or a master certificate this worker does not trust
/// is fatal; anything else — the master not reachable yet, the worker id
/// still held by a live instance, the master busy — is retried with backoff.
/// None when `cancel` fires first.
pub async fn until_answered<T, Fut>(
    cancel: &CancellationToken,
    mut call: impl FnMut() -> Fut,
) -> Result<Option<T>, WorkerError>
where
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut backoff = Policy::RECONNECT.start();
    loop {
        let s = match call().await {
            Ok(answer) => return Ok(Some(answer)),
            Err(s) => s,
        };
        if matches!(s.code(), Code::Unauthenticated | Code::InvalidArgument | Code::PermissionDenied) {
            return Err(WorkerError::Refused(s.message().to_owned()));
        }
        if let Some(why) = tls_failure(&s) {
            return Err(WorkerError::MasterTls(why));
        }
        let wait = backoff.wait();
        let why = match s.code() {
            // Another live instance holds this worker id: wait for it to go.
            Code::AlreadyExists => "worker id in use",
            Code::Unavailable if !s.message().contains("transport") => "the master cannot answer yet",
            _ => "master not reachable yet",
        };
        tracing::warn!(code = ?s.code(), error = %s.message(), retry_in_ms = wait.as_millis() as u64, "{why}");
        tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Why TLS with the master failed, when it did: a certificate it does not
/// trust will not change by retrying.
fn tls_failure(status: &Status) -> Option<String> {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("certificate") {
            return Some(text);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_masters_are_named_comma_separated() {
        assert_eq!(master_urls("http://a:50051"), ["http://a:50051"]);
        assert_eq!(master_urls(" http://a:1, http://b:2 ,,"), ["http://a:1", "http://b:2"]);
        assert!(master_urls(" , ").is_empty());
    }

    #[tokio::test]
    async fn calls_wait_for_the_answer_of_the_registration_on_its_way() {
        let session = Session::default();
        assert!(!session.current(Duration::ZERO).await, "nothing before the first registration's answer");
        let waiting = tokio::spawn({
            let session = session.clone();
            async move { session.current(SESSION_WAIT).await }
        });
        session.set("s1");
        assert!(waiting.await.expect("task"), "the answer ends the wait");
        assert!(session.current(Duration::ZERO).await);
        session.registering();
        assert!(!session.current(Duration::ZERO).await, "a new registration: the old session is not current");
        assert_eq!(session.0.value.read().as_ref().map(|v| v.to_str().ok()), Some(Some("s1")), "still sent meanwhile");
        session.set("s2");
        assert!(session.current(Duration::ZERO).await);
    }

    #[tokio::test]
    async fn a_client_of_several_masters_is_made_without_reaching_them() {
        let token = Secret::new("t");
        let tls = faena_common::tls::TlsArgs::default();
        assert!(connect("http://127.0.0.1:1,http://127.0.0.2:1", &token, &tls).is_ok());
        assert!(connect("http://127.0.0.1:1", &token, &tls).is_ok());
        assert!(matches!(connect("not a url at all\n", &token, &tls), Err(ClientError::Url { .. })));
    }
}

//! The gRPC client to the master, with the cluster token on every call.

use std::time::Duration;

use faena_proto::grpc::master_client::MasterClient;
use faena_proto::secret::Secret;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub type Client = MasterClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>`; never prints the token.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer([redacted])")
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid master URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the cluster token has characters that cannot go in a header")]
    Token,
}

/// A lazily connecting client: it reconnects by itself after the master restarts.
pub fn connect(url: &str, token: &Secret) -> Result<Client, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::Url { url: url.to_owned(), reason: e.to_string() })?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let value = format!("Bearer {}", token.expose()).parse().map_err(|_| ClientError::Token)?;
    Ok(MasterClient::with_interceptor(endpoint.connect_lazy(), Bearer(value))
        .max_decoding_message_size(8 * 1024 * 1024)
        .max_encoding_message_size(8 * 1024 * 1024))
}

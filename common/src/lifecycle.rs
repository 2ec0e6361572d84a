//! A process's life: the ready line it prints once serving, and the
//! shutdown that Ctrl-C or SIGTERM (what Docker and Swarm send) starts.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first Ctrl-C or SIGTERM: the root of a binary's
/// shutdown. The task waiting for the signal lives as long as the process.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signal().await;
        cancel.cancel();
    });
    token
}

/// Prints the ready line (`FAENA_READY {json}`) on stdout.
pub fn announce_ready(addrs: &impl serde::Serialize) {
    println!("{}{}", faena_proto::READY_PREFIX, serde_json::to_string(addrs).unwrap_or_default());
}

/// Resolves on the first Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

//! A process's life: the environment it must start with (a one-time
//! re-exec), the ready line it prints once serving, and the shutdown that
//! Ctrl-C or SIGTERM (what Docker and Swarm send) starts.

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

/// Prints the ready line (`FAENA_READY {json}`) on stdout. Whoever
/// started the process may have stopped reading it (a master that steps
/// down starts again and announces itself once more): not an error.
pub fn announce_ready(addrs: &impl serde::Serialize) {
    use std::io::Write;
    let line = format!("{}{}\n", faena_proto::READY_PREFIX, serde_json::to_string(addrs).unwrap_or_default());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
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
    stopping();
}

/// Set once this process stops (Ctrl-C, SIGTERM).
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says this process is stopping: what its connections do from then on is
/// the stop, not a fault (the logs and the broker client say it quietly).
pub fn stopping() {
    STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`stopping`] was said.
pub fn is_stopping() -> bool {
    STOPPING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The allocator setting both binaries start with, unless the environment
/// sets it already: mimalloc's arenas are committed on demand, not eagerly.
/// Eager commit made each of the embedded broker's per-subscription buffers
/// (preallocated, mostly untouched) count in full: a master with 1,000
/// workers on its embedded broker held ~600 MiB instead of ~80 MiB, with no
/// measurable gain in speed (BENCHMARKS.md, "Scale").
pub fn allocator_env() -> Option<(&'static str, String)> {
    const VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    std::env::var_os(VAR).is_none().then(|| (VAR, "0".to_owned()))
}

/// Re-executes this program once with `vars` added to its environment, for
/// settings a process honours only when they are there at exec (the
/// allocator's and glibc's are read before `main`). Does nothing when `vars`
/// is empty; callers pass only what is not set yet, so the second run does
/// not exec again. Call first thing in `main`, before any thread starts.
/// Returns only when nothing was needed or the re-exec failed (the program
/// then runs as it is).
pub fn reexec_with(vars: Vec<(&'static str, String)>) {
    use std::os::unix::process::CommandExt;
    if vars.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let error = std::process::Command::new(exe).args(std::env::args_os().skip(1)).envs(vars).exec();
    eprintln!("could not re-exec with its start-up settings ({error}); running without them");
}

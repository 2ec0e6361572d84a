//! The fake Gemini / OpenAI-compatible service as a process of its own, for
//! the Swarm end-to-end test's stack override (`stack.test.yml`). Same wire
//! formats and `[[fake {json}]]` prompt scripts as the in-process tests use.
//!
//!   faena-fake-ai [ADDR]      (default 0.0.0.0:8080, or FAKE_AI_ADDR)

use std::net::SocketAddr;

use faena_testkit::fake_ai::FakeAi;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let arg = std::env::args().nth(1).or_else(|| std::env::var("FAKE_AI_ADDR").ok());
    let addr: SocketAddr = match arg.as_deref().unwrap_or("0.0.0.0:8080").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("faena-fake-ai: bad listen address: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let server = match FakeAi::serve(addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faena-fake-ai: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("faena-fake-ai listening on {} (Gemini at /v1beta, OpenAI at /v1)", server.addr);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("faena-fake-ai: no SIGTERM handler: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    std::process::ExitCode::SUCCESS
}

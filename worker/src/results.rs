//! Results on their way to the master, several to a call (`SubmitResults`).
//! A result waits only while the call before it is in flight: one alone
//! goes at once, and results finishing together share a call — and the
//! master's turn and commit — instead of one HTTP/2 request each.
//!
//! Each result is answered on its own; the caller decides what to do with
//! its answer (retry, register again, drop), as it did when each result was
//! a call of its own. A master that does not know `SubmitResults` (an older
//! one, mid-upgrade) is sent a `SubmitResult` call for each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use faena_proto::grpc::{self as pb, MAX_RESULTS_PER_CALL};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

use crate::client::Client;

/// A call is closed once its results reach this size; a larger result goes
/// alone (the master takes messages up to 5 MiB).
const MAX_CALL_BYTES: usize = 1024 * 1024;
/// Results waiting for a call; a caller past it waits to hand its result over.
const QUEUE: usize = 4 * MAX_RESULTS_PER_CALL;

/// The master's answer for one result: whether it had taken it already.
pub type Answer = Result<bool, Status>;

struct Pending {
    req: pb::ResultRequest,
    answer: oneshot::Sender<Answer>,
}

/// Hands results to one task that sends them; cloned freely.
#[derive(Debug, Clone)]
pub struct Results {
    tx: mpsc::Sender<Pending>,
    client: Client,
    /// Set when the master answered `SubmitResults` with UNIMPLEMENTED.
    unary: Arc<AtomicBool>,
}

impl Results {
    /// Starts the sending task (it ends when the last clone is dropped).
    pub fn start(client: Client) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let unary = Arc::new(AtomicBool::new(false));
        tokio::spawn(send_all(client.clone(), rx, unary.clone()));
        Self { tx, client, unary }
    }

    /// Delivers one result (one try) and returns the master's answer for it.
    pub async fn submit(&self, req: &pb::ResultRequest) -> Answer {
        if !self.unary.load(Ordering::Relaxed) {
            let stopping = || Status::unavailable("the worker's result sender stopped");
            let (answer, rx) = oneshot::channel();
            self.tx.send(Pending { req: req.clone(), answer }).await.map_err(|_| stopping())?;
            match rx.await.unwrap_or_else(|_| Err(stopping())) {
                Err(s) if s.code() == Code::Unimplemented && self.unary.load(Ordering::Relaxed) => {}
                answer => return answer,
            }
        }
        self.client.clone().submit_result(req.clone()).await.map(|r| r.into_inner().duplicate)
    }
}

async fn send_all(client: Client, mut rx: mpsc::Receiver<Pending>, unary: Arc<AtomicBool>) {
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = vec![first];
        carried = fill(&mut batch, &mut rx);
        let (results, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.req, p.answer)).unzip();
        let statuses = match client.clone().submit_results(pb::ResultsRequest { results }).await {
            Ok(resp) => resp.into_inner().statuses,
            Err(s) => {
                if s.code() == Code::Unimplemented && !unary.swap(true, Ordering::Relaxed) {
                    tracing::info!("the master does not take results in batches; sending them one by one");
                }
                // The whole call failed (the master unreachable, stopping,
                // refusing the caller, or not knowing the call): each result
                // gets that answer.
                for answer in answers {
                    let _ = answer.send(Err(s.clone()));
                }
                continue;
            }
        };
        let mut statuses = statuses.into_iter();
        for answer in answers {
            let answer_for = match statuses.next() {
                Some(s) if s.code == 0 => Ok(s.duplicate),
                Some(s) => Err(Status::new(Code::from_i32(s.code), s.message)),
                None => Err(Status::internal("the master answered fewer results than it was sent")),
            };
            let _ = answer.send(answer_for);
        }
    }
}

/// Adds what is already waiting to `batch`, up to a call's bounds; a
/// result that would take the call past its size is handed back for the next.
fn fill(batch: &mut Vec<Pending>, rx: &mut mpsc::Receiver<Pending>) -> Option<Pending> {
    let mut bytes: usize = batch.iter().map(|p| p.req.encoded_len()).sum();
    while batch.len() < MAX_RESULTS_PER_CALL {
        let Ok(p) = rx.try_recv() else { return None };
        let len = p.req.encoded_len();
        if bytes + len > MAX_CALL_BYTES {
            return Some(p);
        }
        bytes += len;
        batch.push(p);
    }
    None
}

#[cfg(test)]
impl Results {
    /// Results handed over and not yet taken into a call.
    fn waiting(&self) -> usize {
        QUEUE - self.tx.capacity()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use faena_proto::grpc::master_server::Master;
    use parking_lot::Mutex;
    use tonic::{Request, Response};

    use super::*;
    use crate::fake_master::{nope, serve, until};

    /// A master that records the results it is sent: in batches (the
    /// first call held until `release`) or, when `batches` is off, only one
    /// by one, as a master without `SubmitResults` does.
    struct Recorder {
        batches: bool,
        calls: Arc<Mutex<Vec<usize>>>,
        release: Arc<tokio::sync::Semaphore>,
    }

    #[tonic::async_trait]
    impl Master for Recorder {
        async fn register(&self, _: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
            nope()
        }
        async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
            nope()
        }
        async fn report_progress(
            &self,
            _: Request<pb::ProgressRequest>,
        ) -> Result<Response<pb::ProgressResponse>, Status> {
            nope()
        }
        async fn submit_result(&self, r: Request<pb::ResultRequest>) -> Result<Response<pb::ResultResponse>, Status> {
            self.calls.lock().push(1);
            Ok(Response::new(pb::ResultResponse { duplicate: r.into_inner().worker_id == "dup" }))
        }
        async fn submit_results(
            &self,
            r: Request<pb::ResultsRequest>,
        ) -> Result<Response<pb::ResultsResponse>, Status> {
            if !self.batches {
                return nope();
            }
            let first = self.calls.lock().is_empty();
            self.calls.lock().push(r.get_ref().results.len());
            if first {
                let _ = self.release.acquire().await.expect("open");
            }
            let statuses = r
                .into_inner()
                .results
                .iter()
                .map(|r| match r.worker_id.as_str() {
                    "stale" => pb::ResultStatus {
                        code: Code::FailedPrecondition as i32,
                        message: "stale".into(),
                        duplicate: false,
                    },
                    w => pb::ResultStatus { code: 0, message: String::new(), duplicate: w == "dup" },
                })
                .collect();
            Ok(Response::new(pb::ResultsResponse { statuses }))
        }
        async fn fetch_secret(&self, _: Request<pb::SecretRequest>) -> Result<Response<pb::SecretResponse>, Status> {
            nope()
        }
        async fn broker_login(
            &self,
            _: Request<pb::BrokerLoginRequest>,
        ) -> Result<Response<pb::BrokerLoginResponse>, Status> {
            nope()
        }
        async fn report_config(
            &self,
            _: Request<pb::ConfigReport>,
        ) -> Result<Response<pb::ConfigReportResponse>, Status> {
            nope()
        }
    }

    async fn master(batches: bool) -> (Results, Arc<Mutex<Vec<usize>>>, Arc<tokio::sync::Semaphore>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (client, _) = serve(Recorder { batches, calls: calls.clone(), release: release.clone() });
        (Results::start(client), calls, release)
    }

    fn result(worker: &str) -> pb::ResultRequest {
        pb::ResultRequest { worker_id: worker.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn results_wait_only_for_the_call_in_flight_and_share_the_next_up_to_the_bound() {
        let (results, calls, release) = master(true).await;
        let first = tokio::spawn({
            let results = results.clone();
            async move { results.submit(&result("w")).await }
        });
        until("the first call", || calls.lock().len() == 1).await;
        let mut rest = Vec::new();
        for n in 0..300 {
            let results = results.clone();
            let worker = match n {
                7 => "stale",
                8 => "dup",
                _ => "w",
            };
            rest.push(tokio::spawn(async move { results.submit(&result(worker)).await }));
        }
        until("every result handed over", || results.waiting() == 300).await;
        release.add_permits(1);
        assert!(!first.await.expect("task").expect("taken"), "not a duplicate");
        let mut answers = Vec::new();
        for r in rest {
            answers.push(r.await.expect("task"));
        }
        assert_eq!(
            *calls.lock(),
            [1, MAX_RESULTS_PER_CALL, 300 - MAX_RESULTS_PER_CALL],
            "one call, then as many as a call holds"
        );
        assert_eq!(answers[7].as_ref().map_err(Status::code), Err(Code::FailedPrecondition));
        assert_eq!(answers[8].as_ref().ok(), Some(&true), "each result gets its own answer");
        assert_eq!(answers.iter().filter(|a| a.as_ref().is_ok_and(|d| !d)).count(), 298);
    }

    #[tokio::test]
    async fn a_master_without_batches_is_sent_each_result_on_its_own() {
        let (results, calls, _) = master(false).await;
        assert!(results.submit(&result("dup")).await.expect("taken"), "a duplicate");
        for _ in 0..3 {
            assert!(!results.submit(&result("w")).await.expect("taken"), "not a duplicate");
        }
        assert_eq!(*calls.lock(), [1, 1, 1, 1], "four results, four SubmitResult calls");
    }
}

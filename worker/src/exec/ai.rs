//! `ai.query`: asks the job's providers in its order (or this worker's
//! configured order) and streams the answer's pieces as progress, in order.
//! A provider that is unavailable — rate limit, quota, outage, timeout,
//! unreachable — before any text went out hands over to the next one at
//! once; the last one is retried, a bounded number of times with
//! exponential backoff and jitter (or after the delay the provider asks
//! for). Bad requests and bad keys fail at once, never falling back. The
//! result says which provider answered and which were tried; while it
//! waits, the job's progress says why (`AiStatus`: retrying, falling back). Cancelling the
//! job drops the HTTP stream (and stops a local model).
//!
//! The API key is the job's own when the unit refers to one (fetched from
//! the master over gRPC for this attempt only), else the worker's.

use std::sync::Arc;
use std::time::Instant;

use faena_proto::ai::{API_KEY_SECRET, AiNext, AiOutput, AiParams, AiStatus, Provider, ProviderSet, Timings, Tried};
use faena_proto::jobs::JobSpec;
use faena_proto::secret::Secret;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{Executor, JobContext, JobFailure};
use crate::ai::local::{self, LocalModel};
use crate::ai::{AiError, Answer, Endpoint, Providers, Query, Sink, Written, gemini, openai};

#[derive(Debug, Clone)]
pub struct AiQuery {
    providers: Arc<Providers>,
}

impl AiQuery {
    pub fn new(providers: Arc<Providers>) -> Self {
        Self { providers }
    }
}

/// How one provider's attempt ended without an answer.
enum Miss {
    /// The job fails (or is requeued) with this, whatever comes next.
    Failure(JobFailure),
    /// The provider is unavailable (rate limit, quota, outage, timeout,
    /// unreachable) and nothing of the answer went out: the next provider
    /// may answer instead.
    Unavailable(String),
    /// The provider failed after part of the answer went out (a cut
    /// connection, a server error mid-stream): the next provider continues
    /// it from what was written.
    Cut { error: String, written: Written },
}

/// Where one provider's answer comes from.
enum Target<'a> {
    /// Gemini or an OpenAI-compatible endpoint, with the job's own key if it has one.
    Remote {
        wire: Wire,
        endpoint: &'a Endpoint,
        own_key: Option<Secret>,
    },
    Local(&'a Arc<LocalModel>),
}

/// The wire format a remote provider speaks.
#[derive(Debug, Clone, Copy)]
enum Wire {
    Gemini,
    OpenAi,
}

/// Asks one provider. On the last provider of the job's order, transient
/// faults are retried with backoff; before that they fall through to the
/// next provider at once.
async fn ask(
    providers: &Providers,
    provider: Provider,
    params: &AiParams,
    written: &Written,
    ctx: &JobContext,
    last: bool,
) -> Result<(Answer, String, Timings), Miss> {
    // What was written so far goes to the provider as the answer's start.
    let continued;
    let params = match written.text.is_empty() {
        true => params,
        false => {
            continued = AiParams { prefix: Some(written.text.clone()), ..params.clone() };
            &continued
        }
    };
    // Exhaustive: a new provider breaks the build here until it has a wire.
    let wire = match provider {
        Provider::Local => None,
        Provider::Gemini => Some(Wire::Gemini),
        Provider::Openai => Some(Wire::OpenAi),
    };
    let target = match wire {
        None => Target::Local(providers.local.as_ref().ok_or_else(|| {
            Miss::Failure(JobFailure::permanent("this worker has no local model (FAENA_LOCAL_MODEL)"))
        })?),
        Some(wire) => Target::Remote {
            wire,
            endpoint: providers.endpoint(provider).ok_or_else(|| {
                Miss::Failure(JobFailure::permanent(format!("this worker has no {provider} provider configured")))
            })?,
            own_key: ctx.secret(API_KEY_SECRET).await.map_err(Miss::Failure)?,
        },
    };
    let default_model = providers.model(provider).unwrap_or_default();
    let mut backoff = faena_common::retry::Policy::calls(providers.tries).start();
    loop {
        let tries = backoff.tries() + 1;
        let mut sink = Sink::resume(Some(ctx), written.clone(), &params.stop);
        let started = Instant::now();
        let result = match &target {
            Target::Local(model) => local::query(model, params, &mut sink).await,
            Target::Remote { wire, endpoint, own_key } => {
                let key = own_key.as_ref().or(endpoint.key.as_ref());
                let model = params.model.as_deref().unwrap_or(&default_model);
                let q = Query { params, base: &endpoint.base, model, key };
                let (http, streams, timeout) = (&providers.http, params.streams(), providers.chunk_timeout);
                match wire {
                    Wire::Gemini => gemini::query(http, &q, streams, timeout, &mut sink).await,
                    Wire::OpenAi => openai::query(http, &q, streams, timeout, &mut sink).await,
                }
            }
        };
        match result {
            Ok(answer) => {
                sink.finish().await;
                let total = started.elapsed();
                let timings = Timings {
                    first_token_ms: sink.first_token.unwrap_or(total).as_millis() as u64,
                    total_ms: total.as_millis() as u64,
                    tries,
                };
                return Ok((answer, sink.text, timings));
            }
            Err(AiError::Fatal(m)) => return Err(Miss::Failure(JobFailure::permanent(m))),
            Err(AiError::Transient { message, .. }) if !sink.is_empty() && !last => {
                // Part of the answer went out: the next provider continues it.
                return Err(Miss::Cut { error: format!("{message} (mid-answer)"), written: sink.written() });
            }
            Err(AiError::Transient { message, .. }) if !sink.is_empty() => {
                // Part of the answer went out and no provider is left: a
                // clean retry is the master's (watchers see the job
                // requeued and the answer start again).
                let m = format!("{message} (after part of the answer was sent)");
                return Err(Miss::Failure(JobFailure::retryable(m)));
            }
            Err(AiError::Transient { message, .. }) if !last => return Err(Miss::Unavailable(message)),
            Err(AiError::Transient { message, after }) => {
                let Some(wait) = backoff.next(after) else {
                    return Err(Miss::Unavailable(format!("{message}; gave up after {tries} tries")));
                };
                tracing::info!(provider = %provider, tries, wait_ms = wait.as_millis() as u64, error = %message, "AI provider call will be retried");
                let next = AiNext::Retrying {
                    retry_in_ms: wait.as_millis() as u64,
                    attempt: tries + 1,
                    tries: providers.tries,
                };
                status(ctx, provider, message, next).await;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Tells the job's watchers why no answer is being written yet.
async fn status(ctx: &JobContext, provider: Provider, error: String, next: AiNext) {
    let status = AiStatus { provider, error, next };
    ctx.report(serde_json::to_value(status).unwrap_or_default()).await;
}

/// "gemini: 503 …; openai: …" — what the providers tried before said.
fn said(tried: &[Tried]) -> String {
    tried.iter().map(|t| format!("{}: {}", t.provider, t.error)).collect::<Vec<_>>().join("; ")
}

/// Tries the job's providers in order (those this worker has), moving on
/// while each is unavailable and nothing of the answer has gone out.
async fn answer(providers: &Providers, params: &AiParams, ctx: &JobContext) -> Result<AiOutput, JobFailure> {
    let order = providers.order_for(&params.order());
    if order.is_empty() {
        let wanted = ProviderSet::of(&params.order());
        return Err(JobFailure::permanent(format!("this worker has none of the providers the job accepts ({wanted})")));
    }
    let mut tried: Vec<Tried> = Vec::new();
    // The answer so far (a client's prefix, then what cut-off providers
    // wrote), and the providers that wrote it.
    let mut written = Written { text: params.prefix.clone().unwrap_or_default(), seq: 0 };
    let mut answered_by = Vec::new();
    for (i, &provider) in order.iter().enumerate() {
        let last = i + 1 == order.len();
        match ask(providers, provider, params, &written, ctx, last).await {
            Ok((answer, text, timings)) => {
                if !tried.is_empty() {
                    tracing::info!(provider = %provider, tried = %said(&tried), "AI answer from a fallback provider");
                }
                if !answered_by.is_empty() {
                    answered_by.push(provider);
                }
                return Ok(AiOutput {
                    text,
                    model: answer.model,
                    provider,
                    usage: answer.usage,
                    finish_reason: answer.finish_reason,
                    flagged: answer.flagged,
                    timings,
                    cached: false,
                    tried,
                    answered_by,
                });
            }
            Err(Miss::Cut { error, written: so_far }) => {
                let next = order.get(i + 1).copied().unwrap_or(provider);
                tracing::warn!(provider = %provider, next = %next, error = %error, "AI provider cut off mid-answer; the next continues it");
                status(ctx, provider, error.clone(), AiNext::Continuing { next }).await;
                if answered_by.is_empty() {
                    answered_by.push(provider);
                }
                tried.push(Tried { provider, error });
                written = so_far;
            }
            Err(Miss::Unavailable(error)) if !last => {
                let next = order[i + 1];
                tracing::warn!(provider = %provider, next = %next, error = %error, "AI provider unavailable; trying the next");
                status(ctx, provider, error.clone(), AiNext::FallingBack { next }).await;
                tried.push(Tried { provider, error });
            }
            Err(miss) => {
                let failure = match miss {
                    Miss::Failure(f) => f,
                    Miss::Unavailable(m) | Miss::Cut { error: m, .. } => JobFailure::permanent(m),
                };
                if tried.is_empty() {
                    return Err(failure);
                }
                return Err(failure.context(&format!("{provider}, after {}", said(&tried))));
            }
        }
    }
    Err(JobFailure::permanent("no provider answered"))
}

impl Executor for AiQuery {
    fn execute(&self, spec: JobSpec, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>> {
        let providers = self.providers.clone();
        async move {
            let JobSpec::AiQuery(params) = spec else {
                return Err(JobFailure::permanent("ai.query executor got another kind"));
            };
            let out = tokio::select! {
                r = answer(&providers, &params, &ctx) => r?,
                () = ctx.cancel.cancelled() => return Err(JobFailure::cancelled()),
            };
            serde_json::to_value(out).map_err(|e| JobFailure::permanent(e.to_string()))
        }
        .boxed()
    }
}

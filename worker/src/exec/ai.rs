//! `ai.query`: asks the job's provider (or this worker's first) and streams
//! the answer's pieces as progress, in order. Rate limits and server errors
//! are retried here, a bounded number of times with exponential backoff and
//! jitter (or after the delay the provider asks for), as long as nothing of
//! the answer has been sent yet; cancelling the job drops the HTTP stream.
//!
//! The API key is the job's own when the unit refers to one (fetched from
//! the master over gRPC for this attempt only), else the worker's.

use std::sync::Arc;
use std::time::Instant;

use faena_proto::ai::{API_KEY_SECRET, AiOutput, AiParams, Provider, Timings};
use faena_proto::jobs::JobSpec;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{Executor, JobContext, JobFailure};
use crate::ai::{AiError, Answer, Providers, Query, Sink, gemini, local, openai};

#[derive(Debug, Clone)]
pub struct AiQuery {
    providers: Arc<Providers>,
}

impl AiQuery {
    pub fn new(providers: Arc<Providers>) -> Self {
        Self { providers }
    }
}

async fn ask(
    providers: &Providers,
    provider: Provider,
    params: &AiParams,
    ctx: &JobContext,
) -> Result<(Answer, String, Timings), JobFailure> {
    let remote = match provider {
        Provider::Local => {
            if providers.local.is_none() {
                return Err(JobFailure::permanent("this worker has no local model (FAENA_LOCAL_MODEL)"));
            }
            None
        }
        _ => {
            let endpoint = providers
                .endpoint(provider)
                .ok_or_else(|| JobFailure::permanent(format!("this worker has no {provider} provider configured")))?;
            let own_key = ctx.secret(API_KEY_SECRET).await?;
            Some((endpoint, own_key))
        }
    };
    let mut backoff = faena_common::retry::Policy::calls(providers.tries).start();
    loop {
        let tries = backoff.tries() + 1;
        let mut sink = Sink::new(Some(ctx));
        let started = Instant::now();
        let result = match (&remote, &providers.local) {
            (Some((endpoint, own_key)), _) => {
                let key = own_key.as_ref().or(endpoint.key.as_ref());
                let model = params.model.as_deref().unwrap_or(&endpoint.model);
                let q = Query { params, base: &endpoint.base, model, key };
                let (http, streams, timeout) = (&providers.http, params.streams(), providers.chunk_timeout);
                match provider {
                    Provider::Gemini => gemini::query(http, &q, streams, timeout, &mut sink).await,
                    _ => openai::query(http, &q, streams, timeout, &mut sink).await,
                }
            }
            (None, Some(model)) => local::query(model, params, &mut sink).await,
            (None, None) => return Err(JobFailure::permanent("this worker has no local model (FAENA_LOCAL_MODEL)")),
        };
        match result {
            Ok(answer) => {
                let total = started.elapsed();
                let timings = Timings {
                    first_token_ms: sink.first_token.unwrap_or(total).as_millis() as u64,
                    total_ms: total.as_millis() as u64,
                    tries,
                };
                return Ok((answer, sink.text, timings));
            }
            Err(AiError::Fatal(m)) => return Err(JobFailure::permanent(m)),
            Err(AiError::Transient { message, .. }) if !sink.is_empty() => {
                // Part of the answer went out: a clean retry is the master's
                // (watchers see the job requeued and the answer start again).
                return Err(JobFailure::retryable(format!("{message} (after part of the answer was sent)")));
            }
            Err(AiError::Transient { message, after }) => {
                let Some(wait) = backoff.next(after) else {
                    return Err(JobFailure::permanent(format!("{message}; gave up after {tries} tries")));
                };
                tracing::info!(provider = %provider, tries, wait_ms = wait.as_millis() as u64, error = %message, "AI provider call will be retried");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl Executor for AiQuery {
    fn execute(&self, spec: JobSpec, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>> {
        let providers = self.providers.clone();
        async move {
            let JobSpec::AiQuery(params) = spec else {
                return Err(JobFailure::permanent("ai.query executor got another kind"));
            };
            let provider = match params.provider {
                Some(p) => p,
                None => *providers
                    .offered()
                    .first()
                    .ok_or_else(|| JobFailure::permanent("this worker has no AI provider configured"))?,
            };
            let run = ask(&providers, provider, &params, &ctx);
            let (answer, text, timings) = tokio::select! {
                r = run => r?,
                () = ctx.cancel.cancelled() => return Err(JobFailure::cancelled()),
            };
            let out = AiOutput {
                text,
                model: answer.model,
                provider,
                usage: answer.usage,
                finish_reason: answer.finish_reason,
                flagged: answer.flagged,
                timings,
                cached: false,
            };
            serde_json::to_value(out).map_err(|e| JobFailure::permanent(e.to_string()))
        }
        .boxed()
    }
}

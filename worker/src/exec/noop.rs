//! `noop`: hands its payload back, after `delay_ms` if given. It measures the
//! dispatch path itself and serves drills (long jobs to cancel or kill).

use std::time::Duration;

use faena_proto::jobs::{JobSpec, NoopOutput};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{Executor, JobContext, JobFailure};

#[derive(Debug, Default)]
pub struct Noop;

impl Executor for Noop {
    fn execute(&self, spec: JobSpec, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>> {
        async move {
            let JobSpec::Noop(params) = spec else {
                return Err(JobFailure::permanent("noop executor got another kind"));
            };
            if let Some(ms) = params.delay_ms.filter(|ms| *ms > 0) {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    () = ctx.cancel.cancelled() => return Err(JobFailure::cancelled()),
                }
            }
            let out = NoopOutput { payload: params.payload.unwrap_or(Value::Null) };
            serde_json::to_value(out).map_err(|e| JobFailure::permanent(e.to_string()))
        }
        .boxed()
    }
}

//! The `local` provider: a GGUF model run by llama.cpp inside the worker's
//! own process (through the `llama-cpp-2` bindings), so a worker answers
//! with no key and no network. The model is loaded once; each query gets a
//! context of its own on a blocking thread, decodes the prompt the model's
//! own chat template makes of the system instruction, the history and the
//! question, and samples token by token, handing each piece to the same
//! [`Sink`] as the remote providers. Dropping the query (a cancel) stops
//! generation at the next token. Threads are bounded (`FAENA_LOCAL_THREADS`)
//! so the model shares the machine with RandomX.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use faena_proto::ai::{AiParams, Role, Usage};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{AiError, Answer, Sink};

/// Tokens an answer may take when the query sets no `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 512;
/// What the generating thread is told: go on, stop because
/// the job was cancelled, or stop because the answer reached a stop sequence.
const RUN: u8 = 0;
const CANCELLED: u8 = 1;
const ENOUGH: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("FAENA_LOCAL_MODEL: no model file at {0}")]
    Missing(PathBuf),
    #[error("FAENA_LOCAL_MODEL: llama.cpp could not load {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("llama.cpp: {0}")]
    Backend(String),
}

/// A loaded model, shared by every query of this worker.
pub struct LocalModel {
    backend: LlamaBackend,
    model: LlamaModel,
    template: Option<LlamaChatTemplate>,
    name: String,
    threads: i32,
    context: u32,
    /// llama.cpp may not make two contexts of one model at once.
    making: Mutex<()>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel").field("name", &self.name).field("threads", &self.threads).finish_non_exhaustive()
    }
}

/// Whether this CPU runs the llama.cpp this worker was built with (AVX2,
/// FMA and F16C: see `.cargo/config.toml`).
pub fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

impl LocalModel {
    /// Loads `path` (memory-mapped) for queries on `threads` threads with
    /// a context of `context` tokens.
    pub fn load(path: &Path, threads: usize, context: u32) -> Result<Self, LocalError> {
        if !path.is_file() {
            return Err(LocalError::Missing(path.to_owned()));
        }
        let mut backend = LlamaBackend::init().map_err(|e| LocalError::Backend(e.to_string()))?;
        backend.void_logs();
        let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default())
            .map_err(|e| LocalError::Load { path: path.to_owned(), reason: e.to_string() })?;
        let template = model.chat_template(None).ok();
        // The file's name says which model and which quantisation.
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "local".into());
        let context = context.clamp(256, model.n_ctx_train().max(256));
        Ok(Self {
            backend,
            model,
            template,
            name,
            threads: i32::try_from(threads.max(1)).unwrap_or(1),
            context,
            making: Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prompt as the model's chat template writes the conversation.
    fn prompt(&self, params: &AiParams) -> Result<String, AiError> {
        let message = |role: &str, text: &str| {
            LlamaChatMessage::new(role.into(), text.into())
                .map_err(|e| AiError::Fatal(format!("the question cannot go to the local model: {e}")))
        };
        let mut chat = Vec::with_capacity(params.history.len() + 2);
        if let Some(system) = params.system.as_deref().filter(|s| !s.is_empty()) {
            chat.push(message("system", system)?);
        }
        for turn in &params.history {
            let role = match turn.role {
                Role::User => "user",
                Role::Model => "assistant",
            };
            chat.push(message(role, &turn.text)?);
        }
        chat.push(message("user", &params.prompt)?);
        let template = self
            .template
            .as_ref()
            .ok_or_else(|| AiError::Fatal(format!("the local model {} has no chat template", self.name)))?;
        let mut prompt = self
            .model
            .apply_chat_template(template, &chat, true)
            .map_err(|e| AiError::Fatal(format!("the local model's chat template failed: {e}")))?;
        // The answer so far, for the model to write on from.
        prompt.push_str(params.prefix.as_deref().unwrap_or(""));
        Ok(prompt)
    }

    /// Runs one query to its end, `stop`, or an error, sending each piece
    /// of text to `pieces` as it is made. Blocking: run it off the runtime.
    fn generate(&self, params: &AiParams, stop: &AtomicU8, pieces: &mpsc::Sender<String>) -> Result<Done, AiError> {
        let prompt = self.prompt(params)?;
        let vocab = self.model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        let budget = params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).max(1);
        let needed = tokens.len() as u64 + u64::from(budget);
        if tokens.is_empty() || needed > u64::from(self.context) {
            return Err(AiError::Fatal(format!(
                "the question takes {} tokens and the answer up to {budget}: over the local model's context of {} (FAENA_LOCAL_CONTEXT)",
                tokens.len(),
                self.context
            )));
        }
        let batch_size = u32::try_from(tokens.len()).unwrap_or(u32::MAX).max(512);
        // A context as large as this question and its answer need, not the
        // whole FAENA_LOCAL_CONTEXT: its memory is made for every question,
        // and a full-size one costs tens of milliseconds before the first token.
        let n_ctx = u32::try_from(needed.next_multiple_of(256)).unwrap_or(self.context).min(self.context);
        let params_ctx = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(batch_size)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut ctx = {
            let _making = self.making.lock();
            self.model
                .new_context(&self.backend, params_ctx)
                .map_err(|e| AiError::Transient { message: format!("llama.cpp context: {e}"), after: None })?
        };
        let mut batch = LlamaBatch::new(tokens.len().max(1), 1);
        let last = tokens.len() - 1;
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i == last).map_err(|e| AiError::Fatal(format!("llama.cpp batch: {e}")))?;
        }
        ctx.decode(&mut batch).map_err(|e| AiError::Fatal(format!("llama.cpp could not read the question: {e}")))?;
        let mut sampler = match params.temperature {
            Some(t) if t > 0.0 => LlamaSampler::chain_simple([
                LlamaSampler::top_k(40),
                LlamaSampler::top_p(0.95, 1),
                LlamaSampler::temp(t as f32),
                LlamaSampler::dist(rand::random()),
            ]),
            // Temperature 0 (or none given): the most likely token every
            // time, so the same question gets the same answer.
            _ => LlamaSampler::greedy(),
        };
        let mut pending = Vec::new();
        let mut pos = tokens.len() as i32;
        let mut made = 0u32;
        let finish = loop {
            match stop.load(Ordering::Relaxed) {
                RUN => {}
                ENOUGH => break Finish::Stop,
                _ => {
                    tracing::info!(tokens = made, "local model stopped: cancelled");
                    return Err(AiError::Fatal("cancelled".into()));
                }
            }
            if made == budget {
                break Finish::Length;
            }
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                break Finish::Stop;
            }
            made += 1;
            pending.extend(vocab.token_to_piece(token, false, None));
            // A character may span tokens: send what is whole.
            let whole = match std::str::from_utf8(&pending) {
                Ok(s) => s.len(),
                Err(e) => e.valid_up_to(),
            };
            if whole > 0 {
                let text = String::from_utf8_lossy(&pending[..whole]).into_owned();
                pending.drain(..whole);
                if pieces.blocking_send(text).is_err() {
                    if stop.load(Ordering::Relaxed) == ENOUGH {
                        break Finish::Stop;
                    }
                    tracing::info!(tokens = made, "local model stopped: cancelled");
                    return Err(AiError::Fatal("cancelled".into()));
                }
            }
            batch.clear();
            batch.add(token, pos, &[0], true).map_err(|e| AiError::Fatal(format!("llama.cpp batch: {e}")))?;
            pos += 1;
            ctx.decode(&mut batch)
                .map_err(|e| AiError::Transient { message: format!("llama.cpp: {e}"), after: None })?;
        };
        if !pending.is_empty() {
            let _ = pieces.blocking_send(String::from_utf8_lossy(&pending).into_owned());
        }
        Ok(Done { finish, prompt_tokens: tokens.len() as u64, output_tokens: u64::from(made) })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Stop,
    Length,
}

#[derive(Debug)]
struct Done {
    finish: Finish,
    prompt_tokens: u64,
    output_tokens: u64,
}

/// Tells the generating thread to stop when the query is dropped.
struct StopOnDrop(Arc<AtomicU8>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.compare_exchange(RUN, CANCELLED, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Asks the local model; its pieces go to `sink` as they are made.
pub async fn query(local: &Arc<LocalModel>, params: &AiParams, sink: &mut Sink<'_>) -> Result<Answer, AiError> {
    let (tx, mut rx) = mpsc::channel::<String>(256);
    let stop = Arc::new(AtomicU8::new(RUN));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let (model, query) = (local.clone(), params.clone());
    let thread_stop = stop.clone();
    let run = tokio::task::spawn_blocking(move || model.generate(&query, &thread_stop, &tx));
    while let Some(piece) = rx.recv().await {
        sink.push(&piece).await;
        if sink.stopped() {
            // A stop sequence: the answer is complete.
            stop.store(ENOUGH, Ordering::Relaxed);
            break;
        }
    }
    drop(rx);
    let done = run
        .await
        .map_err(|e| AiError::Transient { message: format!("the local model's thread: {e}"), after: None })??;
    let flagged =
        (done.finish == Finish::Length).then(|| "length: the answer was cut off at the token limit".to_owned());
    Ok(Answer {
        model: local.name.clone(),
        usage: Some(Usage {
            prompt_tokens: done.prompt_tokens,
            output_tokens: done.output_tokens,
            total_tokens: done.prompt_tokens + done.output_tokens,
        }),
        finish_reason: match done.finish {
            Finish::Stop => "stop".into(),
            Finish::Length => "length".into(),
        },
        flagged,
    })
}

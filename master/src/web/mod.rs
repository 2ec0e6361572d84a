//! The browser's side of the master: Socket.IO sessions (see
//! [`faena_proto::sio`] for the contract) and the static page from `web/`.
//!
//! A session is a capability: its id is random, issued by the master, and
//! kept by the browser; a socket joins its session's room on `hello` and
//! hears only that session's jobs. A session keeps its chat (so a reload
//! shows it and each question has the earlier turns as context) and, in
//! memory only, the key the person gave for it. A session nobody uses (no
//! socket on it, no job running) is forgotten after `FAENA_WEB_SESSION_IDLE_SECS`;
//! what one client address may do is bounded ([`limits`]).

mod forward;
pub mod limits;
pub mod ops;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::ai::AiParams;
use faena_proto::ids::JobId;
use faena_proto::jobs::{HashParams, JobKind, JobSpec, JobState, MineParams, Priority};
use faena_proto::secret::Secret;
use faena_proto::sio::{self, Ack, Exchange, to_client, to_master};
use parking_lot::Mutex;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::coordinator::Coordinator;
use crate::engine::{NewJob, Submitter};
use crate::hub::Hub;
use crate::metrics::Metrics;
use faena_common::bucket::TokenBucket;
use limits::{Limits, Spend, WebLimits};

/// Chat exchanges a session keeps (the oldest go first).
const MAX_EXCHANGES: usize = 200;
/// How often idle sessions are looked for (at most).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Session {
    exchanges: Vec<Exchange>,
    key: Option<Secret>,
    jobs: HashSet<JobId>,
    /// The address that opened it: its limits are that address's.
    addr: IpAddr,
    /// Sockets on it now, and when it was last used.
    sockets: usize,
    seen: Instant,
}

impl Session {
    fn new(addr: IpAddr, now: Instant) -> Self {
        Self { exchanges: Vec::new(), key: None, jobs: HashSet::new(), addr, sockets: 0, seen: now }
    }
}

#[derive(Debug)]
struct Sessions {
    by_id: HashMap<String, Session>,
    limits: Limits,
}

#[derive(Debug, Clone)]
struct Web {
    coord: Coordinator,
    hub: Hub,
    sessions: Arc<Mutex<Sessions>>,
    metrics: Arc<Metrics>,
    /// What a socket must present as `auth.token` to connect, when set.
    api_token: Option<Arc<Secret>>,
    /// What dashboards are sent.
    feed: ops::Feed,
    /// Owns the tasks the page starts (each job's event forwarding), which
    /// end when `stop` is cancelled.
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// The session a socket said hello with.
#[derive(Debug, Clone)]
struct SessionId(String);

/// The socket's client address and event rate.
#[derive(Debug, Clone)]
struct Client {
    addr: IpAddr,
    events: Arc<Mutex<TokenBucket>>,
}

/// What the web side runs with.
#[derive(Debug)]
pub struct WebParts {
    pub coord: Coordinator,
    pub hub: Hub,
    pub api_token: Option<Arc<Secret>>,
    pub metrics: Arc<Metrics>,
    pub limits: WebLimits,
    pub feed: ops::Feed,
    /// Its tasks (the session sweep, job forwarding) run here and end with `stop`.
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
}

/// The Socket.IO layer (wrap the finished router in it) and its handle.
pub fn socket_io(parts: WebParts) -> (SocketIoLayer, SocketIo) {
    let WebParts { coord, hub, api_token, metrics, limits, feed, tasks, stop } = parts;
    let sessions = Arc::new(Mutex::new(Sessions { by_id: HashMap::new(), limits: Limits::new(limits) }));
    let sweeping = sweep(Arc::downgrade(&sessions), metrics.clone(), limits.idle.min(SWEEP_EVERY));
    let until = stop.clone();
    tasks.spawn(async move { until.run_until_cancelled(sweeping).await });
    let web = Web { coord, hub, sessions, metrics, api_token, feed, tasks, stop };
    let (layer, io) = SocketIo::builder().with_state(web).build_layer();
    // Middlewares run before the client hears it is connected, the last
    // added first: the token is checked, then the handlers are in place.
    io.ns("/", on_connect.with(attach_handlers).with(authorize));
    ops::register(&io);
    (layer, io)
}

/// A connection refused for want of the API token; the client's
/// `connect_error` carries [`sio::UNAUTHORIZED`].
#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(sio::UNAUTHORIZED)
    }
}

impl std::error::Error for Unauthorized {}

/// Runs before a socket connects: with an API token set, only sockets whose
/// handshake carries it (`auth: {token}`) get in.
async fn authorize(TryData(auth): TryData<Value>, State(web): State<Web>) -> Result<(), Unauthorized> {
    let Some(token) = &web.api_token else { return Ok(()) };
    let auth = auth.ok();
    let given = auth.as_ref().and_then(|a| a.get("token")).and_then(Value::as_str).unwrap_or("");
    if token.constant_time_eq(given) { Ok(()) } else { Err(Unauthorized) }
}

/// Sends the workers to every socket when they change (checked every second).
pub async fn broadcast_workers(io: SocketIo, coord: Coordinator, stop: tokio_util::sync::CancellationToken) {
    let mut last = Value::Null;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(view) = workers_view(&coord).await else { return };
        if view != last {
            let _ = io.emit(to_client::WORKERS, &view).await;
            last = view;
        }
    }
}

/// The workers as the page shows them (`last_seen_ms`, which changes all
/// the time, is left out so unchanged workers are not re-sent).
async fn workers_view(coord: &Coordinator) -> Option<Value> {
    let workers = coord.workers().await.ok()?;
    Some(
        workers
            .iter()
            .map(|w| {
                json!({"id": w.id, "state": w.state, "hashrate": w.hashrate.round(), "running": w.running, "slots": w.slots,
                       "kinds": w.kinds, "ai_providers": w.ai_providers, "randomx_modes": w.randomx_modes})
            })
            .collect(),
    )
}

/// Puts the socket's event handlers in place. A middleware, not the connect
/// handler: socketioxide spawns the connect handler after telling the client
/// it is connected, so a client that says `hello` at once (as the page
/// does) could be heard before the handlers were there, and its event
/// dropped without an answer. Middlewares finish before the client is told.
async fn attach_handlers(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    // Behind a proxy (or Swarm's ingress) this is the proxy's address.
    let addr = socket
        .req_parts()
        .extensions
        .get::<axum::extract::ConnectInfo<crate::http::listen::PeerAddr>>()
        .map(|c| c.0.0.ip());
    let events = Arc::new(Mutex::new(limits::socket_events(Instant::now())));
    socket.extensions.insert(Client { addr: addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), events });
    socket.on_disconnect(left);
    socket.on(to_master::HELLO, hello);
    socket.on(to_master::ASK, ask);
    socket.on(to_master::SET_KEY, set_key);
    socket.on(to_master::CLEAR_KEY, clear_key);
    socket.on(to_master::HASH, hash);
    socket.on(to_master::MINE, mine);
    socket.on(to_master::CANCEL, cancel);
    Ok(())
}

async fn on_connect(socket: SocketRef, State(web): State<Web>) {
    if let Some(view) = workers_view(&web.coord).await {
        let _ = socket.emit(to_client::WORKERS, &view);
    }
}

fn reply(ack: AckSender, answer: Ack) {
    let _ = ack.send(&answer);
}

fn refuse(ack: AckSender, error: impl Into<String>) {
    reply(ack, Ack::Error { error: error.into() });
}

fn session_of(socket: &SocketRef) -> Option<String> {
    socket.extensions.get::<SessionId>().map(|s| s.0)
}

fn client_of(socket: &SocketRef) -> IpAddr {
    socket.extensions.get::<Client>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.addr)
}

/// Every event passes here first: the socket's rate, and its session marked used.
fn admit(socket: &SocketRef, web: &Web) -> Result<(), String> {
    let now = Instant::now();
    let within = socket.extensions.get::<Client>().is_none_or(|c| c.events.lock().take(now));
    if !within {
        return Err(format!("slow down: at most {} events a second", limits::EVENTS_PER_SECOND));
    }
    if let Some(id) = session_of(socket)
        && let Some(s) = web.sessions.lock().by_id.get_mut(&id)
    {
        s.seen = now;
    }
    Ok(())
}

/// A socket went away: its session has one fewer.
async fn left(socket: SocketRef, State(web): State<Web>) {
    if let Some(id) = session_of(&socket)
        && let Some(s) = web.sessions.lock().by_id.get_mut(&id)
    {
        s.sockets = s.sockets.saturating_sub(1);
        s.seen = Instant::now();
    }
}

/// Forgets idle sessions every `every`, for as long as the sessions exist.
async fn sweep(sessions: std::sync::Weak<Mutex<Sessions>>, metrics: Arc<Metrics>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(sessions) = sessions.upgrade() else { return };
        let mut s = sessions.lock();
        s.sweep(Instant::now());
        metrics.web_sessions.set(s.by_id.len() as i64);
    }
}

impl Sessions {
    /// Forgets sessions nobody has used for the idle time (no socket on
    /// them, no job running).
    fn sweep(&mut self, now: Instant) {
        let idle = self.limits.config().idle;
        let gone: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, s)| s.sockets == 0 && s.jobs.is_empty() && now.saturating_duration_since(s.seen) >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(s) = self.by_id.remove(&id) {
                self.limits.close_session(s.addr, now);
            }
        }
    }
}

async fn hello(socket: SocketRef, Data(h): Data<Value>, ack: AckSender, State(web): State<Web>) {
    if let Err(e) = admit(&socket, &web) {
        return refuse(ack, e);
    }
    let Ok(h) = serde_json::from_value::<sio::Hello>(h) else { return refuse(ack, "hello takes {\"session\"?}") };
    let addr = client_of(&socket);
    let welcome = {
        let now = Instant::now();
        let mut sessions = web.sessions.lock();
        let id = match h.session {
            Some(id) if sessions.by_id.contains_key(&id) => id,
            _ => {
                if let Err(e) = sessions.limits.open_session(addr) {
                    drop(sessions);
                    return refuse(ack, e);
                }
                let id = uuid::Uuid::new_v4().simple().to_string();
                sessions.by_id.insert(id.clone(), Session::new(addr, now));
                id
            }
        };
        web.metrics.web_sessions.set(sessions.by_id.len() as i64);
        if let Some(old) = session_of(&socket)
            && let Some(s) = sessions.by_id.get_mut(&old)
        {
            s.sockets = s.sockets.saturating_sub(1);
        }
        let (history, has_key) = match sessions.by_id.get_mut(&id) {
            Some(s) => {
                s.sockets += 1;
                s.seen = now;
                (s.exchanges.clone(), s.key.is_some())
            }
            None => (Vec::new(), false),
        };
        sio::Welcome { session: id.clone(), history, has_key }
    };
    if let Some(old) = session_of(&socket) {
        socket.leave(old);
    }
    socket.extensions.insert(SessionId(welcome.session.clone()));
    socket.join(welcome.session.clone());
    reply(ack, Ack::Welcome(welcome));
}

/// Takes a request's payload as `T`, or answers with what is wrong.
fn parse<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))
}

async fn ask(socket: SocketRef, io: SocketIo, Data(a): Data<Value>, ack: AckSender, State(web): State<Web>) {
    if let Err(e) = admit(&socket, &web) {
        return refuse(ack, e);
    }
    let Some(id) = session_of(&socket) else { return refuse(ack, "say hello first") };
    let a: sio::Ask = match parse("ask", a) {
        Ok(a) => a,
        Err(e) => return refuse(ack, e),
    };
    let used = a.prompt.len() + a.system.as_ref().map_or(0, String::len);
    let (params, key) = {
        let sessions = web.sessions.lock();
        let Some(s) = sessions.by_id.get(&id) else { return refuse(ack, "unknown session; reload the page") };
        let params = AiParams {
            prompt: a.prompt.clone(),
            system: a.system,
            model: a.model,
            provider: a.provider,
            providers: vec![],
            history: recent_context(sio::history(&s.exchanges), used),
            stream: None,
            cache: None,
            temperature: None,
            max_tokens: None,
            stop: vec![],
            prefix: None,
            own_key: s.key.is_some(),
        };
        (params, s.key.clone())
    };
    let spec = match checked(JobKind::AiQuery, &params) {
        Ok(spec) => spec,
        Err(e) => return refuse(ack, e),
    };
    // Counted per address, whichever of its sessions asks.
    if let Err(e) = web.spend(&socket, Spend::Ask) {
        return refuse(ack, e);
    }
    let submitter = Submitter::Session(id.clone());
    let job = NewJob { api_key: key, submitter, ..NewJob::new(JobId::new(), spec, Priority::Normal) };
    submit(&web, io, &id, job, Some(a.prompt), ack).await;
}

/// The latest turns that fit beside a prompt of `used` bytes: a long chat
/// keeps going with its most recent context instead of hitting the limits.
fn recent_context(mut turns: Vec<faena_proto::ai::Turn>, used: usize) -> Vec<faena_proto::ai::Turn> {
    use faena_proto::ai::{MAX_CONTEXT_BYTES, MAX_TURNS};
    let mut bytes = used + turns.iter().map(|t| t.text.len()).sum::<usize>();
    let mut drop = turns.len().saturating_sub(MAX_TURNS);
    bytes -= turns[..drop].iter().map(|t| t.text.len()).sum::<usize>();
    while bytes > MAX_CONTEXT_BYTES && drop < turns.len() {
        bytes -= turns[drop].text.len();
        drop += 1;
    }
    // Whole exchanges: never start with an answer.
    if drop % 2 == 1 && drop < turns.len() {
        drop += 1;
    }
    turns.drain(..drop.min(turns.len()));
    turns
}

/// `params` for `kind` through the one gate every entry point uses.
fn checked<T: serde::Serialize>(kind: JobKind, params: &T) -> Result<JobSpec, String> {
    let params = serde_json::to_value(params).map_err(|e| e.to_string())?;
    JobSpec::parse_kind(kind, params).map_err(|e| e.to_string())
}

async fn hash(socket: SocketRef, io: SocketIo, Data(h): Data<Value>, ack: AckSender, State(web): State<Web>) {
    if let Err(e) = admit(&socket, &web) {
        return refuse(ack, e);
    }
    let Some(id) = session_of(&socket) else { return refuse(ack, "say hello first") };
    let spec = parse::<sio::HashText>("hash", h).and_then(|h| {
        checked(JobKind::RandomxHash, &HashParams { key: h.key, input: Some(h.input), inputs: None, hex: false })
    });
    submit_job(&web, io, &socket, &id, spec, ack).await;
}

/// A hashing or mining job of a session, counted against its address.
async fn submit_job(
    web: &Web,
    io: SocketIo,
    socket: &SocketRef,
    id: &str,
    spec: Result<JobSpec, String>,
    ack: AckSender,
) {
    match spec.and_then(|spec| web.spend(socket, Spend::Job).map(|()| spec)) {
        Ok(spec) => submit(web, io, id, NewJob::new(JobId::new(), spec, Priority::Normal), None, ack).await,
        Err(e) => refuse(ack, e),
    }
}

async fn mine(socket: SocketRef, io: SocketIo, Data(m): Data<Value>, ack: AckSender, State(web): State<Web>) {
    if let Err(e) = admit(&socket, &web) {
        return refuse(ack, e);
    }
    let Some(id) = session_of(&socket) else { return refuse(ack, "say hello first") };
    let spec = parse::<sio::Mine>("mine", m).and_then(|m| {
        let params = MineParams {
            key: m.key,
            blob: m.blob,
            target: None,
            difficulty: Some(m.difficulty),
            nonce_offset: None,
            nonce_start: m.nonce_start,
            nonce_count: m.nonce_count,
            // Each share is re-hashed by the master: a page's job stops at a bound.
            max_shares: Some(limits::MAX_SHARES),
            next_key: None,
        };
        checked(JobKind::RandomxMine, &params)
    });
    submit_job(&web, io, &socket, &id, spec, ack).await;
}

/// Submits a session's job, answers with its id, and forwards its events to
/// the session's room. `question` makes it part of the chat.
async fn submit(web: &Web, io: SocketIo, session: &str, job: NewJob, question: Option<String>, ack: AckSender) {
    let id = job.id;
    // Watch before it can start, so nothing it does is missed.
    let (_, events) = web.hub.subscribe(id);
    match web.coord.submit(vec![job]).await {
        Ok(accepted) => {
            let position = accepted.first().map_or(0, |a| a.position);
            if let Some(s) = web.sessions.lock().by_id.get_mut(session) {
                s.jobs.insert(id);
                if let Some(question) = question {
                    s.exchanges.push(Exchange {
                        job: id,
                        question,
                        answer: String::new(),
                        state: JobState::Queued,
                        meta: None,
                    });
                    if s.exchanges.len() > MAX_EXCHANGES {
                        s.exchanges.remove(0);
                    }
                }
            }
            reply(ack, Ack::Job { job: id, position });
            let (stop, forwarding) =
                (web.stop.clone(), forward::forward(web.clone(), io, session.to_owned(), id, events));
            web.tasks.spawn(async move { stop.run_until_cancelled(forwarding).await });
        }
        Err(e) => refuse(ack, e.to_string()),
    }
}

impl Web {
    /// Counts a question or job against the socket's address.
    fn spend(&self, socket: &SocketRef, what: Spend) -> Result<(), String> {
        self.sessions.lock().limits.spend(client_of(socket), what, Instant::now())
    }

    /// Updates the chat entry of `job`, if it is one.
    fn note(&self, session: &str, job: JobId, f: impl FnOnce(&mut Exchange)) {
        if let Some(e) =
            self.sessions.lock().by_id.get_mut(session).and_then(|s| s.exchanges.iter_mut().find(|e| e.job == job))
        {
            f(e);
        }
    }
}

async fn set_key(socket: SocketRef, Data(k): Data<Value>, ack: AckSender, State(web): State<Web>) {
    if let Err(e) = admit(&socket, &web) {
        return refuse(ack, e);
    }
    let Some(id) = session_of(&socket) else { return refuse(ack, "say hello first") };
    let key = match parse::<sio::SetKey>("set_key", k) {
        Ok(k) if !k.key.trim().is_empty() && k.key.len() <= 4096 => Secret::new(k.key.trim()),
        Ok(_) => return refuse(ack, "the key must be 1..=4096 characters"),
        Err(e) => return refuse(ack, e),
    };
    if let Some(s) = web.sessions.lock().by_id.get_mut(&id) {
        s.key = Some(key);
    }
    reply(ack, Ack::Ok { ok: true });
}

async fn clear_key(socket: SocketRef, ack: AckSender, State(web): State<Web>) {
    if let Err(e) = admit(&socket, &web) {
        return refuse(ack, e);
    }
    let Some(id) = session_of(&socket) else { return refuse(ack, "say hello first") };
    if let Some(s) = web.sessions.lock().by_id.get_mut(&id) {
        s.key = None;
    }
    reply(ack, Ack::Ok { ok: true });
}

async fn cancel(socket: SocketRef, Data(j): Data<Value>, ack: AckSender, State(web): State<Web>) {
    if let Err(e) = admit(&socket, &web) {
        return refuse(ack, e);
    }
    let Some(id) = session_of(&socket) else { return refuse(ack, "say hello first") };
    let job = match parse::<sio::JobRef>("cancel", j) {
        Ok(j) => j.job,
        Err(e) => return refuse(ack, e),
    };
    let owned = web.sessions.lock().by_id.get(&id).is_some_and(|s| s.jobs.contains(&job));
    if !owned {
        return refuse(ack, "no such job in this session");
    }
    match web.coord.cancel(job).await {
        Ok(_) => reply(ack, Ack::Ok { ok: true }),
        Err(e) => refuse(ack, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faena_proto::ai::{MAX_CONTEXT_BYTES, Role, Turn};

    #[test]
    fn long_chats_keep_their_latest_whole_exchanges() {
        let turn = |role, n: usize| Turn { role, text: "x".repeat(n) };
        let mut turns = Vec::new();
        for _ in 0..150 {
            turns.push(turn(Role::User, 10));
            turns.push(turn(Role::Model, 10));
        }
        let kept = recent_context(turns.clone(), 100);
        assert_eq!(kept.len(), 200, "at most MAX_TURNS");
        assert_eq!(kept[0].role, Role::User);
        let big: Vec<Turn> = (0..10).flat_map(|_| [turn(Role::User, 40_000), turn(Role::Model, 1)]).collect();
        let kept = recent_context(big, 1000);
        let bytes: usize = kept.iter().map(|t| t.text.len()).sum::<usize>() + 1000;
        assert!(bytes <= MAX_CONTEXT_BYTES && !kept.is_empty() && kept[0].role == Role::User, "{}", kept.len());
    }
}

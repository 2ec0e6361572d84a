//! The embedded broker's front door. rumqttd authenticates but has no
//! topic ACL, so it listens on an internal loopback port that only this
//! guard (and the master) can log in to, and every client comes in here:
//!
//! - `CONNECT` is checked: an account's password is derived from the
//!   cluster token ([`faena_common::broker::embedded_credentials`]); a
//!   worker must use its own id as client id; a client without an account
//!   is an observer and gets a client id of its own (it cannot take over
//!   anyone's session); a last will must be on a topic the client may write.
//! - what a client publishes is checked against the [`Acl`]: refused
//!   messages are dropped (and acknowledged, as Mosquitto does);
//! - what the broker sends a client is checked too: a subscription to
//!   `faena/#` by an observer delivers status and logs, never work units.
//!   The guard acknowledges what it holds back itself — in the order the
//!   broker sent it, among the client's own acknowledgements, since rumqttd
//!   drops a client that acknowledges out of order.
//!
//! - what it costs is bounded: clients in all and observers apart; a packet
//!   from a client without an account (and any CONNECT) at most
//!   [`SMALL_PACKET_BYTES`], so a partial frame cannot hold megabytes; a
//!   keepalive of at most [`MAX_KEEPALIVE_SECS`]; a subscription only to
//!   filters that overlap what the client may read; a refused publish is
//!   logged once per connection, not once per message (logs go to the
//!   broker too).
//!
//! Packets that pass are forwarded byte for byte.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use faena_common::broker::{MASTER_CLIENT_ID, MAX_PACKET_BYTES, embedded_credentials};
use faena_proto::ids::WorkerId;
use faena_proto::secret::Secret;
use rumqttc::ConnectReturnCode;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, Login, Packet, PubAck, PubComp, PubRec, SubAck, SubscribeReasonCode};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::acl::{Acl, Role};

/// A client must send CONNECT this soon after it connects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest packet before a login, and from a client without an account.
pub const SMALL_PACKET_BYTES: usize = 64 * 1024;
/// The longest keepalive taken (0, "never", is taken as this).
pub const MAX_KEEPALIVE_SECS: u16 = 300;

/// How many clients the guard serves.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub clients: usize,
    pub observers: usize,
}

#[derive(Debug)]
pub struct Guard {
    /// rumqttd's internal listener, and the account only the guard and the master use there.
    upstream: SocketAddr,
    internal: (String, Secret),
    cluster_token: Secret,
    acl: Acl,
    clients: Arc<tokio::sync::Semaphore>,
    observers: Arc<tokio::sync::Semaphore>,
}

impl Guard {
    pub fn new(
        upstream: SocketAddr,
        internal: (String, Secret),
        cluster_token: Secret,
        acl: Acl,
        limits: Limits,
    ) -> Self {
        Self {
            upstream,
            internal,
            cluster_token,
            acl,
            clients: Arc::new(tokio::sync::Semaphore::new(limits.clients.max(1))),
            observers: Arc::new(tokio::sync::Semaphore::new(limits.observers.max(1))),
        }
    }
}

/// Accepts clients until `cancel`, over TLS when `tls` is given (mqtts);
/// each connection is a task on `tasks`, ended with it.
pub async fn serve(
    listener: TcpListener,
    guard: Arc<Guard>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(seat) = guard.clients.clone().try_acquire_owned() else {
            // Full: closed at once, before a byte is read or buffered.
            tracing::debug!(peer = %peer, "MQTT connection refused: too many clients");
            drop(tcp);
            continue;
        };
        let (guard, tls, cancel) = (guard.clone(), tls.clone(), cancel.clone());
        tasks.spawn(async move {
            let _seat = seat;
            let served = async {
                match tls {
                    None => guard.connection(tcp.into_split()).await,
                    Some(tls) => match tokio::time::timeout(CONNECT_TIMEOUT, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => guard.connection(tokio::io::split(stream)).await,
                        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                        Err(_) => Err("no TLS handshake in time".into()),
                    },
                }
            };
            let ended = tokio::select! {
                () = cancel.cancelled() => Ok(()),
                r = served => r,
            };
            if let Err(e) = ended {
                tracing::debug!(peer = %peer, reason = %e, "MQTT client connection ended");
            }
        });
    }
}

/// One MQTT packet: its bytes as they came, and what they say.
struct Frame {
    raw: Bytes,
    packet: Packet,
}

/// The next packet, of at most `max` bytes: a larger one is refused as
/// soon as its header says so, before its body is buffered.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut, max: usize) -> Result<Frame, String> {
    loop {
        match mqttbytes::check(buf.iter(), max) {
            Ok(header) => {
                let raw = buf.split_to(header.frame_length()).freeze();
                let packet = Packet::read(&mut BytesMut::from(&raw[..]), max)
                    .map_err(|e| format!("malformed MQTT packet: {e:?}"))?;
                return Ok(Frame { raw, packet });
            }
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("malformed MQTT packet: {e:?}")),
        }
        if rd.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed".into());
        }
    }
}

fn encode(packet: &Packet) -> Bytes {
    let mut buf = BytesMut::new();
    // Acks and CONNECT are far below the size limit.
    let _ = packet.write(&mut buf, MAX_PACKET_BYTES);
    buf.freeze()
}

impl Guard {
    /// What a CONNECT's login makes its client, or why it is refused.
    fn authenticate(&self, connect: &Connect) -> Result<Role, ConnectReturnCode> {
        let Some(login) = connect.login.as_ref().filter(|l| !l.username.is_empty()) else {
            return Ok(Role::Observer);
        };
        let expected = embedded_credentials(&self.cluster_token, &login.username);
        if !expected.password.constant_time_eq(&login.password) {
            return Err(ConnectReturnCode::BadUserNamePassword);
        }
        if login.username == MASTER_CLIENT_ID {
            return Ok(Role::Master);
        }
        match WorkerId::from_broker_account(&login.username) {
            Some(id) if connect.client_id == id.as_str() => Ok(Role::Worker(connect.client_id.clone())),
            Some(_) => Err(ConnectReturnCode::BadClientId),
            None => Err(ConnectReturnCode::BadUserNamePassword),
        }
    }

    async fn connection<R, W>(self: Arc<Self>, (mut client_rd, mut client_wr): (R, W)) -> Result<(), String>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(4096);
        let first = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut client_rd, &mut buf, SMALL_PACKET_BYTES))
            .await
            .map_err(|_| "no CONNECT in time".to_owned())??;
        let Packet::Connect(mut connect) = first.packet else { return Err("the first packet was not CONNECT".into()) };
        let verdict = self.authenticate(&connect).and_then(|role| match &connect.last_will {
            Some(will) if !self.acl.can_write(&role, &will.topic) => Err(ConnectReturnCode::NotAuthorized),
            _ => Ok(role),
        });
        let role = match verdict {
            Ok(role) => role,
            Err(code) => {
                let _ = client_wr.write_all(&encode(&Packet::ConnAck(ConnAck::new(code, false)))).await;
                tracing::warn!(client = %connect.client_id.chars().take(64).collect::<String>(), ?code, "MQTT login refused");
                return Err(format!("refused: {code:?}"));
            }
        };
        let _observer = match role {
            Role::Observer => match self.observers.clone().try_acquire_owned() {
                Ok(seat) => Some(seat),
                Err(_) => {
                    let refused = ConnAck::new(ConnectReturnCode::ServiceUnavailable, false);
                    let _ = client_wr.write_all(&encode(&Packet::ConnAck(refused))).await;
                    return Err("too many observers".into());
                }
            },
            _ => None,
        };
        if role == Role::Observer {
            connect.client_id = format!("observer-{}", uuid::Uuid::new_v4().simple());
            connect.clean_session = true;
        }
        connect.keep_alive = match connect.keep_alive {
            0 => MAX_KEEPALIVE_SECS,
            k => k.min(MAX_KEEPALIVE_SECS),
        };
        connect.login = Some(Login::new(self.internal.0.clone(), self.internal.1.expose()));
        let broker = TcpStream::connect(self.upstream).await.map_err(|e| format!("internal broker: {e}"))?;
        let _ = broker.set_nodelay(true);
        let (broker_rd, mut broker_wr) = broker.into_split();
        broker_wr.write_all(&encode(&Packet::Connect(connect))).await.map_err(|e| e.to_string())?;

        let (to_client, client_out) = mpsc::channel::<Bytes>(1024);
        let (to_broker, broker_out) = mpsc::channel::<Bytes>(1024);
        // Owned here: dropped (and aborted) with this connection, however it ends.
        let mut writers = tokio::task::JoinSet::new();
        writers.spawn(pipe(client_out, client_wr));
        writers.spawn(pipe(broker_out, broker_wr));
        let acks = Acks::new(to_broker.clone());
        let subs = Subs::default();
        let up = self.client_to_broker(client_rd, buf, &role, (to_broker, to_client.clone()), &acks, &subs);
        let down = self.broker_to_client(broker_rd, &role, to_client, &acks, &subs);
        let ended = tokio::select! {
            r = up => r,
            r = down => r,
        };
        writers.abort_all();
        ended
    }

    /// The client's packets to the broker; what its role may not publish is dropped.
    async fn client_to_broker(
        &self,
        mut rd: impl AsyncRead + Unpin,
        mut buf: BytesMut,
        role: &Role,
        (to_broker, to_client): (mpsc::Sender<Bytes>, mpsc::Sender<Bytes>),
        acks: &Acks,
        subs: &Subs,
    ) -> Result<(), String> {
        let max = if *role == Role::Observer { SMALL_PACKET_BYTES } else { MAX_PACKET_BYTES };
        let mut refused = 0u64;
        loop {
            let frame = read_frame(&mut rd, &mut buf, max).await?;
            match &frame.packet {
                Packet::PubAck(PubAck { pkid, .. }) | Packet::PubRec(PubRec { pkid, .. }) => {
                    acks.client_acked(*pkid, frame.raw).await?;
                    continue;
                }
                Packet::Subscribe(sub) if sub.filters.iter().any(|f| !self.acl.can_subscribe(role, &f.path)) => {
                    let allowed: Vec<bool> =
                        sub.filters.iter().map(|f| self.acl.can_subscribe(role, &f.path)).collect();
                    let refused: Vec<String> = sub
                        .filters
                        .iter()
                        .zip(&allowed)
                        .filter(|(_, ok)| !**ok)
                        .map(|(f, _)| f.path.chars().take(200).collect())
                        .collect();
                    tracing::warn!(role = ?role, filters = ?refused, "MQTT subscription refused: it can deliver nothing this client may read");
                    let kept: Vec<_> =
                        sub.filters.iter().zip(&allowed).filter(|(_, ok)| **ok).map(|(f, _)| f.clone()).collect();
                    if kept.is_empty() {
                        let codes = allowed.iter().map(|_| SubscribeReasonCode::Failure).collect();
                        send(&to_client, Packet::SubAck(SubAck::new(sub.pkid, codes))).await?;
                    } else {
                        // The broker answers the filters kept; the refused
                        // ones are put back into its SUBACK as failures.
                        subs.lock().insert(sub.pkid, allowed);
                        let kept = rumqttc::mqttbytes::v4::Subscribe { pkid: sub.pkid, filters: kept };
                        send(&to_broker, Packet::Subscribe(kept)).await?;
                    }
                    continue;
                }
                Packet::Publish(p) if !self.acl.can_write(role, &p.topic) => {
                    refused += 1;
                    // Once per connection: a client that keeps on cannot flood the log (which goes to the broker too).
                    if refused == 1 {
                        tracing::warn!(role = ?role, topic = %p.topic.chars().take(200).collect::<String>(), "MQTT publish refused by the ACL (further refusals on this connection are not logged)");
                    }
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => send(&to_client, Packet::PubAck(PubAck::new(p.pkid))).await?,
                        QoS::ExactlyOnce => return Err("QoS 2 publish refused by the ACL".into()),
                    }
                    continue;
                }
                Packet::Connect(_) => return Err("a second CONNECT".into()),
                _ => {}
            }
            to_broker.send(frame.raw).await.map_err(|_| "broker side gone".to_owned())?;
        }
    }

    /// The broker's packets to the client; messages its role may not read
    /// are acknowledged to the broker and not passed on.
    async fn broker_to_client(
        &self,
        mut rd: tokio::net::tcp::OwnedReadHalf,
        role: &Role,
        to_client: mpsc::Sender<Bytes>,
        acks: &Acks,
        subs: &Subs,
    ) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(4096);
        let mut held_back = HashSet::new();
        loop {
            // rumqttd leaves Nagle on for its connections: a packet it
            // writes while an earlier one is unacknowledged waits for our
            // ACK, which Linux may delay 40 ms. Acknowledging at once keeps
            // a work unit from waiting on that (quick-ack mode lapses, so
            // it is asked for again after each read).
            let _ = socket2::SockRef::from(rd.as_ref()).set_tcp_quickack(true);
            let frame = read_frame(&mut rd, &mut buf, MAX_PACKET_BYTES).await?;
            match &frame.packet {
                Packet::Publish(p) if !self.acl.can_read(role, &p.topic) => {
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => acks.sent(p.pkid, Held::Ack).await?,
                        QoS::ExactlyOnce => {
                            held_back.insert(p.pkid);
                            acks.sent(p.pkid, Held::Rec).await?;
                        }
                    }
                    continue;
                }
                Packet::Publish(p) if p.qos != QoS::AtMostOnce => acks.sent(p.pkid, Held::No).await?,
                Packet::SubAck(a) if subs.lock().contains_key(&a.pkid) => {
                    let allowed = subs.lock().remove(&a.pkid).unwrap_or_default();
                    let mut granted = a.return_codes.iter().copied();
                    let codes = allowed
                        .iter()
                        .map(|ok| {
                            if *ok {
                                granted.next().unwrap_or(SubscribeReasonCode::Failure)
                            } else {
                                SubscribeReasonCode::Failure
                            }
                        })
                        .collect();
                    send(&to_client, Packet::SubAck(SubAck::new(a.pkid, codes))).await?;
                    continue;
                }
                Packet::PubRel(r) if held_back.remove(&r.pkid) => {
                    acks.send(Packet::PubComp(PubComp::new(r.pkid))).await?;
                    continue;
                }
                _ => {}
            }
            to_client.send(frame.raw).await.map_err(|_| "client side gone".to_owned())?;
        }
    }
}

/// Subscriptions sent on with some filters taken out: for each packet id,
/// which of the client's filters were kept (at most one per packet id).
type Subs = parking_lot::Mutex<std::collections::HashMap<u16, Vec<bool>>>;

/// Whether the guard holds a message back (and acknowledges it itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    No,
    Ack,
    Rec,
}

/// The broker's QoS 1/2 messages to one client, oldest first, until they
/// are acknowledged: the guard's own acknowledgements wait their turn.
struct Acks {
    out: tokio::sync::Mutex<VecDeque<(u16, Held)>>,
    to_broker: mpsc::Sender<Bytes>,
}

impl Acks {
    fn new(to_broker: mpsc::Sender<Bytes>) -> Self {
        Self { out: tokio::sync::Mutex::new(VecDeque::new()), to_broker }
    }

    async fn send(&self, packet: Packet) -> Result<(), String> {
        send(&self.to_broker, packet).await
    }

    /// The broker sent `pkid`; `held` says whether the client gets it.
    async fn sent(&self, pkid: u16, held: Held) -> Result<(), String> {
        let mut out = self.out.lock().await;
        out.push_back((pkid, held));
        self.release(&mut out).await
    }

    /// The client acknowledged `pkid` (its PUBACK, as `raw`).
    async fn client_acked(&self, pkid: u16, raw: Bytes) -> Result<(), String> {
        let mut out = self.out.lock().await;
        if let Some(at) = out.iter().position(|(p, held)| *p == pkid && *held == Held::No) {
            out.remove(at);
        }
        self.to_broker.send(raw).await.map_err(|_| "broker side gone".to_owned())?;
        self.release(&mut out).await
    }

    /// Acknowledges the held-back messages now at the front.
    async fn release(&self, out: &mut VecDeque<(u16, Held)>) -> Result<(), String> {
        while let Some(&(pkid, held)) = out.front() {
            match held {
                Held::No => break,
                Held::Ack => self.send(Packet::PubAck(PubAck::new(pkid))).await?,
                Held::Rec => self.send(Packet::PubRec(PubRec::new(pkid))).await?,
            }
            out.pop_front();
        }
        Ok(())
    }
}

async fn send(to: &mpsc::Sender<Bytes>, packet: Packet) -> Result<(), String> {
    to.send(encode(&packet)).await.map_err(|_| "connection gone".to_owned())
}

/// Writes what comes on `rx` to `wr` until either ends.
async fn pipe(mut rx: mpsc::Receiver<Bytes>, mut wr: impl AsyncWrite + Unpin) {
    while let Some(bytes) = rx.recv().await {
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

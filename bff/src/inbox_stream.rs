//! `GET /v1/me/inbox/stream`: a user's inbox in real time, as Server-Sent Events (decision
//! 0029).
//!
//! notification-service publishes every committed change to an inbox on one Redis pub/sub
//! channel. Each bff holds **one** subscription ([`Hub::run`]) and a map from user to that
//! user's open streams here; a change goes to each of them through a small bounded channel
//! (`try_send`: the hub never waits for a stream). A stream is the connection plus that
//! channel and a little state — no task or subscription of its own — so idle streams are
//! cheap.
//!
//! Every change has the next number of the user's sequence, sent as the event `id`. A stream
//! that sees the number after its last one with the change attached sends it as is; any
//! other gap (a signal lost while Redis was away, one too large to attach, a reconnect with
//! `Last-Event-ID`) is filled from notification-service's change log
//! (`GET /v1/me/inbox/changes?after=N`, as the user), so a stream has no gap and no
//! duplicate. When the subscription comes back after a break, every stream reads the log.
//!
//! Events: `counts` first (the counts and the latest number; `id` is that number), then
//! `inbox` per change (an [`InboxEvent`]), `reset` when a resumed stream is older than the kept
//! log (reload the list), and `expired` just before the stream ends at the token's `exp`.
//! A comment every `heartbeat_secs` keeps proxies from closing an idle stream.
//!
//! Limits: streams per user across every bff (a Redis sorted set whose entries the
//! heartbeats refresh, so a crashed bff's streams lapse) and per bff, each a 429
//! `too_many_streams`. A stream that falls `buffer` changes behind is dropped
//! (`bff_inbox_streams_dropped_total`): it reconnects with `Last-Event-ID` and loses nothing.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use api::inbox::{InboxChanges, InboxCounts, InboxEvent, InboxSignal};
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
};
use common::{auth::Principal, metrics::Registry, problem::ApiError, redis::RedisConfig};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::config::StreamConfig;
use crate::{AppState, rate_limit::Caller, upstream::Service};

/// What the hub hands a stream.
#[derive(Debug, Clone)]
enum Wake {
    /// A change of this stream's user.
    Signal(Arc<InboxSignal>),
    /// The subscription was broken: changes may have been missed.
    Resync,
}

struct Entry {
    id: u64,
    tx: mpsc::Sender<Wake>,
}

/// This bff's streams, by user, and its one subscription.
pub struct Hub {
    streams: Mutex<HashMap<Uuid, Vec<Entry>>>,
    next_id: AtomicU64,
    /// Names this hub's streams in the users' sets (stream ids are per hub).
    instance: String,
    open: AtomicU64,
    cfg: StreamConfig,
    redis: Option<redis::aio::ConnectionManager>,
    redis_cfg: RedisConfig,
    shutdown: CancellationToken,
    metrics: HubMetrics,
}

#[derive(Clone, Default)]
struct HubMetrics {
    open: common::metrics::Gauge,
    dropped: common::metrics::Counter,
    refused: common::metrics::Counter,
    signals: common::metrics::Counter,
}

/// A registered stream; dropping it leaves the hub (and the user's count).
struct Registration {
    hub: Arc<Hub>,
    user: Uuid,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.leave(self.user, self.id);
    }
}

/// Adds a stream to the user's set unless they hold `max` live ones: 1 added, 0 refused.
/// Entries whose lease passed (a bff that died) are removed first.
const ENTER: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

impl Hub {
    pub fn new(
        cfg: StreamConfig,
        redis: Option<redis::aio::ConnectionManager>,
        redis_cfg: RedisConfig,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let metrics = HubMetrics::default();
        registry.register(
            "bff_inbox_streams",
            "Inbox streams open on this bff",
            metrics.open.clone(),
        );
        registry.register(
            "bff_inbox_streams_dropped",
            "Inbox streams dropped for falling too far behind (they resume with Last-Event-ID)",
            metrics.dropped.clone(),
        );
        registry.register(
            "bff_inbox_streams_refused",
            "Inbox streams refused past the per-user or per-bff cap",
            metrics.refused.clone(),
        );
        registry.register(
            "bff_inbox_signals",
            "Inbox changes received on the subscription",
            metrics.signals.clone(),
        );
        Arc::new(Self {
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            instance: Uuid::new_v4().simple().to_string(),
            open: AtomicU64::new(0),
            cfg,
            redis,
            redis_cfg,
            shutdown,
            metrics,
        })
    }

    fn user_key(&self, user: Uuid) -> String {
        self.redis_cfg.key(&format!("inbox:streams:{user}"))
    }

    /// The lease of a stream's entry in its user's set.
    fn lease(&self) -> Duration {
        Duration::from_secs(self.cfg.heartbeat_secs.max(1) * 3)
    }

    /// Registers a stream of `user`, within both caps.
    async fn enter(
        self: &Arc<Self>,
        user: Uuid,
    ) -> Result<(Registration, mpsc::Receiver<Wake>), ApiError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if self.open.fetch_add(1, Ordering::SeqCst) as usize >= self.cfg.max_streams {
            self.open.fetch_sub(1, Ordering::SeqCst);
            self.metrics.refused.inc();
            return Err(too_many(
                "this instance holds as many streams as it may; retry shortly",
            ));
        }
        // From here, dropping `reg` undoes the count.
        let (tx, rx) = mpsc::channel(self.cfg.buffer.max(1));
        self.streams
            .lock()
            .expect("hub lock")
            .entry(user)
            .or_default()
            .push(Entry { id, tx });
        self.metrics.open.inc();
        let reg = Registration {
            hub: self.clone(),
            user,
            id,
        };
        if let Some(redis) = &self.redis {
            let now = now_ms();
            let mut conn = redis.clone();
            let entered: redis::RedisResult<i64> = redis::Script::new(ENTER)
                .key(self.user_key(user))
                .arg(now)
                .arg(now + self.lease().as_millis() as i64)
                .arg(self.cfg.max_streams_per_user)
                .arg(self.member(id))
                .arg(self.lease().as_millis() as i64 * 2)
                .invoke_async(&mut conn)
                .await;
            match entered {
                Ok(0) => {
                    self.metrics.refused.inc();
                    return Err(too_many(format!(
                        "this user has {} streams open already; close one",
                        self.cfg.max_streams_per_user
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the stream cap is unavailable; letting the stream open")
                }
            }
        }
        Ok((reg, rx))
    }

    /// This hub's stream `id` as a member of a user's set.
    fn member(&self, id: u64) -> String {
        format!("{}:{id}", self.instance)
    }

    /// Renews the lease of a stream's entry (each heartbeat).
    /// Renews the leases of every stream this hub holds, each heartbeat, in one pipeline (not
    /// a round trip per stream: 10,000 streams would be ~670 a second), until shutdown.
    pub async fn renew_leases(self: Arc<Self>) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let every = Duration::from_secs(self.cfg.heartbeat_secs.max(1));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let held: Vec<(Uuid, u64)> = {
                let streams = self.streams.lock().expect("hub lock");
                streams
                    .iter()
                    .flat_map(|(user, list)| list.iter().map(move |e| (*user, e.id)))
                    .collect()
            };
            let until = now_ms() + self.lease().as_millis() as i64;
            for batch in held.chunks(1000) {
                let mut pipe = redis::pipe();
                for (user, id) in batch {
                    pipe.cmd("ZADD")
                        .arg(self.user_key(*user))
                        .arg("XX")
                        .arg(until)
                        .arg(self.member(*id))
                        .ignore();
                }
                let mut conn = redis.clone();
                if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                    tracing::warn!(error = %e, "inbox stream leases not renewed");
                }
            }
        }
    }

    fn leave(&self, user: Uuid, id: u64) {
        {
            let mut streams = self.streams.lock().expect("hub lock");
            if let Some(list) = streams.get_mut(&user) {
                list.retain(|e| e.id != id);
                if list.is_empty() {
                    streams.remove(&user);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.metrics.open.dec();
        if let Some(redis) = &self.redis {
            let mut conn = redis.clone();
            let (key, member) = (self.user_key(user), self.member(id));
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(async move {
                let _: redis::RedisResult<i64> = redis::cmd("ZREM")
                    .arg(key)
                    .arg(member)
                    .query_async(&mut conn)
                    .await;
            });
        }
    }

    /// Hands `wake` to `user`'s streams (every stream's, for `None`); a stream whose buffer is
    /// full is dropped.
    fn wake(&self, user: Option<Uuid>, wake: &Wake) {
        let mut streams = self.streams.lock().expect("hub lock");
        let mut dropped = 0;
        let mut hand = |list: &mut Vec<Entry>| {
            list.retain(|e| match e.tx.try_send(wake.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        };
        match user {
            Some(user) => {
                if let Some(list) = streams.get_mut(&user) {
                    hand(list);
                }
            }
            None => streams.values_mut().for_each(&mut hand),
        }
        streams.retain(|_, l| !l.is_empty());
        drop(streams);
        if dropped > 0 {
            self.metrics.dropped.inc_by(dropped);
            tracing::info!(dropped, "slow inbox streams dropped");
        }
    }

    /// The one subscription, until shutdown: reconnects after a break, and then has every
    /// stream read the change log (what was published meanwhile is gone).
    pub async fn run(self: Arc<Self>, url: String) {
        let channel = api::inbox::signal_channel(&self.redis_cfg);
        let mut first = true;
        loop {
            let subscribed = async {
                let client = redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                redis::RedisResult::Ok(pubsub)
            };
            let pubsub = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                p = tokio::time::timeout(Duration::from_secs(5), subscribed) => p,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    if !first {
                        tracing::info!("inbox subscription back; streams re-read their changes");
                        self.wake(None, &Wake::Resync);
                    }
                    first = false;
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let msg = tokio::select! {
                            _ = self.shutdown.cancelled() => return,
                            m = messages.next() => m,
                        };
                        let Some(msg) = msg else { break };
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<InboxSignal>(&payload) {
                            Ok(signal) => {
                                self.metrics.signals.inc();
                                let user = signal.user_id;
                                self.wake(Some(user), &Wake::Signal(Arc::new(signal)));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "an inbox signal that does not parse")
                            }
                        }
                    }
                    tracing::warn!("inbox subscription lost; reconnecting");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "inbox subscription failed; retrying"),
                Err(_) => tracing::warn!("inbox subscription timed out; retrying"),
            }
            // Streams cannot know what they missed while it is down: have them look.
            if !first {
                self.wake(None, &Wake::Resync);
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn too_many(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", detail).with_header(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    )
}

/// The `Last-Event-ID` a reconnecting client sends: a change number (anything else is 400).
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let v = v.to_str().unwrap_or_default().trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_last_event_id",
                "Last-Event-ID is not an event id this stream gave out",
            )
        })
}

/// What a stream writes next, whatever carries it (axum's `Sse` on the API's port, or the
/// socket itself on the streams' own path, `crate::stream_listener`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Event {
        kind: &'static str,
        id: i64,
        /// One line of JSON.
        data: String,
    },
    /// A comment: the heartbeat.
    Comment,
}

impl Out {
    /// As axum's SSE writes it.
    fn to_axum(&self) -> Event {
        match self {
            Out::Event { kind, id, data } => {
                Event::default().event(*kind).id(id.to_string()).data(data)
            }
            Out::Comment => Event::default().comment(""),
        }
    }

    /// The bytes of the event on the wire (`text/event-stream`).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Out::Event { kind, id, data } => {
                format!("event: {kind}\nid: {id}\ndata: {data}\n\n").into_bytes()
            }
            Out::Comment => b":\n\n".to_vec(),
        }
    }
}

/// One open stream's state between events.
pub struct Stream {
    principal: Principal,
    state: AppState,
    rx: mpsc::Receiver<Wake>,
    _reg: Registration,
    last: i64,
    pending: VecDeque<Out>,
    heartbeat: tokio::time::Interval,
    expires: tokio::time::Instant,
    ended: bool,
}

/// Reads the change log after `after` as the user (`None`: only the counts and the latest
/// number).
async fn read_changes(
    state: &AppState,
    principal: &Principal,
    after: Option<i64>,
) -> Result<InboxChanges, ApiError> {
    let path = match after {
        Some(a) => format!("/v1/me/inbox/changes?after={a}"),
        None => "/v1/me/inbox/changes".to_owned(),
    };
    let (status, body) = state
        .upstream
        .get_json(Service::Notifications, &path, principal)
        .await?;
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or_default().to_owned();
        return Err(match status {
            StatusCode::UNAUTHORIZED => ApiError::unauthorized(detail),
            StatusCode::FORBIDDEN => ApiError::forbidden(detail),
            _ => ApiError::unavailable(format!("the inbox could not be read ({status}); retry")),
        });
    }
    serde_json::from_value(body).map_err(|e| {
        ApiError::internal(anyhow::anyhow!(
            "notification-service answered changes the contract does not describe: {e}"
        ))
    })
}

fn counts_event(kind: &'static str, counts: InboxCounts, last_seq: i64) -> Out {
    Out::Event {
        kind,
        id: last_seq,
        data: serde_json::json!({ "unread": counts.unread, "unseen": counts.unseen, "last_seq": last_seq })
            .to_string(),
    }
}

fn inbox_event(e: &InboxEvent) -> Out {
    Out::Event {
        kind: "inbox",
        id: e.seq,
        data: serde_json::to_string(e).unwrap_or_default(),
    }
}

impl Stream {
    /// Fills `pending` from the change log after `last` (all of it, a page at a time).
    async fn catch_up(&mut self) -> Result<(), ApiError> {
        loop {
            let changes = read_changes(&self.state, &self.principal, Some(self.last)).await?;
            if changes.reset {
                self.last = changes.last_seq;
                self.pending
                    .push_back(counts_event("reset", changes.counts, changes.last_seq));
                return Ok(());
            }
            for e in &changes.events {
                if e.seq > self.last {
                    self.last = e.seq;
                    self.pending.push_back(inbox_event(e));
                }
            }
            if !changes.more {
                return Ok(());
            }
        }
    }

    /// The next event, or `None` when the stream ends.
    pub async fn next(mut self) -> Option<(Out, Self)> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some((e, self));
            }
            if self.ended {
                return None;
            }
            let wake = tokio::select! {
                _ = self.state.inbox.shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(self.expires) => {
                    self.ended = true;
                    self.pending.push_back(Out::Event {
                        kind: "expired",
                        id: self.last,
                        data: "{}".into(),
                    });
                    continue;
                }
                _ = self.heartbeat.tick() => return Some((Out::Comment, self)),
                w = self.rx.recv() => w,
            };
            let caught = match wake {
                // Dropped by the hub (too far behind), or shutting down.
                None => return None,
                Some(Wake::Signal(s)) if s.seq <= self.last => continue,
                Some(Wake::Signal(s)) if s.seq == self.last + 1 && s.event.is_some() => {
                    self.last = s.seq;
                    let e = s.event.as_ref().expect("checked");
                    self.pending.push_back(inbox_event(e));
                    continue;
                }
                Some(_) => self.catch_up().await,
            };
            if let Err(e) = caught {
                // The token expired or was refused: the stream ends. Anything else (the
                // service away): the client resumes from its last event.
                tracing::info!(status = %e.status, detail = e.detail, "inbox stream ends: the change log could not be read");
                return None;
            }
        }
    }
}

/// `GET /v1/me/inbox/stream` on the API's port (a stream on a connection that served other
/// requests first; a connection that opens with one is `crate::stream_listener`'s).
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let s = open(&state, caller, &headers).await?;
    let events = futures::stream::unfold(s, |s| async move {
        s.next()
            .await
            .map(|(out, s)| (Ok::<_, Infallible>(out.to_axum()), s))
    });
    let mut resp = Sse::new(events).into_response();
    // nginx: never buffer this answer.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// Opens a stream for `caller` (a user): within the caps, resumed after `Last-Event-ID` when
/// the request has one; its first events are pending.
pub async fn open(
    state: &AppState,
    caller: Caller,
    headers: &HeaderMap,
) -> Result<Stream, ApiError> {
    caller.require(&[common::auth::Role::User])?;
    let principal = caller.0;
    let user = Uuid::parse_str(principal.subject())
        .map_err(|_| ApiError::forbidden("this token's subject is not a user id"))?;
    let resume = last_event_id(headers)?;
    let (reg, rx) = state.inbox.enter(user).await?;
    let first = read_changes(state, &principal, resume).await?;
    let mut pending = VecDeque::new();
    let mut last = first.last_seq;
    match resume {
        Some(after) if !first.reset => {
            last = after;
            for e in &first.events {
                last = e.seq;
                pending.push_back(inbox_event(e));
            }
        }
        Some(_) => pending.push_back(counts_event("reset", first.counts, first.last_seq)),
        None => pending.push_back(counts_event("counts", first.counts, first.last_seq)),
    }
    let left = principal.claims.exp - chrono::Utc::now().timestamp();
    let every = Duration::from_secs(state.inbox.cfg.heartbeat_secs.max(1));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut s = Stream {
        principal,
        state: state.clone(),
        rx,
        _reg: reg,
        last,
        pending,
        heartbeat,
        expires: tokio::time::Instant::now() + Duration::from_secs(left.max(0) as u64),
        ended: false,
    };
    // More than one page of missed changes: the rest now, before going live.
    if resume.is_some() && first.more {
        s.catch_up().await?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(user: Uuid, seq: i64) -> Wake {
        Wake::Signal(Arc::new(InboxSignal {
            user_id: user,
            seq,
            event: None,
        }))
    }

    /// A stream that stops taking changes is dropped once its buffer is full; the other
    /// streams of the same user keep theirs, and the hub never waits.
    #[tokio::test]
    async fn a_stream_that_falls_behind_is_dropped_and_the_others_are_not() {
        let registry = Registry::default();
        let hub = Hub::new(
            StreamConfig {
                buffer: 2,
                ..Default::default()
            },
            None,
            RedisConfig::default(),
            &registry,
            CancellationToken::new(),
        );
        let user = Uuid::new_v4();
        let (_keep, mut reading) = hub.enter(user).await.unwrap();
        let (_slow, mut stalled) = hub.enter(user).await.unwrap();
        let (_other, mut someone_else) = hub.enter(Uuid::new_v4()).await.unwrap();
        for seq in 1..=3 {
            hub.wake(Some(user), &signal(user, seq));
            assert!(matches!(reading.recv().await, Some(Wake::Signal(s)) if s.seq == seq));
        }
        assert_eq!(hub.metrics.dropped.get(), 1);
        // The stalled stream gets what was buffered, then the end.
        assert!(matches!(stalled.recv().await, Some(Wake::Signal(s)) if s.seq == 1));
        assert!(matches!(stalled.recv().await, Some(Wake::Signal(s)) if s.seq == 2));
        assert!(stalled.recv().await.is_none());
        // Another user's stream heard nothing of it, until everyone is asked to re-read.
        assert!(someone_else.try_recv().is_err());
        hub.wake(None, &Wake::Resync);
        assert!(matches!(someone_else.recv().await, Some(Wake::Resync)));
        assert!(matches!(reading.recv().await, Some(Wake::Resync)));
    }

    #[tokio::test]
    async fn an_instance_refuses_streams_past_its_cap_and_frees_a_place_when_one_ends() {
        let registry = Registry::default();
        let hub = Hub::new(
            StreamConfig {
                max_streams: 1,
                ..Default::default()
            },
            None,
            RedisConfig::default(),
            &registry,
            CancellationToken::new(),
        );
        let first = hub.enter(Uuid::new_v4()).await.unwrap();
        let refused = hub.enter(Uuid::new_v4()).await.err().unwrap();
        assert_eq!(
            (refused.status, refused.kind),
            (StatusCode::TOO_MANY_REQUESTS, "too_many_streams")
        );
        drop(first);
        assert!(hub.enter(Uuid::new_v4()).await.is_ok());
    }

    #[test]
    fn last_event_id_is_a_change_number() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h).unwrap(), None);
        h.insert("last-event-id", "42".parse().unwrap());
        assert_eq!(last_event_id(&h).unwrap(), Some(42));
        for bad in ["-1", "x", "1.5"] {
            h.insert("last-event-id", bad.parse().unwrap());
            assert!(last_event_id(&h).is_err(), "{bad}");
        }
    }
}

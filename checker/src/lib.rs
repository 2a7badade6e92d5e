//! A plain-Rust model of everything the redis-ql scripts keep in Redis, the
//! operations that change it, and the invariants real Redis must keep.
//!
//! [`Harness::apply`] applies one [`Op`] to the model and, through the
//! project's real wrappers and scripts, to a real Redis; [`Harness::check`]
//! then reads Redis back and compares. The property tests generate the
//! operations with proptest, the fuzz target decodes them from bytes.

use redis::AsyncCommands;
use redis_ql::connection::Redis;
use redis_ql::keys::Keys;
use redis_ql::message::{ErrorRecord, Message};
use redis_ql::scripts::{self, Acquired, Claimed, LastEnqueue, Outcome, Refused};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many copies the operations talk about.
pub const COPIES: u8 = 3;
/// How many get-errors runs.
pub const RUNS: u8 = 2;
/// Small, so that dead-letter is reached.
pub const MAX_DELIVERIES: u32 = 3;
const LEASE_MS: u64 = 60_000;

/// One step, by one copy (a number taken modulo [`COPIES`]) or by nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Op {
    /// Tries to take the lease.
    Acquire {
        copy: u8,
    },
    /// Renews the lease it believes it holds (maybe stale).
    Renew {
        copy: u8,
    },
    /// Releases the lease it believes it holds (maybe stale).
    Release {
        copy: u8,
    },
    /// The lease runs out.
    LeaseExpires,
    /// A fenced enqueue with the lease it believes it holds (maybe stale or none).
    Enqueue {
        copy: u8,
    },
    Claim {
        copy: u8,
        count: u8,
    },
    /// Acks one of the items it believes it holds (maybe taken back meanwhile).
    Ack {
        copy: u8,
        pick: u8,
        error: bool,
    },
    /// Its heartbeat key vanishes, as after a pause or a crash.
    HeartbeatExpires {
        copy: u8,
    },
    /// It registers again under a new id (forgetting what it held).
    Reregister {
        copy: u8,
    },
    Janitor,
    TakeErrors {
        run: u8,
        count: u8,
    },
    /// The run wrote its batch out: the draining list is deleted.
    CommitDrain {
        run: u8,
    },
    /// The run died: its lock expires.
    AbandonDrain {
        run: u8,
    },
    /// Something that is not a message lands in the queue.
    PushGarbage,
}

/// A queue item as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    Message { seq: u64, deliveries: u32 },
    Garbage(String),
}

impl Item {
    fn decode(raw: &[u8]) -> Item {
        match Message::decode(raw) {
            Ok(m) => Item::Message {
                seq: m.seq,
                deliveries: m.deliveries,
            },
            Err(_) => Item::Garbage(String::from_utf8_lossy(raw).into_owned()),
        }
    }

    fn seq(&self) -> Option<u64> {
        match self {
            Item::Message { seq, .. } => Some(*seq),
            Item::Garbage(_) => None,
        }
    }
}

/// What one copy believes: its id, its lease, what it holds.
#[derive(Debug, Clone, Default)]
struct CopyView {
    id: String,
    generation: u32,
    lease: Option<String>,
    held: Vec<Vec<u8>>,
}

/// The state of Redis, as the scripts should leave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub lease: Option<String>,
    pub epoch: u64,
    pub seq: u64,
    /// Left end first, as `LRANGE 0 -1` lists it.
    pub queue: VecDeque<Item>,
    pub processing: BTreeMap<String, VecDeque<Item>>,
    pub heartbeats: BTreeSet<String>,
    pub registry: BTreeSet<String>,
    pub processed: u64,
    pub errors: VecDeque<u64>,
    pub errors_total: u64,
    pub dead: Vec<Option<u64>>,
    pub draining: BTreeMap<String, VecDeque<u64>>,
    pub drain_locks: BTreeSet<String>,
    pub drains: BTreeSet<String>,
    /// Seqs committed as ok (they leave no trace but the counter).
    pub acked_ok: BTreeSet<u64>,
    /// Seqs whose error record a get-errors run wrote out and deleted.
    pub printed: BTreeSet<u64>,
    garbage_made: u32,
}

/// A real Redis, the model beside it, and what each copy believes.
pub struct Harness {
    pub redis: Redis,
    pub keys: Keys,
    pub model: Model,
    copies: Vec<CopyView>,
}

fn run_id(run: u8) -> String {
    format!("run{}", run % RUNS)
}

impl Harness {
    /// A harness on an empty namespace: everything in it is deleted first.
    pub async fn new(redis: Redis, namespace: &str) -> redis::RedisResult<Self> {
        let keys = Keys::new(namespace);
        let mut conn = redis.conn();
        let old: Vec<String> = conn.keys(format!("{{{namespace}}}:*")).await?;
        if !old.is_empty() {
            let _: () = conn.del(old).await?;
        }
        let mut harness = Self {
            redis,
            keys,
            model: Model::default(),
            copies: Vec::new(),
        };
        for k in 0..COPIES {
            harness.copies.push(CopyView::default());
            harness.register(k).await?;
        }
        Ok(harness)
    }

    async fn register(&mut self, k: u8) -> redis::RedisResult<()> {
        let view = &mut self.copies[k as usize];
        view.generation += 1;
        view.id = format!("c{k}g{}", view.generation);
        view.held.clear();
        view.lease = None;
        let id = view.id.clone();
        scripts::heartbeat(
            &self.redis,
            &self.keys,
            &id,
            60_000,
            "{}",
            60_000,
            scripts::BeatKind::Register,
            true,
        )
        .await?
        .map_err(|refused| {
            redis::RedisError::from((redis::ErrorKind::Client, "register", refused.to_string()))
        })?;
        self.model.heartbeats.insert(id.clone());
        self.model.registry.insert(id);
        Ok(())
    }

    /// Applies `op` to the model and to Redis, and checks that the scripts'
    /// answers are the model's.
    pub async fn apply(&mut self, op: Op) -> Result<(), String> {
        let e = |e: redis::RedisError| format!("{op:?}: redis error: {e}");
        if let Op::Reregister { copy } = op {
            return self.register(copy % COPIES).await.map_err(e);
        }
        let Self {
            redis: r,
            keys: k,
            model: m,
            copies,
        } = self;
        let slot = |copy: u8| (copy % COPIES) as usize;
        match op {
            Op::Acquire { copy } => {
                let id = copies[slot(copy)].id.clone();
                let got = scripts::acquire_lease(r, k, &id, LEASE_MS)
                    .await
                    .map_err(e)?;
                let expected = m.lease.is_none();
                match got {
                    Acquired::Taken { epoch, .. } if expected => {
                        m.epoch += 1;
                        if epoch != m.epoch {
                            return Err(format!("{op:?}: epoch {epoch}, model {}", m.epoch));
                        }
                        let holder = scripts::holder_value(epoch, &id);
                        m.lease = Some(holder.clone());
                        copies[slot(copy)].lease = Some(holder);
                    }
                    Acquired::Held { holder, .. } if !expected => {
                        if Some(&holder) != m.lease.as_ref() {
                            return Err(format!("{op:?}: held by {holder}, model {:?}", m.lease));
                        }
                    }
                    other => {
                        return Err(format!("{op:?}: got {other:?}, model lease {:?}", m.lease))
                    }
                }
            }
            Op::Renew { copy } => {
                let Some(holder) = copies[slot(copy)].lease.clone() else {
                    return Ok(());
                };
                let renewed = scripts::renew_lease(r, k, &holder, LEASE_MS)
                    .await
                    .map_err(e)?
                    .is_ok();
                if renewed != (m.lease.as_ref() == Some(&holder)) {
                    return Err(format!(
                        "{op:?}: renewed {renewed} with {holder}, model {:?}",
                        m.lease
                    ));
                }
            }
            Op::Release { copy } => {
                let Some(holder) = copies[slot(copy)].lease.take() else {
                    return Ok(());
                };
                let released = scripts::release_lease(r, k, &holder)
                    .await
                    .map_err(e)?
                    .is_ok();
                let expected = m.lease.as_ref() == Some(&holder);
                if released != expected {
                    return Err(format!("{op:?}: released {released}, model {:?}", m.lease));
                }
                if expected {
                    m.lease = None;
                }
            }
            Op::LeaseExpires => {
                let _: () = r.conn().del(k.lease()).await.map_err(e)?;
                m.lease = None;
            }
            Op::Enqueue { copy } => {
                let view = &copies[slot(copy)];
                let holder = view
                    .lease
                    .clone()
                    .unwrap_or_else(|| format!("0:{}", view.id));
                let body = format!(
                    r#","epoch":{},"producer":"{}","text":"t","generated_at_ms":1}}"#,
                    holder.split(':').next().unwrap_or("0"),
                    view.id
                );
                let last = LastEnqueue {
                    generated_at_ms: 1,
                    epoch: 0,
                    producer: view.id.clone(),
                };
                let got = scripts::enqueue(
                    r,
                    k,
                    &holder,
                    std::slice::from_ref(&body),
                    &last,
                    0,
                    std::time::Duration::ZERO,
                )
                .await
                .map_err(e)?;
                let got = got.ok();
                let expected = m.lease.as_ref() == Some(&holder);
                match (got, expected) {
                    (Some(seq), true) => {
                        m.seq += 1;
                        if seq != m.seq {
                            return Err(format!("{op:?}: seq {seq}, model {}", m.seq));
                        }
                        m.queue.push_front(Item::Message { seq, deliveries: 0 });
                    }
                    (None, false) => {}
                    (got, _) => {
                        return Err(format!(
                            "{op:?}: enqueue by {holder} gave {got:?}, model lease {:?}",
                            m.lease
                        ))
                    }
                }
            }
            Op::Claim { copy, count } => {
                let count = (count % 4) as usize + 1;
                let id = copies[slot(copy)].id.clone();
                let got = scripts::claim(r, k, &id, count, 1_048_576)
                    .await
                    .map_err(e)?;
                if !m.heartbeats.contains(&id) {
                    if got != Err(Refused::NotRegistered) {
                        return Err(format!("{op:?}: {id} claimed without a heartbeat: {got:?}"));
                    }
                    return Ok(());
                }
                let Ok(Claimed { items, left, .. }) = got else {
                    return Err(format!("{op:?}: {id} refused with a heartbeat"));
                };
                let list = m.processing.entry(id).or_default();
                for raw in &items {
                    let expected = m.queue.pop_back();
                    let item = Item::decode(raw);
                    if expected.as_ref() != Some(&item) {
                        return Err(format!("{op:?}: claimed {item:?}, model {expected:?}"));
                    }
                    list.push_front(item);
                }
                let model_left = if items.len() == count {
                    m.queue.len()
                } else {
                    0
                };
                if left as usize != model_left || (items.len() < count && !m.queue.is_empty()) {
                    return Err(format!("{op:?}: left {left}, model {}", m.queue.len()));
                }
                copies[slot(copy)].held.extend(items);
            }
            Op::Ack { copy, pick, error } => {
                let view = &mut copies[slot(copy)];
                if view.held.is_empty() {
                    return Ok(());
                }
                let raw = view.held.remove(pick as usize % view.held.len());
                let id = view.id.clone();
                let item = Item::decode(&raw);
                let outcome = match (&item, Message::decode(&raw)) {
                    (Item::Message { .. }, Ok(message)) if error => {
                        Outcome::Error(ErrorRecord::new(&message, &id, 2).encode())
                    }
                    (Item::Message { .. }, _) => Outcome::Ok,
                    (Item::Garbage(_), _) => Outcome::Dead("not a valid message".to_string()),
                };
                let before = if cfg!(debug_assertions) {
                    Some(snapshot(r, k).await.map_err(e)?)
                } else {
                    None
                };
                let answers = scripts::ack(r, k, &id, &[(raw.clone(), outcome.clone())])
                    .await
                    .map_err(e)?;
                let committed = answers == [true];
                let list = m.processing.entry(id).or_default();
                // LREM -1: the occurrence nearest the right end.
                let position = list.iter().rposition(|held| *held == item);
                if committed != position.is_some() {
                    return Err(format!(
                        "{op:?}: committed {committed}, model holds it: {}",
                        position.is_some()
                    ));
                }
                match (position, outcome) {
                    (None, _) => {
                        if let Some(before) = before {
                            let after = snapshot(r, k).await.map_err(e)?;
                            if before != after {
                                return Err(format!("{op:?}: a refused ack changed Redis"));
                            }
                        }
                    }
                    (Some(at), outcome) => {
                        list.remove(at);
                        match outcome {
                            Outcome::Ok => {
                                m.processed += 1;
                                m.acked_ok.extend(item.seq());
                            }
                            Outcome::Error(_) => {
                                m.processed += 1;
                                m.errors_total += 1;
                                m.errors.push_front(item.seq().unwrap_or(0));
                            }
                            Outcome::Dead(_) => m.dead.push(None),
                        }
                    }
                }
            }
            Op::HeartbeatExpires { copy } => {
                let id = copies[slot(copy)].id.clone();
                let _: () = r.conn().del(k.heartbeat(&id)).await.map_err(e)?;
                m.heartbeats.remove(&id);
            }
            Op::Reregister { .. } => {}
            Op::Janitor => {
                redis_ql::janitor::pass(r, k, MAX_DELIVERIES, &Default::default()).await;
                m.janitor();
            }
            Op::TakeErrors { run, count } => {
                let run = run_id(run);
                let count = (count % 4) as u64 + 1;
                let batch = scripts::take_errors(r, k, &run, count, 60_000)
                    .await
                    .map_err(e)?;
                m.drain_locks.insert(run.clone());
                m.drains.insert(run.clone());
                let list = m.draining.entry(run).or_default();
                for raw in batch {
                    let seq = ErrorRecord::decode(&raw).map(|r| r.seq).unwrap_or(0);
                    let expected = m.errors.pop_back();
                    if expected != Some(seq) {
                        return Err(format!("{op:?}: took {seq}, model {expected:?}"));
                    }
                    list.push_front(seq);
                }
            }
            Op::CommitDrain { run } => {
                let run = run_id(run);
                let _: () = r.conn().del(k.draining(&run)).await.map_err(e)?;
                if let Some(list) = m.draining.remove(&run) {
                    m.printed.extend(list);
                }
            }
            Op::AbandonDrain { run } => {
                let run = run_id(run);
                let _: () = r.conn().del(k.drain_lock(&run)).await.map_err(e)?;
                m.drain_locks.remove(&run);
            }
            Op::PushGarbage => {
                m.garbage_made += 1;
                let garbage = format!("garbage {}", m.garbage_made);
                let _: () = r.conn().lpush(k.queue(), &garbage).await.map_err(e)?;
                m.queue.push_front(Item::Garbage(garbage));
            }
        }
        Ok(())
    }

    /// Reads Redis back: the invariants of docs/SPEC.md G4 and the registry, and
    /// agreement with the model.
    pub async fn check(&self) -> Result<(), String> {
        let state = read_state(&self.redis, &self.keys)
            .await
            .map_err(|e| format!("redis error: {e}"))?;
        check_invariants(&state, &self.model.acked_ok, &self.model.printed)?;
        let m = &self.model;
        let expected = State {
            lease: m.lease.clone(),
            seq: m.seq,
            queue: m.queue.iter().cloned().collect(),
            processing: m
                .processing
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(id, l)| (id.clone(), l.iter().cloned().collect()))
                .collect(),
            heartbeats: m.heartbeats.clone(),
            registry: m.registry.clone(),
            processed: m.processed,
            errors: m.errors.iter().copied().collect(),
            errors_total: m.errors_total,
            dead: m.dead.clone(),
            draining: m
                .draining
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(run, l)| (run.clone(), l.iter().copied().collect()))
                .collect(),
        };
        let mut actual = state;
        actual.dead.sort();
        let mut expected = expected;
        expected.dead.sort();
        if actual != expected {
            return Err(format!(
                "Redis and the model disagree:\n redis {actual:?}\n model {expected:?}"
            ));
        }
        Ok(())
    }
}

impl Model {
    /// What one janitor pass does, in the janitor's (sorted) order.
    fn janitor(&mut self) {
        let dead: Vec<String> = self
            .registry
            .iter()
            .filter(|id| !self.heartbeats.contains(*id))
            .cloned()
            .collect();
        for id in dead {
            let mut list = self.processing.remove(&id).unwrap_or_default();
            while let Some(item) = list.pop_front() {
                match item {
                    Item::Message { seq, deliveries } if deliveries + 1 >= MAX_DELIVERIES => {
                        self.dead.push(Some(seq));
                    }
                    Item::Message { seq, deliveries } => self.queue.push_back(Item::Message {
                        seq,
                        deliveries: deliveries + 1,
                    }),
                    Item::Garbage(_) => self.dead.push(None),
                }
            }
            self.registry.remove(&id);
        }
        let abandoned: Vec<String> = self
            .drains
            .iter()
            .filter(|r| !self.drain_locks.contains(*r))
            .cloned()
            .collect();
        for run in abandoned {
            let mut list = self.draining.remove(&run).unwrap_or_default();
            while let Some(seq) = list.pop_front() {
                self.errors.push_back(seq);
            }
            self.drains.remove(&run);
        }
    }
}

/// Everything the invariants look at, read from Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub lease: Option<String>,
    pub seq: u64,
    pub queue: Vec<Item>,
    pub processing: BTreeMap<String, Vec<Item>>,
    pub heartbeats: BTreeSet<String>,
    pub registry: BTreeSet<String>,
    pub processed: u64,
    pub errors: Vec<u64>,
    pub errors_total: u64,
    /// The seq of each dead-letter record (`None`: not a message).
    pub dead: Vec<Option<u64>>,
    pub draining: BTreeMap<String, Vec<u64>>,
}

fn suffix(key: &str, prefix: &str) -> String {
    key.strip_prefix(prefix).unwrap_or(key).to_string()
}

/// Reads the whole state of a namespace.
pub async fn read_state(redis: &Redis, keys: &Keys) -> redis::RedisResult<State> {
    let mut conn = redis.conn();
    let ns = keys.namespace();
    let list = |raw: Vec<Vec<u8>>| raw.iter().map(|i| Item::decode(i)).collect::<Vec<_>>();
    let record_seqs = |raw: Vec<Vec<u8>>| {
        raw.iter()
            .map(|r| ErrorRecord::decode(r).map(|r| r.seq).unwrap_or(0))
            .collect::<Vec<_>>()
    };
    let mut state = State {
        lease: conn.get(keys.lease()).await?,
        seq: conn.get::<_, Option<u64>>(keys.seq()).await?.unwrap_or(0),
        queue: list(conn.lrange(keys.queue(), 0, -1).await?),
        processed: conn
            .get::<_, Option<u64>>(keys.processed())
            .await?
            .unwrap_or(0),
        errors: record_seqs(conn.lrange(keys.errors(), 0, -1).await?),
        errors_total: conn
            .get::<_, Option<u64>>(keys.errors_total())
            .await?
            .unwrap_or(0),
        registry: conn
            .hkeys::<_, Vec<String>>(keys.registry())
            .await?
            .into_iter()
            .collect(),
        ..State::default()
    };
    let processing_prefix = keys.processing("");
    for key in conn
        .keys::<_, Vec<String>>(format!("{processing_prefix}*"))
        .await?
    {
        let items = list(conn.lrange(&key, 0, -1).await?);
        state
            .processing
            .insert(suffix(&key, &processing_prefix), items);
    }
    let heartbeat_prefix = keys.heartbeat("");
    for key in conn
        .keys::<_, Vec<String>>(format!("{heartbeat_prefix}*"))
        .await?
    {
        state.heartbeats.insert(suffix(&key, &heartbeat_prefix));
    }
    let draining_prefix = keys.draining("");
    for key in conn
        .keys::<_, Vec<String>>(format!("{{{ns}}}:draining:*"))
        .await?
    {
        let seqs = record_seqs(conn.lrange(&key, 0, -1).await?);
        state.draining.insert(suffix(&key, &draining_prefix), seqs);
    }
    let dead: Vec<Vec<u8>> = conn.lrange(keys.dead(), 0, -1).await?;
    state.dead = dead
        .iter()
        .map(|d| {
            let v: serde_json::Value =
                serde_json::from_str(&String::from_utf8_lossy(d)).unwrap_or_default();
            v["item"]
                .as_str()
                .and_then(|i| Message::decode(i.as_bytes()).ok())
                .map(|m| m.seq)
        })
        .collect();
    Ok(state)
}

/// The invariants that hold whatever the model says:
/// - every accepted seq (1..=seq) is in exactly one place — queue, a
///   processing list, the errors list, a draining list, dead-letter,
///   committed ok (`acked_ok`) or printed (`printed`) — and no seq beyond;
/// - no processing list belongs to a copy that is not registered;
/// - the processed counter counts each commit once.
pub fn check_invariants(
    state: &State,
    acked_ok: &BTreeSet<u64>,
    printed: &BTreeSet<u64>,
) -> Result<(), String> {
    let mut places: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let mut add = |seq: u64, place: &'static str| places.entry(seq).or_default().push(place);
    state
        .queue
        .iter()
        .filter_map(Item::seq)
        .for_each(|s| add(s, "queue"));
    state
        .processing
        .values()
        .flatten()
        .filter_map(Item::seq)
        .for_each(|s| add(s, "processing"));
    state.errors.iter().for_each(|s| add(*s, "errors"));
    state
        .draining
        .values()
        .flatten()
        .for_each(|s| add(*s, "draining"));
    state.dead.iter().flatten().for_each(|s| add(*s, "dead"));
    acked_ok.iter().for_each(|s| add(*s, "acked ok"));
    printed.iter().for_each(|s| add(*s, "printed"));
    let missing: Vec<u64> = (1..=state.seq)
        .filter(|s| !places.contains_key(s))
        .collect();
    if !missing.is_empty() {
        return Err(format!("seqs in no place: {missing:?}"));
    }
    if let Some((seq, where_)) = places.iter().find(|(_, p)| p.len() > 1) {
        return Err(format!("seq {seq} in more than one place: {where_:?}"));
    }
    if let Some(seq) = places.keys().find(|s| **s == 0 || **s > state.seq) {
        return Err(format!("seq {seq} was never accepted"));
    }
    for (id, items) in &state.processing {
        if !items.is_empty() && !state.registry.contains(id) {
            return Err(format!("{id} holds {items:?} but is not registered"));
        }
    }
    let committed_errors =
        state.errors.len() + state.draining.values().map(Vec::len).sum::<usize>() + printed.len();
    if state.errors_total as usize != committed_errors {
        return Err(format!(
            "errors_total {} but {committed_errors} error records",
            state.errors_total
        ));
    }
    if state.processed as usize != acked_ok.len() + committed_errors {
        return Err(format!(
            "processed {} but {} ok + {committed_errors} errors",
            state.processed,
            acked_ok.len()
        ));
    }
    Ok(())
}

/// Every key of the namespace and its value, to prove that nothing changed.
async fn snapshot(redis: &Redis, keys: &Keys) -> redis::RedisResult<BTreeMap<String, String>> {
    let mut conn = redis.conn();
    let mut out = BTreeMap::new();
    for key in conn
        .keys::<_, Vec<String>>(format!("{{{}}}:*", keys.namespace()))
        .await?
    {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await?;
        let value = match kind.as_str() {
            "string" => conn.get::<_, String>(&key).await?,
            "list" => format!("{:?}", conn.lrange::<_, Vec<String>>(&key, 0, -1).await?),
            "hash" => format!(
                "{:?}",
                conn.hgetall::<_, BTreeMap<String, String>>(&key).await?
            ),
            "set" => format!("{:?}", conn.smembers::<_, BTreeSet<String>>(&key).await?),
            other => other.to_string(),
        };
        out.insert(key, value);
    }
    Ok(out)
}

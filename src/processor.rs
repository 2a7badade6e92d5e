//! The processor: claims messages into this copy's processing list and works
//! on up to `--concurrency` of them at once, as tasks sharing one connection.
//!
//! It claims when there may be something to claim: a wake-up from the
//! generator, a heartbeat that saw a non-empty queue (the once-a-second
//! poll), a fresh subscription, or a slot freed while the last claim left
//! messages behind. Each result is committed by the ack script in the same
//! step that removes the message from the processing list; an ack the script
//! refuses (the janitor took the message back) has no effect. Results that
//! are ready at the same moment share one ack call.

use crate::backoff::Backoff;
use crate::copy::{CopyState, Role};
use crate::escape::for_terminal;
use crate::message::{now_ms, ErrorRecord, Message};
use crate::scripts::{self, Claimed, Outcome};
use crate::sync::Locked;
use rand::RngExt;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// How often a copy compares its processing list with what it holds.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// The most messages one claim takes: it bounds how long the claim script
/// runs and lets copies share a backlog.
const CLAIM_BATCH: usize = 128;

/// The items this copy is working on. A claim whose answer was lost (a
/// timeout, a reset) may still have moved messages into the processing list;
/// while the copy beats, the janitor will never take them back, so after any
/// failed request the copy looks itself: whatever its list holds that is not
/// in hand is an orphan.
#[derive(Default)]
struct InHand(Mutex<HashMap<Vec<u8>, usize>>);

impl InHand {
    fn add(&self, item: &[u8]) {
        *self.0.locked().entry(item.to_vec()).or_default() += 1;
    }

    fn remove(&self, item: &[u8]) {
        let mut held = self.0.locked();
        if let Some(n) = held.get_mut(item) {
            *n -= 1;
            if *n == 0 {
                held.remove(item);
            }
        }
    }

    /// How many items are in hand.
    fn len(&self) -> u64 {
        self.0.locked().values().map(|n| *n as u64).sum()
    }

    /// The items of `listed` (the processing list) not in hand.
    fn orphans(&self, listed: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut held = self.0.locked().clone();
        listed
            .into_iter()
            .filter(|item| match held.get_mut(item) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            })
            .collect()
    }
}

/// The processor's shared parts, for the task that works on each item.
struct Work {
    copy: Arc<CopyState>,
    tasks: TaskTracker,
    in_hand: Arc<InHand>,
    slot_freed: Arc<Notify>,
    acks: mpsc::UnboundedSender<Ack>,
    /// Cancelled past the shutdown timeout: the work still in hand stops,
    /// its items being given back, so that no task outlives the copy.
    abandon: CancellationToken,
}

/// A result waiting to be committed, and where its answer goes.
struct Ack {
    claimed_as: Arc<str>,
    item: Vec<u8>,
    outcome: Outcome,
    answer: oneshot::Sender<bool>,
    /// Not sent again before this, after a failed try.
    not_before: Instant,
    backoff: Backoff,
    /// Was in a batch that Redis refused: sent alone from now on, so that
    /// whatever is to blame holds back nothing else.
    alone: bool,
}

impl Ack {
    fn size(&self) -> usize {
        self.item.len()
            + match &self.outcome {
                Outcome::Ok => 0,
                Outcome::Error(payload) | Outcome::Dead(payload) => payload.len(),
            }
    }

    fn failed(&mut self) {
        self.not_before = Instant::now() + self.backoff.next_wait();
    }
}

/// The most results one ack script commits, and the most bytes it sends.
const ACK_BATCH: usize = 128;
const ACK_BATCH_BYTES: usize = 256 * 1024;

/// Commits results as they come, many in one script call when many are
/// ready at once. A result is kept until it lands or is refused; one that
/// fails waits its own backoff while the others go on, so that no single
/// result (an item Redis cannot take, a key of the wrong type that only its
/// outcome needs) can hold back the commits of the rest. Ends when every
/// sender is gone and nothing is left to commit.
async fn commit_results(copy: Arc<CopyState>, mut acks: mpsc::UnboundedReceiver<Ack>) {
    let mut waiting: VecDeque<Ack> = VecDeque::new();
    let mut open = true;
    loop {
        let now = Instant::now();
        let next_due = waiting.iter().map(|a| a.not_before).min();
        if open && next_due.is_none_or(|due| due > now) {
            let arrived = match next_due {
                None => acks.recv().await,
                Some(due) => tokio::select! {
                    ack = acks.recv() => ack,
                    _ = tokio::time::sleep_until(due) => continue,
                },
            };
            match arrived {
                Some(ack) => waiting.push_back(ack),
                None => open = false,
            }
        } else if let Some(due) = next_due.filter(|due| *due > now) {
            tokio::time::sleep_until(due).await;
        }
        while let Ok(ack) = acks.try_recv() {
            waiting.push_back(ack);
        }
        if waiting.is_empty() {
            if open {
                continue;
            }
            return;
        }
        let batch = take_due(&mut waiting, Instant::now());
        if batch.is_empty() {
            continue;
        }
        waiting.extend(commit(&copy, batch).await);
    }
}

/// The due results at the front of the line that one call commits: one
/// processing list, at most ACK_BATCH of them and ACK_BATCH_BYTES, and only
/// one when it must go alone.
fn take_due(waiting: &mut VecDeque<Ack>, now: Instant) -> Vec<Ack> {
    let Some(first) = waiting.iter().position(|a| a.not_before <= now) else {
        return Vec::new();
    };
    let Some(lead) = waiting.remove(first) else {
        return Vec::new();
    };
    let alone = lead.alone;
    let mut bytes = lead.size();
    let mut batch = vec![lead];
    let mut at = 0;
    while !alone && at < waiting.len() && batch.len() < ACK_BATCH {
        let ack = &waiting[at];
        let fits = bytes + ack.size() <= ACK_BATCH_BYTES;
        if ack.claimed_as == batch[0].claimed_as && !ack.alone && ack.not_before <= now && fits {
            bytes += ack.size();
            batch.extend(waiting.remove(at));
        } else {
            at += 1;
        }
    }
    batch
}

/// One ack call; the results it could not commit (none, or all of them).
async fn commit(copy: &CopyState, batch: Vec<Ack>) -> Vec<Ack> {
    let results: Vec<(Vec<u8>, Outcome)> = batch
        .iter()
        .map(|a| (a.item.clone(), a.outcome.clone()))
        .collect();
    match scripts::ack(&copy.redis, &copy.keys, &batch[0].claimed_as, &results).await {
        Ok(answers) => {
            if answers.iter().any(|committed| *committed) {
                copy.confirm_replicated("an ack").await;
            }
            for (ack, committed) in batch.into_iter().zip(answers) {
                let _ = ack.answer.send(committed);
            }
            Vec::new()
        }
        Err(e) => {
            copy.last_error
                .report("committing results (they are kept and retried)", &e);
            let split = batch.len() > 1 && !crate::error::is_connection_error(&e);
            let mut batch = batch;
            for ack in &mut batch {
                if split {
                    // At once, one by one: what is to blame is found and the rest go on.
                    ack.alone = true;
                } else {
                    ack.failed();
                }
            }
            batch
        }
    }
}

impl Work {
    /// Works on `item`, claimed under `id`, in a task of its own.
    fn spawn(&self, id: &Arc<str>, item: Vec<u8>, permit: Option<OwnedSemaphorePermit>) {
        self.in_hand.add(&item);
        self.copy.metrics.in_flight.inc();
        let (copy, id, in_hand, slot_freed) = (
            self.copy.clone(),
            id.clone(),
            self.in_hand.clone(),
            self.slot_freed.clone(),
        );
        let (acks, abandon) = (self.acks.clone(), self.abandon.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                _ = process(&copy, &id, &item, &acks) => {}
                _ = abandon.cancelled() => {}
            }
            in_hand.remove(&item);
            copy.metrics.in_flight.dec();
            drop(permit);
            slot_freed.notify_one();
        });
    }

    /// Takes up the orphans in `id`'s processing list.
    async fn adopt_orphans(&self, id: &Arc<str>) -> redis::RedisResult<()> {
        let redis = &self.copy.redis;
        let listed: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.copy.keys.processing(id))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis.conn())
            .await?;
        let orphans = self.in_hand.orphans(listed);
        if !orphans.is_empty() {
            info!(
                count = orphans.len(),
                "took up messages claimed by a request whose answer was lost"
            );
        }
        for item in orphans {
            self.spawn(id, item, None);
        }
        Ok(())
    }
}

/// Claims and processes until shutdown, then waits up to the shutdown
/// timeout for the messages in hand.
pub async fn run(copy: Arc<CopyState>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(copy.settings.concurrency));
    let (acks, pending) = mpsc::unbounded_channel();
    copy.tasks.spawn(commit_results(copy.clone(), pending));
    let work = Work {
        copy: copy.clone(),
        tasks: TaskTracker::new(),
        in_hand: Arc::default(),
        slot_freed: Arc::new(Notify::new()),
        acks,
        abandon: CancellationToken::new(),
    };
    // Requests that failed and may have taken effect, as of the last look.
    let mut failures_seen = copy.redis.failures();
    let mut next_look = Instant::now() + RECONCILE_EVERY;
    let mut look_again = tokio::time::interval(Duration::from_secs(1));
    look_again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut role = copy.watch_role();
    let mut id_changes = copy.watch_id();
    // The last claim filled every slot and left messages queued.
    let mut more = false;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if *role.borrow_and_update() != Role::Processor {
            more = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = role.changed() => continue,
            }
        }
        // After a failed request, and every few seconds when the heartbeat
        // saw more in the processing list than is in hand: a claim that
        // reached Redis after its request had timed out leaves messages
        // there that nobody else will ever take back while this copy lives.
        let failures = copy.redis.failures();
        let now = Instant::now();
        let suspect = failures != failures_seen
            || (now >= next_look && copy.processing_len() > work.in_hand.len());
        if now >= next_look {
            next_look = now + RECONCILE_EVERY;
        }
        if suspect && work.adopt_orphans(&copy.id()).await.is_ok() {
            failures_seen = failures;
        }
        if !more {
            let ready = slots.available_permits() > 0;
            copy.signals.ready.store(ready, Ordering::Relaxed);
            let woken = tokio::select! {
                _ = shutdown.cancelled() => None,
                _ = role.changed() => Some(false),
                // Once a second, back to the top to look for orphans.
                _ = look_again.tick() => Some(false),
                _ = copy.signals.wake.notified() => Some(true),
            };
            copy.signals.ready.store(false, Ordering::Relaxed);
            match woken {
                None => break,
                Some(false) => continue,
                Some(true) => {}
            }
        }
        // Slots come free in groups (the tasks of one ack end together):
        // let the rest of the group end first, so that one claim fills them.
        tokio::task::yield_now().await;
        let permits = free_slots(&slots);
        if permits.is_empty() {
            more = true;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = work.slot_freed.notified() => continue,
            }
        }
        let id = copy.id();
        let claimed = scripts::claim(
            &copy.redis,
            &copy.keys,
            &id,
            permits.len(),
            copy.settings.max_item_bytes,
        )
        .await;
        match claimed {
            Ok(Ok(Claimed {
                items,
                left,
                oversized,
            })) => {
                backoff.reset();
                more = left > 0 || oversized > 0;
                if oversized > 0 {
                    copy.metrics.dead_lettered.inc_by(oversized);
                    warn!(
                        count = oversized,
                        max_item_bytes = copy.settings.max_item_bytes,
                        "dead-lettered queue items over --max-item-bytes without taking them"
                    );
                }
                for (item, permit) in items.into_iter().zip(permits) {
                    work.spawn(&id, item, Some(permit));
                }
            }
            Ok(Err(_)) => {
                // Our heartbeat is gone: the heartbeat task registers a new id.
                more = true;
                copy.beat_now.notify_one();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = id_changes.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => {
                copy.last_error.report("claim", &e);
                more = true;
                let wait = backoff.next_wait();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    let tasks = &work.tasks;
    tasks.close();
    if !tasks.is_empty() {
        info!(in_hand = tasks.len(), "waiting for the messages in hand");
    }
    if tokio::time::timeout(copy.settings.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            unfinished = tasks.len(),
            "shutdown timeout: giving back the unfinished messages"
        );
        work.abandon.cancel();
        tasks.wait().await;
    }
}

fn free_slots(slots: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    std::iter::from_fn(|| slots.clone().try_acquire_owned().ok())
        .take(CLAIM_BATCH)
        .collect()
}

/// Works on one claimed item and hands the result to the committer.
async fn process(
    copy: &CopyState,
    claimed_as: &Arc<str>,
    item: &[u8],
    acks: &mpsc::UnboundedSender<Ack>,
) {
    let message = Message::decode(item);
    let (outcome, seq) = match &message {
        Err(reason) => (Outcome::Dead(reason.clone()), None),
        Ok(message) => {
            if !copy.settings.work.is_zero() {
                tokio::time::sleep(copy.settings.work).await;
            }
            if rand::rng().random_bool(copy.settings.error_rate) {
                let record = ErrorRecord::new(message, claimed_as, now_ms());
                (Outcome::Error(record.encode()), Some(message.seq))
            } else {
                (Outcome::Ok, Some(message.seq))
            }
        }
    };
    let (answer, committed) = oneshot::channel();
    let ack = Ack {
        claimed_as: claimed_as.clone(),
        item: item.to_vec(),
        outcome: outcome.clone(),
        answer,
        not_before: Instant::now(),
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
        alone: false,
    };
    if acks.send(ack).is_err() {
        return;
    }
    match committed.await {
        Ok(true) => {
            match (&message, &outcome) {
                (Ok(m), outcome) => copy
                    .metrics
                    .committed(m.generated_at_ms, matches!(outcome, Outcome::Error(_))),
                (Err(_), _) => {
                    copy.metrics.dead_lettered.inc();
                }
            }
            log_result(copy, &message, &outcome);
        }
        Ok(false) => {
            copy.metrics.refused_acks.inc();
            // Either the janitor gave it back, or an earlier try of this
            // same ack committed it and only its answer was lost.
            warn!(
                seq,
                "ack refused: the message is no longer in this copy's list"
            );
        }
        Err(_) => {}
    }
}

fn log_result(copy: &CopyState, message: &Result<Message, String>, outcome: &Outcome) {
    match (message, outcome) {
        (Err(reason), _) => {
            warn!(reason = %for_terminal(reason), "dead-lettered a queue item that is not a message")
        }
        (Ok(m), Outcome::Error(_)) if copy.chatty() => {
            info!(seq = m.seq, text = %for_terminal(&m.text), "processed: error, stored")
        }
        (Ok(m), _) if copy.chatty() => {
            info!(seq = m.seq, text = %for_terminal(&m.text), "processed")
        }
        (Ok(m), _) => debug!(seq = m.seq, "processed"),
    }
}

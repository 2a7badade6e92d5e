//! The processor: claims messages into this copy's processing list and works
//! on up to `--concurrency` of them at once, as tasks sharing one connection.
//!
//! It claims when there may be something to claim: a wake-up from the
//! generator, a heartbeat that saw a non-empty queue (the once-a-second
//! poll), a fresh subscription, or a slot freed while the last claim left
//! messages behind. Each result is committed by the ack script in the same
//! step that removes the message from the processing list; an ack the script
//! refuses (the janitor took the message back) has no effect.

use crate::escape::for_terminal;
use crate::message::{now_ms, DeadRecord, ErrorRecord, Message};
use crate::node::{Node, Role};
use crate::scripts::{self, Claim, Outcome};
use rand::RngExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// The most messages one claim takes: it bounds how long the claim script
/// runs and lets copies share a backlog.
const CLAIM_BATCH: usize = 32;

/// Claims and processes until shutdown, then waits up to the shutdown
/// timeout for the messages in hand.
pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(node.settings.concurrency));
    let slot_freed = Arc::new(Notify::new());
    let tasks = TaskTracker::new();
    let mut role = node.watch_role();
    let mut id_changes = node.watch_id();
    // The last claim filled every slot and left messages queued.
    let mut more = false;
    let mut backoff = Duration::from_millis(50);
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
        if !more {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = role.changed() => continue,
                _ = node.signals.wake.notified() => {}
            }
        }
        let permits = free_slots(&slots);
        if permits.is_empty() {
            more = true;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = slot_freed.notified() => continue,
            }
        }
        let id = node.id();
        match scripts::claim(&node.redis, &node.keys, &id, permits.len()).await {
            Ok(Claim::Claimed { items, left }) => {
                backoff = Duration::from_millis(50);
                more = left > 0;
                for (item, permit) in items.into_iter().zip(permits) {
                    let (node, id, slot_freed) = (node.clone(), id.clone(), slot_freed.clone());
                    tasks.spawn(async move {
                        process(&node, &id, item).await;
                        drop(permit);
                        slot_freed.notify_one();
                    });
                }
            }
            Ok(Claim::Expired) => {
                // Our heartbeat is gone: the heartbeat task registers a new id.
                more = true;
                node.beat_now.notify_one();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = id_changes.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(_) => {
                more = true;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(crate::connection::jitter(backoff)) => {}
                }
            }
        }
    }
    tasks.close();
    if !tasks.is_empty() {
        info!(in_hand = tasks.len(), "waiting for the messages in hand");
    }
    if tokio::time::timeout(node.settings.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            unfinished = tasks.len(),
            "shutdown timeout: giving back the unfinished messages"
        );
    }
}

fn free_slots(slots: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    std::iter::from_fn(|| slots.clone().try_acquire_owned().ok())
        .take(CLAIM_BATCH)
        .collect()
}

/// Works on one claimed item and commits the result, retrying the commit
/// while Redis cannot be reached: the result is kept until it lands or is
/// refused.
async fn process(node: &Node, claimed_as: &str, item: Vec<u8>) {
    let message = Message::decode(&item);
    let record;
    let (outcome, seq) = match &message {
        Err(reason) => {
            record = DeadRecord {
                reason: reason.clone(),
                item: String::from_utf8_lossy(&item).into_owned(),
            }
            .encode();
            (Outcome::Dead(&record), None)
        }
        Ok(message) => {
            if !node.settings.work.is_zero() {
                tokio::time::sleep(node.settings.work).await;
            }
            if rand::rng().random_bool(node.settings.error_rate) {
                record = ErrorRecord::new(message, claimed_as, now_ms()).encode();
                (Outcome::Error(&record), Some(message.seq))
            } else {
                (Outcome::Ok, Some(message.seq))
            }
        }
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        match scripts::ack(&node.redis, &node.keys, claimed_as, &item, outcome).await {
            Ok(true) => {
                node.count_processed();
                log_result(node, &message, outcome);
                return;
            }
            Ok(false) => {
                warn!(
                    seq,
                    "ack refused: the message was given back to the queue while this copy held it"
                );
                return;
            }
            Err(e) => {
                debug!(seq, error = %e, "ack failed; keeping the result and retrying");
                tokio::time::sleep(crate::connection::jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn log_result(node: &Node, message: &Result<Message, String>, outcome: Outcome<'_>) {
    match (message, outcome) {
        (Err(reason), _) => {
            warn!(reason = %for_terminal(reason), "dead-lettered a queue item that is not a message")
        }
        (Ok(m), Outcome::Error(_)) if node.chatty() => {
            info!(seq = m.seq, text = %for_terminal(&m.text), "processed: error, stored")
        }
        (Ok(m), _) if node.chatty() => {
            info!(seq = m.seq, text = %for_terminal(&m.text), "processed")
        }
        (Ok(m), _) => debug!(seq = m.seq, "processed"),
    }
}

//! Each Lua script through its Rust wrapper, against a real Redis: the
//! fences refuse what they must refuse and change nothing when they do.

use redis::AsyncCommands;
use redis_ql::connection::Redis;
use redis_ql::keys::Keys;
use redis_ql::scripts::{self, Acquired, Claimed, LastEnqueue, Outcome, Reclaim, Refused};
use std::time::Duration;
use testkit::{connect, RedisServer};

fn last() -> LastEnqueue {
    LastEnqueue {
        generated_at_ms: 1,
        epoch: 1,
        producer: "p".into(),
    }
}

async fn register(redis: &Redis, keys: &Keys, id: &str) {
    let beat = scripts::heartbeat(
        redis,
        keys,
        id,
        3000,
        "{}",
        1000,
        scripts::BeatKind::Register,
        true,
    )
    .await
    .expect("register");
    assert!(beat.is_ok());
}

const BODY: &str = r#","epoch":1,"producer":"p","text":"t","generated_at_ms":1}"#;

async fn enqueue_as(redis: &Redis, keys: &Keys, holder: &str) -> Option<u64> {
    match scripts::enqueue(
        redis,
        keys,
        holder,
        &[BODY.to_string()],
        &last(),
        0,
        std::time::Duration::ZERO,
    )
    .await
    .expect("enqueue")
    {
        Ok(first_seq) => Some(first_seq),
        Err(Refused::NotHolder) => None,
        Err(refused) => panic!("{refused}: no cap and no interval were set"),
    }
}

/// CopyState "c" claims up to `count` messages; the items it now holds.
async fn claim_as_c(redis: &Redis, keys: &Keys, count: usize) -> Vec<Vec<u8>> {
    match scripts::claim(redis, keys, "c", count, 1_048_576)
        .await
        .expect("claim")
    {
        Ok(Claimed { items, .. }) => items,
        Err(refused) => panic!("claim refused: {refused}"),
    }
}

/// Acks one item held by copy "c"; whether it was committed.
async fn ack_one(redis: &Redis, keys: &Keys, item: &[u8], outcome: Outcome) -> bool {
    let answers = scripts::ack(redis, keys, "c", &[(item.to_vec(), outcome)])
        .await
        .expect("ack");
    answers == [true]
}

/// CopyState "g" takes the lease (epoch 1) and enqueues seqs 1, 2, 3.
async fn queue_three(redis: &Redis, keys: &Keys) {
    scripts::acquire_lease(redis, keys, "g", 10_000)
        .await
        .expect("acquire");
    for seq in 1..=3 {
        assert_eq!(enqueue_as(redis, keys, "1:g").await, Some(seq));
    }
}

#[tokio::test]
async fn the_lease_goes_to_one_copy_with_a_growing_epoch() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    let taken = scripts::acquire_lease(&redis, &keys, "a", 1000)
        .await
        .expect("acquire");
    assert_eq!(
        taken,
        Acquired::Taken {
            epoch: 1,
            last: None
        }
    );
    match scripts::acquire_lease(&redis, &keys, "b", 1000)
        .await
        .expect("acquire")
    {
        Acquired::Held { ms_left, holder } => {
            assert!((1..=1000).contains(&ms_left), "{ms_left}");
            assert_eq!(holder, "1:a");
        }
        other => panic!("b must not get a held lease: {other:?}"),
    }
    assert!(scripts::renew_lease(&redis, &keys, "1:a", 1000)
        .await
        .expect("renew")
        .is_ok());
    assert_eq!(
        scripts::renew_lease(&redis, &keys, "1:b", 1000)
            .await
            .expect("renew"),
        Err(Refused::NotHolder)
    );
    assert_eq!(
        scripts::renew_lease(&redis, &keys, "0:a", 1000)
            .await
            .expect("renew"),
        Err(Refused::NotHolder)
    );
    // The lease expires (made to vanish); b takes it with the next epoch.
    let _: () = redis.conn().del(keys.lease()).await.expect("del");
    enqueue_as(&redis, &keys, "1:a").await; // refused: nobody holds it
    assert!(matches!(
        scripts::acquire_lease(&redis, &keys, "b", 1000)
            .await
            .expect("acquire"),
        Acquired::Taken { epoch: 2, .. }
    ));
    assert_eq!(
        scripts::renew_lease(&redis, &keys, "1:a", 1000)
            .await
            .expect("renew"),
        Err(Refused::NotHolder)
    );
    assert_eq!(
        scripts::release_lease(&redis, &keys, "1:a")
            .await
            .expect("release"),
        Err(Refused::NotHolder)
    );
    let holder: String = redis.conn().get(keys.lease()).await.expect("get");
    assert_eq!(holder, "2:b", "a stale release changes nothing");
    assert!(scripts::release_lease(&redis, &keys, "2:b")
        .await
        .expect("release")
        .is_ok());
    let exists: bool = redis.conn().exists(keys.lease()).await.expect("exists");
    assert!(!exists);
}

#[tokio::test]
async fn the_fenced_enqueue_refuses_stale_epochs_and_non_holders_without_gaps() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    scripts::acquire_lease(&redis, &keys, "a", 10_000)
        .await
        .expect("acquire");
    assert_eq!(enqueue_as(&redis, &keys, "1:a").await, Some(1));
    assert_eq!(enqueue_as(&redis, &keys, "1:b").await, None, "non-holder");
    assert_eq!(enqueue_as(&redis, &keys, "1:a").await, Some(2));
    let _: () = redis.conn().del(keys.lease()).await.expect("del");
    scripts::acquire_lease(&redis, &keys, "b", 10_000)
        .await
        .expect("acquire");
    assert_eq!(enqueue_as(&redis, &keys, "1:a").await, None, "stale epoch");
    assert_eq!(
        enqueue_as(&redis, &keys, "2:a").await,
        None,
        "right epoch, wrong copy"
    );
    assert_eq!(
        enqueue_as(&redis, &keys, "2:b").await,
        Some(3),
        "no gap after refusals"
    );
    let queue: Vec<String> = redis
        .conn()
        .lrange(keys.queue(), 0, -1)
        .await
        .expect("lrange");
    assert_eq!(queue.len(), 3);
    let seqs: Vec<u64> = queue
        .iter()
        .rev()
        .map(|item| {
            redis_ql::message::Message::decode(item.as_bytes())
                .expect("a message")
                .seq
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // The newest message is remembered for the next generator's first tick.
    let _: () = redis.conn().del(keys.lease()).await.expect("del");
    match scripts::acquire_lease(&redis, &keys, "c", 1000)
        .await
        .expect("acquire")
    {
        Acquired::Taken {
            epoch: 3,
            last: Some(l),
        } => assert_eq!(l, last()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_claim_needs_a_live_heartbeat() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    queue_three(&redis, &keys).await;
    assert_eq!(
        scripts::claim(&redis, &keys, "ghost", 5, 1_048_576)
            .await
            .expect("claim"),
        Err(Refused::NotRegistered)
    );
    let len: u64 = redis.conn().llen(keys.queue()).await.expect("llen");
    assert_eq!(len, 3, "a refused claim moves nothing");
    register(&redis, &keys, "c").await;
    match scripts::claim(&redis, &keys, "c", 2, 1_048_576)
        .await
        .expect("claim")
    {
        Ok(Claimed { items, left, .. }) => {
            assert_eq!(items.len(), 2);
            assert_eq!(left, 1);
            assert!(
                String::from_utf8_lossy(&items[0]).starts_with("{\"seq\":1,"),
                "oldest first"
            );
        }
        other => panic!("{other:?}"),
    }
    match scripts::claim(&redis, &keys, "c", 5, 1_048_576)
        .await
        .expect("claim")
    {
        Ok(Claimed { items, left, .. }) => assert_eq!((items.len(), left), (1, 0)),
        other => panic!("{other:?}"),
    }
    let held: u64 = redis.conn().llen(keys.processing("c")).await.expect("llen");
    assert_eq!(held, 3);
}

async fn counters(redis: &Redis, keys: &Keys) -> (Option<u64>, u64, Option<u64>, u64, u64) {
    let mut conn = redis.conn();
    (
        conn.get(keys.processed()).await.expect("get"),
        conn.llen(keys.errors()).await.expect("llen"),
        conn.get(keys.errors_total()).await.expect("get"),
        conn.llen(keys.queue()).await.expect("llen"),
        conn.llen(keys.dead()).await.expect("llen"),
    )
}

#[tokio::test]
async fn an_ack_commits_once_and_one_after_a_reclaim_is_refused_and_changes_nothing() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    queue_three(&redis, &keys).await;
    register(&redis, &keys, "c").await;
    let items = claim_as_c(&redis, &keys, 3).await;
    assert!(ack_one(&redis, &keys, &items[0], Outcome::Ok).await);
    assert!(
        !ack_one(&redis, &keys, &items[0], Outcome::Ok).await,
        "twice"
    );
    assert!(
        ack_one(
            &redis,
            &keys,
            &items[1],
            Outcome::Error("{\"seq\":2}".into())
        )
        .await
    );
    assert_eq!(counters(&redis, &keys).await, (Some(2), 1, Some(1), 0, 0));
    // The copy dies; the janitor gives its last message back.
    let _: () = redis.conn().del(keys.heartbeat("c")).await.expect("del");
    let reclaimed = scripts::reclaim(&redis, &keys, "c", 5, Reclaim::Dead)
        .await
        .expect("reclaim")
        .expect("dead");
    assert_eq!((reclaimed.requeued, reclaimed.dead_lettered), (1, 0));
    let before = counters(&redis, &keys).await;
    assert!(!ack_one(&redis, &keys, &items[2], Outcome::Error("{}".into())).await);
    assert_eq!(
        counters(&redis, &keys).await,
        before,
        "a refused ack changes nothing"
    );
    let requeued: String = redis.conn().rpop(keys.queue(), None).await.expect("rpop");
    let message = redis_ql::message::Message::decode(requeued.as_bytes()).expect("still a message");
    assert_eq!((message.seq, message.deliveries), (3, 1));
}

#[tokio::test]
async fn the_janitor_touches_only_dead_copies_and_dead_letters_past_max_deliveries() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    let mut conn = redis.conn();
    register(&redis, &keys, "alive").await;
    register(&redis, &keys, "dead").await;
    let item = |seq: u64, deliveries: u32| {
        format!(
            r#"{{"seq":{seq},"epoch":1,"producer":"p","text":"t","generated_at_ms":1,"deliveries":{deliveries}}}"#
        )
    };
    let _: () = conn
        .lpush(keys.processing("alive"), item(1, 0))
        .await
        .expect("push");
    let _: () = conn
        .lpush(keys.processing("dead"), item(2, 0))
        .await
        .expect("push");
    let _: () = conn
        .lpush(keys.processing("dead"), item(3, 4))
        .await
        .expect("push");
    let _: () = conn
        .lpush(keys.processing("dead"), "garbage")
        .await
        .expect("push");
    let _: () = conn.del(keys.heartbeat("dead")).await.expect("del");

    redis_ql::janitor::pass(&redis, &keys, 5, &Default::default()).await;

    let alive: Vec<String> = conn
        .lrange(keys.processing("alive"), 0, -1)
        .await
        .expect("lrange");
    assert_eq!(alive, vec![item(1, 0)], "a live copy's messages stay put");
    let dead_list: bool = conn.exists(keys.processing("dead")).await.expect("exists");
    assert!(!dead_list);
    let queue: Vec<String> = conn.lrange(keys.queue(), 0, -1).await.expect("lrange");
    assert_eq!(queue.len(), 1);
    let back = redis_ql::message::Message::decode(queue[0].as_bytes()).expect("message");
    assert_eq!((back.seq, back.deliveries), (2, 1));
    let dead: Vec<String> = conn.lrange(keys.dead(), 0, -1).await.expect("lrange");
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter().any(|d| d.contains("delivered 5 times")),
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .any(|d| d.contains("not a valid message") && d.contains("garbage")),
        "{dead:?}"
    );
    let registered: Vec<String> = conn.hkeys(keys.registry()).await.expect("hkeys");
    assert_eq!(registered, vec!["alive".to_string()]);
    // A second pass finds nothing to do.
    redis_ql::janitor::pass(&redis, &keys, 5, &Default::default()).await;
    let queue_len: u64 = conn.llen(keys.queue()).await.expect("llen");
    assert_eq!(queue_len, 1);
    assert_eq!(
        scripts::reclaim(&redis, &keys, "alive", 5, Reclaim::Dead)
            .await
            .expect("reclaim"),
        Err(Refused::Alive)
    );
}

#[tokio::test]
async fn an_expired_heartbeat_is_not_revived_and_the_janitor_turn_goes_to_one_copy() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    let first = scripts::heartbeat(
        &redis,
        &keys,
        "a",
        3000,
        "{}",
        1000,
        scripts::BeatKind::Register,
        true,
    )
    .await
    .expect("beat")
    .expect("registered");
    let second = scripts::heartbeat(
        &redis,
        &keys,
        "b",
        3000,
        "{}",
        1000,
        scripts::BeatKind::Register,
        true,
    )
    .await
    .expect("beat")
    .expect("registered");
    assert!(
        first.janitor_turn && !second.janitor_turn,
        "{first:?} {second:?}"
    );
    let _: () = redis.conn().del(keys.heartbeat("a")).await.expect("del");
    let beat = scripts::heartbeat(
        &redis,
        &keys,
        "a",
        3000,
        "{}",
        1000,
        scripts::BeatKind::Beat,
        true,
    )
    .await
    .expect("beat");
    assert_eq!(beat, Err(Refused::NotRegistered));
    let exists: bool = redis
        .conn()
        .exists(keys.heartbeat("a"))
        .await
        .expect("exists");
    assert!(!exists, "an expired copy must re-register under a new id");
}

#[tokio::test]
async fn a_drain_whose_run_died_goes_back_whole_and_in_order() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    let mut conn = redis.conn();
    for n in 1..=3 {
        let _: () = conn
            .lpush(keys.errors(), format!("e{n}"))
            .await
            .expect("push");
    }
    let batch = scripts::take_errors(&redis, &keys, "run", 2, 60_000)
        .await
        .expect("take");
    assert_eq!(batch, vec![b"e1".to_vec(), b"e2".to_vec()], "oldest first");
    assert_eq!(
        scripts::return_drain(&redis, &keys, "run")
            .await
            .expect("return"),
        Err(Refused::Alive),
        "alive"
    );
    let _: () = conn.del(keys.drain_lock("run")).await.expect("del");
    redis_ql::janitor::pass(&redis, &keys, 5, &Default::default()).await;
    let errors: Vec<String> = conn.lrange(keys.errors(), 0, -1).await.expect("lrange");
    assert_eq!(errors, vec!["e3", "e2", "e1"], "back where they were");
    let drains: Vec<String> = conn.smembers(keys.drains()).await.expect("smembers");
    assert!(drains.is_empty());
}

#[tokio::test]
async fn a_batch_enqueue_is_fenced_numbered_in_order_and_capped() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    scripts::acquire_lease(&redis, &keys, "g", 10_000)
        .await
        .expect("acquire");
    let bodies = vec![BODY.to_string(); 5];
    let batch = |holder: &'static str, cap: u64| {
        let (redis, keys, bodies) = (redis.clone(), keys.clone(), bodies.clone());
        async move {
            scripts::enqueue(
                &redis,
                &keys,
                holder,
                &bodies,
                &last(),
                cap,
                std::time::Duration::ZERO,
            )
            .await
            .expect("enqueue")
        }
    };
    assert_eq!(batch("1:g", 0).await, Ok(1));
    assert_eq!(batch("1:x", 0).await, Err(Refused::NotHolder));
    assert_eq!(batch("1:g", 8).await, Ok(6));
    assert_eq!(
        batch("1:g", 8).await,
        Err(Refused::QueueFull),
        "10 queued, cap 8"
    );
    let queue: Vec<String> = redis
        .conn()
        .lrange(keys.queue(), 0, -1)
        .await
        .expect("lrange");
    let seqs: Vec<u64> = queue
        .iter()
        .rev()
        .map(|item| {
            redis_ql::message::Message::decode(item.as_bytes())
                .expect("a message")
                .seq
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<u64>>(),
        "claimed in seq order, no gaps"
    );
}

#[tokio::test]
async fn a_batch_ack_answers_each_message_on_its_own() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    queue_three(&redis, &keys).await;
    register(&redis, &keys, "c").await;
    let items = claim_as_c(&redis, &keys, 2).await;
    let batch = vec![
        (items[0].clone(), Outcome::Ok),
        (b"never claimed".to_vec(), Outcome::Ok),
        (items[1].clone(), Outcome::Error("{\"seq\":2}".into())),
        (items[0].clone(), Outcome::Ok),
    ];
    let answers = scripts::ack(&redis, &keys, "c", &batch).await.expect("ack");
    assert_eq!(
        answers,
        vec![true, false, true, false],
        "the repeat is refused"
    );
    assert_eq!(counters(&redis, &keys).await, (Some(2), 1, Some(1), 1, 0));
}

/// Every key of the namespace and its value, as DUMP sees it.
async fn snapshot_all(redis: &Redis) -> Vec<(String, Option<Vec<u8>>)> {
    let mut conn = redis.conn();
    let mut keys: Vec<String> = conn.keys("{app}:*").await.expect("keys");
    keys.sort();
    let mut all = Vec::new();
    for key in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("dump");
        all.push((key, dump));
    }
    all
}

/// Case 5 of the edges: a key of the wrong type, written by another
/// program, makes every script that would write it refuse the whole call,
/// name the key, and change nothing at all (no seq burnt, nothing popped).
#[tokio::test]
async fn a_key_of_the_wrong_type_refuses_the_call_names_the_key_and_changes_nothing() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    queue_three(&redis, &keys).await;
    register(&redis, &keys, "c").await;
    let items = claim_as_c(&redis, &keys, 2).await;
    let _: () = redis
        .conn()
        .sadd(keys.drains(), "r")
        .await
        .expect("a drain");
    let _: () = redis
        .conn()
        .lpush(keys.draining("r"), "{}")
        .await
        .expect("a drain");
    let holder = scripts::holder_value(1, "g");

    for (key, calls) in [
        (keys.errors(), "ack error / take_errors / return_drain"),
        (keys.errors_total(), "ack error"),
        (keys.processed(), "ack"),
        (keys.dead(), "ack dead / claim / requeue_dead / purge_dead"),
        (keys.queue(), "enqueue / claim / reclaim / requeue_dead"),
        (keys.seq(), "enqueue"),
        (keys.processing("c"), "ack / claim"),
        (keys.drains(), "take_errors / return_drain"),
        (keys.epoch(), "acquire_lease"),
    ] {
        let saved: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut redis.conn())
            .await
            .expect("dump");
        let _: () = redis.conn().del(&key).await.expect("del");
        // A counter gets a word, anything else a hash.
        if key == keys.seq()
            || key == keys.epoch()
            || key == keys.processed()
            || key == keys.errors_total()
        {
            let _: () = redis.conn().set(&key, "not a number").await.expect("set");
        } else {
            let _: () = redis.conn().hset(&key, "f", "v").await.expect("hset");
        }
        // Each call either goes through, or refuses, names the key and
        // changes nothing at all.
        let mut named = Vec::new();
        macro_rules! call {
            ($call:expr) => {{
                let before = snapshot_all(&redis).await;
                if let Err(e) = $call.await {
                    assert_eq!(before, snapshot_all(&redis).await, "{e} changed something");
                    named.push(e.to_string());
                }
            }};
        }
        call!(scripts::ack(
            &redis,
            &keys,
            "c",
            &[(items[0].clone(), Outcome::Error(r#"{"seq":1}"#.into()))]
        ));
        call!(scripts::ack(
            &redis,
            &keys,
            "c",
            &[(items[1].clone(), Outcome::Dead("x".into()))]
        ));
        call!(scripts::enqueue(
            &redis,
            &keys,
            &holder,
            &[BODY.to_string()],
            &last(),
            0,
            Duration::ZERO
        ));
        call!(scripts::claim(&redis, &keys, "c", 1, 1_048_576));
        call!(scripts::take_errors(&redis, &keys, "r2", 5, 10_000));
        call!(scripts::return_drain(&redis, &keys, "r"));
        call!(scripts::reclaim(&redis, &keys, "ghost", 5, Reclaim::Dead));
        call!(scripts::requeue_dead(&redis, &keys, 0, 10, &[]));
        // 0: checks the key, and deletes nothing the audit below counts.
        call!(scripts::purge_dead(&redis, &keys, 0));
        let _: () = redis
            .conn()
            .del(keys.lease())
            .await
            .expect("free the lease");
        call!(scripts::acquire_lease(&redis, &keys, "h", 10_000));
        let _: () = redis
            .conn()
            .set(keys.lease(), &holder)
            .await
            .expect("lease back");
        assert!(
            named
                .iter()
                .any(|e| e.contains(&key) && e.contains("redis-ql keeps")),
            "{key} ({calls}) was not named: {named:?}"
        );
        // Put the key back as it was.
        let _: () = redis.conn().del(&key).await.expect("del");
        if let Some(saved) = saved {
            let _: () = redis::cmd("RESTORE")
                .arg(&key)
                .arg(0)
                .arg(saved)
                .query_async(&mut redis.conn())
                .await
                .expect("restore");
        }
    }
    // Fixed, the audit holds: every seq accepted is in exactly one place, none burnt.
    let mut conn = redis.conn();
    let seq: u64 = conn.get(keys.seq()).await.expect("seq");
    let mut found = Vec::new();
    for list in [
        keys.queue(),
        keys.processing("c"),
        keys.errors(),
        keys.dead(),
        keys.draining("r2"),
    ] {
        let items: Vec<Vec<u8>> = conn.lrange(&list, 0, -1).await.expect("lrange");
        for item in items {
            let text = String::from_utf8_lossy(&item).replace("\\\"", "\"");
            if let Some(at) = text.find("\"seq\":") {
                let digits: String = text[at + 6..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                found.push(digits.parse::<u64>().expect("a seq"));
            }
        }
    }
    found.sort_unstable();
    assert_eq!(
        found,
        (1..=seq).collect::<Vec<_>>(),
        "every accepted seq once, none burnt"
    );
}

/// Case 4 of the edges: a message that decodes but that Lua's cjson cannot
/// encode again (a number out of range), one redelivered by an older version
/// (its count at the end), and garbage: the janitor loses none of them.
#[tokio::test]
async fn reclaim_never_loses_what_cjson_cannot_encode() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    let mut conn = redis.conn();
    register(&redis, &keys, "gone").await;
    let huge = r#"{"seq":7,"epoch":1,"producer":"p","text":"t","generated_at_ms":1,"x":1e400}"#;
    let older =
        r#"{"seq":8,"epoch":1,"producer":"p","text":"t","generated_at_ms":1,"deliveries":2}"#;
    let mine =
        r#"{"deliveries":3,"seq":9,"epoch":1,"producer":"p","text":"t","generated_at_ms":1}"#;
    let nested = format!("{}1{}", "[".repeat(2000), "]".repeat(2000));
    for item in [huge, older, mine, nested.as_str()] {
        let _: () = conn
            .rpush(keys.processing("gone"), item)
            .await
            .expect("push");
    }
    let _: () = conn.del(keys.heartbeat("gone")).await.expect("del");
    let reclaimed = scripts::reclaim(&redis, &keys, "gone", 5, Reclaim::Dead)
        .await
        .expect("reclaim")
        .expect("dead");
    assert_eq!((reclaimed.requeued, reclaimed.dead_lettered), (3, 1));
    let queue: Vec<String> = conn.lrange(keys.queue(), 0, -1).await.expect("queue");
    assert!(
        queue.contains(&format!("{{\"deliveries\":1,{}", &huge[1..])),
        "{queue:?}"
    );
    let redelivered: Vec<(u64, u32)> = queue
        .iter()
        .filter_map(|i| redis_ql::message::Message::decode(i.as_bytes()).ok())
        .map(|m| (m.seq, m.deliveries))
        .collect();
    assert!(redelivered.contains(&(8, 3)), "{queue:?}");
    assert!(redelivered.contains(&(9, 4)), "{queue:?}");
    let dead: Vec<Vec<u8>> = conn.lrange(keys.dead(), 0, -1).await.expect("dead");
    let record = redis_ql::message::DeadRecord::decode(&dead[0]).expect("a record");
    assert_eq!(record.item, nested, "kept byte for byte");
}

/// Case 7 of the edges, inside Redis: while the newest message is younger
/// than the interval (less 10 ms) by Redis's own clock, an enqueue writes
/// nothing, whoever sends it and however late Redis runs it.
#[tokio::test]
async fn an_enqueue_sooner_than_the_interval_by_redis_clock_writes_nothing() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    scripts::acquire_lease(&redis, &keys, "g", 10_000)
        .await
        .expect("acquire");
    let holder = scripts::holder_value(1, "g");
    let interval = Duration::from_millis(300);
    let bodies = [BODY.to_string()];
    let last = last();
    let send = || scripts::enqueue(&redis, &keys, &holder, &bodies, &last, 0, interval);
    assert_eq!(send().await.expect("enqueue"), Ok(1));
    let sent = std::time::Instant::now();
    let before = snapshot_all(&redis).await;
    assert_eq!(send().await.expect("enqueue"), Err(Refused::TooSoon));
    assert_eq!(
        before,
        snapshot_all(&redis).await,
        "a refusal changes nothing"
    );
    // Once an interval less 10 ms has passed by Redis's clock, it goes through.
    let second = loop {
        match send().await.expect("enqueue") {
            Err(Refused::TooSoon) => tokio::time::sleep(Duration::from_millis(5)).await,
            other => break other,
        }
    };
    assert_eq!(second, Ok(2));
    assert!(
        sent.elapsed() >= Duration::from_millis(280),
        "{:?}",
        sent.elapsed()
    );
}

/// A settle whose answer was lost is sent again: it forgets nothing more
/// (a second RPOP would drop errors never printed).
#[tokio::test]
async fn a_settle_sent_twice_forgets_the_written_lines_once() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    let records: Vec<String> = (1..=5).map(|seq| format!(r#"{{"seq":{seq}}}"#)).collect();
    let _: () = redis
        .conn()
        .lpush(keys.errors(), &records)
        .await
        .expect("push");
    let batch = scripts::take_errors(&redis, &keys, "r", 5, 10_000)
        .await
        .expect("take");
    assert_eq!(batch.len(), 5);
    // Two written, three to keep; the same request twice.
    assert_eq!(
        scripts::settle_drain(&redis, &keys, "r", 3)
            .await
            .expect("settle"),
        5
    );
    assert_eq!(
        scripts::settle_drain(&redis, &keys, "r", 3)
            .await
            .expect("again"),
        3
    );
    let left: Vec<String> = redis
        .conn()
        .lrange(keys.draining("r"), 0, -1)
        .await
        .expect("lrange");
    assert_eq!(left, vec![r#"{"seq":5}"#, r#"{"seq":4}"#, r#"{"seq":3}"#]);
}

/// The janitor lists the registry, then reads the heartbeats, then reclaims:
/// a copy that leaves between the first two steps must not be reported as a
/// dead copy, since it gave back its messages itself.
#[tokio::test]
async fn a_copy_that_left_is_not_reclaimed_as_a_dead_one() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    register(&redis, &keys, "leaver").await;
    let left = scripts::reclaim(&redis, &keys, "leaver", 5, Reclaim::Leaving)
        .await
        .expect("leave");
    assert_eq!(
        left,
        Ok(scripts::Reclaimed {
            requeued: 0,
            dead_lettered: 0
        })
    );
    assert_eq!(
        scripts::reclaim(&redis, &keys, "leaver", 5, Reclaim::Dead)
            .await
            .expect("reclaim"),
        Err(Refused::NotRegistered)
    );
    // Gone from the registry but still holding something (written by hand
    // here): that is reclaimed, never left behind.
    let _: () = redis
        .conn()
        .rpush(keys.processing("leaver"), "garbage")
        .await
        .expect("push");
    let reclaimed = scripts::reclaim(&redis, &keys, "leaver", 5, Reclaim::Dead)
        .await
        .expect("reclaim");
    assert_eq!(
        reclaimed,
        Ok(scripts::Reclaimed {
            requeued: 0,
            dead_lettered: 1
        })
    );
}

/// Purge deletes the records it counted, the oldest, and keeps any that
/// arrived after the count; requeue looks past kept records by position.
#[tokio::test]
async fn purge_keeps_what_arrived_after_the_count_and_requeue_skips_what_it_keeps() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    let mut conn = redis.conn();
    let message = |seq: u64| {
        let item = format!(
            r#"{{"deliveries":4,"seq":{seq},"epoch":1,"producer":"p","text":"t","generated_at_ms":1}}"#
        );
        serde_json::json!({"reason": "r", "item": item, "bytes": item.len()}).to_string()
    };
    // Oldest on the right: garbage, 1, garbage, 2.
    for record in [
        r#"{"reason":"r","item":"x","bytes":1}"#.to_string(),
        message(1),
        r#"{"reason":"r","item":"{\"seq\":3","bytes":7,"truncated":true}"#.to_string(),
        message(2),
    ] {
        let _: () = conn.lpush(keys.dead(), record).await.expect("lpush");
    }
    let first = scripts::requeue_dead(&redis, &keys, 0, 2, &[])
        .await
        .expect("requeue");
    assert_eq!((first.requeued, first.kept, first.looked_at), (1, 1, 2));
    assert_eq!(first.seqs, vec![1]);
    let second = scripts::requeue_dead(&redis, &keys, first.kept, 2, &[])
        .await
        .expect("requeue");
    assert_eq!((second.requeued, second.kept, second.looked_at), (1, 1, 2));
    assert_eq!(second.seqs, vec![2]);
    let queue: Vec<String> = conn.lrange(keys.queue(), 0, -1).await.expect("lrange");
    assert_eq!(
        queue,
        vec![
            r#"{"seq":2,"epoch":1,"producer":"p","text":"t","generated_at_ms":1}"#.to_string(),
            r#"{"seq":1,"epoch":1,"producer":"p","text":"t","generated_at_ms":1}"#.to_string(),
        ],
        "oldest claimed first, delivery count gone"
    );
    // Two counted; a third arrives before the purge and is kept.
    let _: () = conn.lpush(keys.dead(), message(9)).await.expect("lpush");
    assert_eq!(
        scripts::purge_dead(&redis, &keys, 2).await.expect("purge"),
        2
    );
    let left: Vec<String> = conn.lrange(keys.dead(), 0, -1).await.expect("lrange");
    assert_eq!(left, vec![message(9)]);
}

#[tokio::test]
async fn a_batch_ack_removes_each_item_as_lrem_would_and_keeps_the_rest_in_order() {
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    register(&redis, &keys, "c").await;
    let processing = keys.processing("c");
    let mut conn = redis.conn();
    // Right end first: the oldest claims wait there. A duplicate (two
    // hostile items alike) loses its occurrence nearest the right end.
    let list: Vec<String> = ["x", "a", "x", "b", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let _: () = conn.rpush(&processing, &list).await.expect("RPUSH");
    let acked = ["x", "d", "b", "nowhere"];
    let batch: Vec<(Vec<u8>, Outcome)> = acked
        .iter()
        .map(|s| (s.as_bytes().to_vec(), Outcome::Ok))
        .collect();
    let answers = scripts::ack(&redis, &keys, "c", &batch).await.expect("ack");
    assert_eq!(answers, vec![true, true, true, false]);
    let left: Vec<String> = conn.lrange(&processing, 0, -1).await.expect("LRANGE");
    assert_eq!(left, vec!["x", "a", "c", "e"]);

    // An item far from the right end, past the part read at once, is found too.
    let _: () = conn.del(&processing).await.expect("DEL");
    let many: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let _: () = conn.rpush(&processing, &many).await.expect("RPUSH");
    let batch = vec![
        (b"m3".to_vec(), Outcome::Ok),
        (b"m199".to_vec(), Outcome::Ok),
        (b"m100".to_vec(), Outcome::Ok),
    ];
    let answers = scripts::ack(&redis, &keys, "c", &batch).await.expect("ack");
    assert_eq!(answers, vec![true, true, true]);
    let left: Vec<String> = conn.lrange(&processing, 0, -1).await.expect("LRANGE");
    let expected: Vec<String> = many
        .iter()
        .filter(|m| !["m3", "m199", "m100"].contains(&m.as_str()))
        .cloned()
        .collect();
    assert_eq!(left, expected);
    let processed: u64 = conn.get(keys.processed()).await.expect("GET");
    assert_eq!(processed, 6);
}

#[tokio::test]
async fn one_message_wakes_only_its_shard_when_a_copy_listens_there_else_every_copy() {
    use futures_util::StreamExt;
    let server = RedisServer::start();
    let (redis, keys) = connect(&server).await;
    scripts::acquire_lease(&redis, &keys, "g", 10_000)
        .await
        .expect("acquire");
    let mut pubsub = server.client().get_async_pubsub().await.expect("pubsub");
    // seq 1 falls in shard 1; seq 2 in shard 2, where nobody listens.
    pubsub
        .subscribe(keys.wake_shard_channel(1))
        .await
        .expect("SUBSCRIBE");
    pubsub
        .subscribe(keys.wake_channel())
        .await
        .expect("SUBSCRIBE");
    let mut heard = pubsub.on_message();
    macro_rules! next_channel {
        () => {
            tokio::time::timeout(Duration::from_secs(5), heard.next())
                .await
                .expect("a wake-up")
                .expect("a message")
                .get_channel_name()
                .to_string()
        };
    }
    assert_eq!(enqueue_as(&redis, &keys, "1:g").await, Some(1));
    assert_eq!(next_channel!(), keys.wake_shard_channel(1));
    let _: () = redis.conn().del(keys.queue()).await.expect("DEL");
    assert_eq!(enqueue_as(&redis, &keys, "1:g").await, Some(2));
    assert_eq!(next_channel!(), keys.wake_channel());
}

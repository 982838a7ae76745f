//! The cross-node race: a notification committed on a node whose Redis link is slow is overtaken, on the way to
//! a session on another node, by one committed later on that other node. Whatever overtakes whatever (a
//! broadcast a targeted notification, a targeted one a broadcast, a targeted one an earlier targeted one), the
//! client sees every frame live exactly once, each chain in id order, and a reconnect with its two cursors
//! replays exactly what it missed.
//!
//! Two in-process nodes on a fresh PostgreSQL database and the shared test Redis (skipped without them, like
//! `cluster.rs`); node A reaches Redis through a TCP proxy that adds 300 ms each way (`support::slow_link`), so
//! what A publishes reaches node B 300 ms late, while what B commits reaches B's sessions at once.

use std::net::ToSocketAddrs;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cluster::{fresh_database, node, notify, ready, unique};
use crate::support::*;

/// Latency added each way on node A's Redis link: far more than a local commit-to-socket, far less than a test.
const SLOW_LINK: Duration = Duration::from_millis(300);
/// The second notification is posted this long after the first one's 202, as in the reproduction.
const THEN: Duration = Duration::from_millis(50);
/// Longer than the slow link: a late copy of a frame would show up within it.
const QUIET: Duration = Duration::from_millis(800);

/// Node A (behind the slow link) and node B, both ready; `None` when the suite runs without PostgreSQL/Redis.
async fn two_nodes_a_on_a_slow_link(test: &str) -> Option<(Gateway, Gateway)> {
    let (pg, redis) = fresh_database(test).await?;
    let host = redis.trim_start_matches("redis://").split('/').next().unwrap();
    let upstream = host.to_socket_addrs().unwrap().next().unwrap();
    let proxy = slow_link(upstream, SLOW_LINK).await;
    let a = node(&pg, &format!("redis://{proxy}"), "slow-a").await;
    let b = node(&pg, &redis, "fast-b").await;
    ready(&a).await;
    ready(&b).await;
    Some((a, b))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chain {
    Targeted,
    Broadcast,
}

/// Commit one notification of `chain` on `gw` (a targeted one for `user`, or a broadcast); its id.
async fn commit(gw: &Gateway, chain: Chain, user: &str, title: &str) -> i64 {
    match chain {
        Chain::Targeted => notify(gw, user, title).await,
        Chain::Broadcast => {
            let body = json!({"user_id": "system", "title": title, "message": "m"});
            let resp = gw.post_event("sgad.notifications", "", &body).await;
            assert_eq!(resp.status(), 202);
            resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
        }
    }
}

fn id_of(frame: &Value) -> i64 {
    frame["notification"]["id"].as_i64().unwrap()
}

fn chain_of(frame: &Value) -> Chain {
    if frame["notification"]["user_id"].is_null() {
        Chain::Broadcast
    } else {
        Chain::Targeted
    }
}

/// A client's position: the last id it took from each chain (what it sends as `since` / `since_broadcast`).
#[derive(Debug, Clone, Copy, Default)]
struct Cursors {
    targeted: i64,
    broadcast: i64,
}

impl Cursors {
    /// What a client following the contract does with a notification frame: take it when its id is above its
    /// chain's cursor (and move that cursor), drop it otherwise.
    fn take(&mut self, frame: &Value) -> bool {
        let id = id_of(frame);
        let cursor = match chain_of(frame) {
            Chain::Targeted => &mut self.targeted,
            Chain::Broadcast => &mut self.broadcast,
        };
        if id <= *cursor {
            return false;
        }
        *cursor = id;
        true
    }

    fn query(&self) -> String {
        format!("&since={}&since_broadcast={}", self.targeted, self.broadcast)
    }
}

/// Open a session resuming from `cursors`: the notifications replayed before `replayed`, and that frame.
async fn resume(gw: &Gateway, user: &str, cursors: Cursors) -> (Client, Vec<Value>, Value) {
    let mut client = gw.connect_with(user, &cursors.query()).await;
    let mut replayed = Vec::new();
    loop {
        let f = client.frame().await;
        match f["type"].as_str().unwrap() {
            "notification" => replayed.push(f),
            "replayed" => return (client, replayed, f),
            other => panic!("unexpected `{other}` frame during a replay: {f}"),
        }
    }
}

/// Live notification frames until `want` ids all arrived or 3 s passed (far beyond the slow link), then a quiet
/// spell in which nothing else may arrive: a late second copy would be caught here.
async fn live(client: &mut Client, want: &[i64]) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !want.iter().all(|w| got.iter().any(|f| id_of(f) == *w)) {
        match tokio::time::timeout_at(deadline, client.frame()).await {
            Ok(f) if f["type"] == "notification" => got.push(f),
            Ok(_) => {}
            Err(_) => {
                let arrived: Vec<i64> = got.iter().map(id_of).collect();
                panic!("expected {want:?} live; only {arrived:?} arrived");
            }
        }
    }
    client.silent_for(QUIET).await;
    got
}

/// Each of `want` arrived exactly once, and within each chain in id order.
fn assert_once_and_in_chain_order(frames: &[Value], want: &[i64]) {
    let ids: Vec<i64> = frames.iter().map(id_of).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    let mut expected = want.to_vec();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "every frame once (arrived: {ids:?})");
    for chain in [Chain::Targeted, Chain::Broadcast] {
        let in_chain: Vec<i64> = frames.iter().filter(|f| chain_of(f) == chain).map(id_of).collect();
        assert!(in_chain.windows(2).all(|w| w[0] < w[1]), "{chain:?} chain out of id order: {in_chain:?}");
    }
}

/// `first` is committed on the slow node A, `second` on node B 50 ms after `first`'s 202, for a user whose
/// session is on B: `second` reaches the session first. Both must arrive live once, in chain order; then a
/// reconnect with the client's cursors replays nothing, and one after a deliberate absence replays exactly what
/// was committed meanwhile.
async fn overtaken(test: &str, first: Chain, second: Chain) {
    let Some((a, b)) = two_nodes_a_on_a_slow_link(test).await else { return };
    let user = unique("race-");
    let (mut client, replayed, _) = resume(&b, &user, Cursors::default()).await;
    assert!(replayed.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await; // node B's subscription to the user's channel

    let slow = commit(&a, first, &user, "slow").await;
    tokio::time::sleep(THEN).await;
    let fast = commit(&b, second, &user, "fast").await;
    assert!(fast > slow, "the overtaking notification has the larger id ({fast} vs {slow})");
    let frames = live(&mut client, &[slow, fast]).await;
    assert_once_and_in_chain_order(&frames, &[slow, fast]);
    let mut cursors = Cursors::default();
    for f in &frames {
        assert!(cursors.take(f), "a client following the contract takes every frame it was sent: {f}");
    }
    client.ws.close(None).await.unwrap();

    // Nothing was missed: the reconnect replays nothing and confirms the position.
    let (mut again, replayed, done) = resume(&b, &user, cursors).await;
    assert!(replayed.is_empty(), "nothing missed, yet replayed: {replayed:?}");
    assert_eq!(
        (done["up_to_targeted"].as_i64(), done["up_to_broadcast"].as_i64()),
        (Some(cursors.targeted), Some(cursors.broadcast))
    );
    again.ws.close(None).await.unwrap();

    // Away on purpose while one notification of each chain commits on each node: the reconnect (to the other
    // node) replays exactly those, in id order, and nothing follows live.
    let mut missed = vec![
        commit(&a, Chain::Targeted, &user, "missed-t-a").await,
        commit(&b, Chain::Broadcast, &user, "missed-x-b").await,
        commit(&b, Chain::Targeted, &user, "missed-t-b").await,
        commit(&a, Chain::Broadcast, &user, "missed-x-a").await,
    ];
    missed.sort_unstable();
    let (mut back, replayed, done) = resume(&a, &user, cursors).await;
    assert_eq!(replayed.iter().map(id_of).collect::<Vec<_>>(), missed, "the replay is exactly what was missed");
    for f in &replayed {
        assert!(cursors.take(f));
    }
    assert_eq!(
        (done["up_to_targeted"].as_i64(), done["up_to_broadcast"].as_i64()),
        (Some(cursors.targeted), Some(cursors.broadcast))
    );
    back.silent_for(QUIET).await;
}

#[tokio::test]
async fn a_broadcast_that_overtakes_a_targeted_notification_across_nodes_does_not_hide_it() {
    overtaken("race_bt", Chain::Targeted, Chain::Broadcast).await;
}

#[tokio::test]
async fn a_targeted_notification_that_overtakes_a_broadcast_across_nodes_does_not_hide_it() {
    overtaken("race_tb", Chain::Broadcast, Chain::Targeted).await;
}

#[tokio::test]
async fn a_targeted_notification_that_overtakes_an_earlier_one_across_nodes_arrives_after_it() {
    overtaken("race_tt", Chain::Targeted, Chain::Targeted).await;
}

/// The badge across nodes: a read committed on node A (slow link) and a notification committed after it on node
/// B reach B's session in the other order; the session keeps the newer counts. Before counts carried their
/// version, A's older counts arrived last and stayed: the badge was off by one until the user's next change (30
/// of 30 rounds with 30 ms on the link).
#[tokio::test]
async fn counts_overtaken_on_the_way_from_a_slow_node_do_not_replace_newer_ones() {
    let Some((a, b)) = two_nodes_a_on_a_slow_link("counts_race").await else { return };
    let user = unique("cr-");
    let first = notify(&b, &user, "to read").await;
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // B's subscription to the user's channel
    let token = a.token(&user);
    let r = a.post(&format!("/api/v1/users/{user}/notifications/{first}/read"), &token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(THEN).await;
    notify(&b, &user, "after the read").await;
    // Every counts frame that arrives within the slow link's delay and well after it: the last is the newest.
    let deadline = Instant::now() + SLOW_LINK * 2 + QUIET;
    let mut last = None;
    while let Ok(f) = tokio::time::timeout_at(deadline, on_b.raw_frame()).await {
        if f["type"] == "counts" {
            last = Some((f["unread"].as_u64().unwrap(), f["unseen"].as_u64().unwrap()));
        }
    }
    let truth = b.get(&format!("/api/v1/users/{user}/notifications/counts"), &b.token(&user)).send().await.unwrap();
    let truth: Value = truth.json().await.unwrap();
    assert_eq!(last, Some((truth["unread"].as_u64().unwrap(), truth["unseen"].as_u64().unwrap())), "{truth}");
    assert_eq!(last, Some((1, 1)), "one unread: the one after the read");
}

/// A read committed on slow node A and, 50 ms later, an unread of the same notification committed on B reach B's
/// session in the other order: `unread` (B's, at once), then `read` (A's, late). Applied as they came, the client
/// shows it read while the inbox has it unread; so the late frame is followed by `resync` with reason
/// `out_of_order`, on which the client refetches. Before state frames carried their commit's version, nothing
/// followed and the list stayed wrong until the next reconnect.
#[tokio::test]
async fn a_state_change_overtaken_on_the_way_from_a_slow_node_is_followed_by_an_out_of_order_resync() {
    let Some((a, b)) = two_nodes_a_on_a_slow_link("state_race").await else { return };
    let user = unique("sr-");
    let id = notify(&b, &user, "read then unread").await;
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // B's subscription to the user's channel
    let path = |change: &str| format!("/api/v1/users/{user}/notifications/{id}/{change}");
    let r = a.post(&path("read"), &a.token(&user)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(THEN).await;
    let r = b.post(&path("unread"), &b.token(&user)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + SLOW_LINK * 2 + QUIET;
    let mut seen = Vec::new();
    while let Ok(f) = tokio::time::timeout_at(deadline, on_b.raw_frame()).await {
        match f["type"].as_str().unwrap() {
            "read" | "unread" => seen.push(f["type"].as_str().unwrap().to_owned()),
            "resync" => seen.push(format!("resync {}", f["reason"].as_str().unwrap())),
            _ => {}
        }
    }
    assert_eq!(seen, ["unread", "read", "resync out_of_order"], "the late read, then the resync");
    // What the client refetches: the inbox's last state.
    let page = b.get(&format!("/api/v1/users/{user}/notifications"), &b.token(&user)).send().await.unwrap();
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["items"][0]["read_at"], Value::Null, "{page}");
}

/// Every frame B's session gets within the slow link's delay and well after it: the notification frames of `id`
/// (with their `read_at`) and the state frames, in order.
async fn frames_about(on_b: &mut Client, id: i64) -> Vec<String> {
    let deadline = Instant::now() + SLOW_LINK * 2 + QUIET;
    let mut seen = Vec::new();
    while let Ok(f) = tokio::time::timeout_at(deadline, on_b.raw_frame()).await {
        match f["type"].as_str().unwrap() {
            "notification" if id_of(&f) == id => {
                let state = if f["notification"]["read_at"].is_null() { "unread" } else { "read" };
                seen.push(format!("notification {state}"));
            }
            "read" | "unread" | "read_all" => seen.push(f["type"].as_str().unwrap().to_owned()),
            "resync" => seen.push(format!("resync {}", f["reason"].as_str().unwrap())),
            _ => {}
        }
    }
    seen
}

/// A notification committed on slow node A is read on B before A's copy reaches B's session (the user saw it on
/// A, or in a list B served). B's session gets `read` at once and the notification 300 ms later; sent as it was
/// committed, it would show the client a read notification as unread. It is sent from the inbox instead, read.
#[tokio::test]
async fn a_notification_overtaken_by_a_read_of_it_arrives_read() {
    let Some((a, b)) = two_nodes_a_on_a_slow_link("late_notification").await else { return };
    let user = unique("ln-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // B's subscription to the user's channel
    let id = notify(&a, &user, "read before it arrives").await;
    let r = b.post(&format!("/api/v1/users/{user}/notifications/{id}/read"), &b.token(&user)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(frames_about(&mut on_b, id).await, ["read", "notification read"], "once, and read");
}

/// "Mark all read" clicked on B while a notification of `chain` committed on A is on its way: the `read_all`
/// covers it (a targeted one by its version, a broadcast, which has none, by its id), so it arrives read.
async fn overtaken_by_a_read_all(test: &str, chain: Chain) {
    let Some((a, b)) = two_nodes_a_on_a_slow_link(test).await else { return };
    let user = unique("lr-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = commit(&a, chain, &user, "covered by read all").await;
    let r = b.post(&format!("/api/v1/users/{user}/notifications/read_all"), &b.token(&user)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let up_to = r.json::<Value>().await.unwrap()["up_to"].as_i64().unwrap();
    assert!(up_to >= id, "the read_all covers the notification ({up_to} < {id})");
    assert_eq!(frames_about(&mut on_b, id).await, ["read_all", "notification read"], "once, and read");
}

#[tokio::test]
async fn a_notification_overtaken_by_a_read_all_over_it_arrives_read() {
    overtaken_by_a_read_all("late_under_read_all", Chain::Targeted).await;
}

#[tokio::test]
async fn a_broadcast_overtaken_by_a_read_all_over_it_arrives_read() {
    overtaken_by_a_read_all("late_broadcast", Chain::Broadcast).await;
}

/// A resume's replay ends with `replayed` and then the counts, read again and sent even when unchanged. When the
/// node's first subscription to the user's channel lands while that counts read is out (its Redis link is slow:
/// the `SUBSCRIBE` takes 600 ms, the replay a few), the catch-up replay it starts takes the read's place: the
/// counts it owes still follow. Before, the catch-up's own read sent counts only when they had changed, and the
/// client got `replayed` with no counts after it.
#[tokio::test]
async fn the_counts_owed_after_replayed_still_come_when_a_catch_up_replay_takes_the_reads_place() {
    use herald::inbox::instrumented::{Instrumented, Read};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some((pg, redis)) = fresh_database("counts_owed").await else { return };
    let host = redis.trim_start_matches("redis://").split('/').next().unwrap();
    let proxy = slow_link(host.to_socket_addrs().unwrap().next().unwrap(), SLOW_LINK).await;
    let user = unique("owed-");
    // The user's second counts read (the first is the opening's) waits at the gate.
    let (reads, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(tokio::sync::Semaphore::new(0)));
    let hook = {
        let (reads, gate, user) = (reads.clone(), gate.clone(), user.clone());
        Arc::new(move |read: Read, who: &str| -> futures_util::future::BoxFuture<'static, ()> {
            let held = matches!(read, Read::Latest) && who == user && reads.fetch_add(1, Ordering::SeqCst) == 1;
            let gate = gate.clone();
            Box::pin(async move {
                if held {
                    gate.acquire().await.unwrap().forget();
                }
            })
        })
    };
    let hooks = herald::Hooks { wrap_store: Some(Box::new(move |store| Arc::new(Instrumented::new(store, hook)))) };
    let prefix = pg.rsplit('/').next().unwrap().to_owned();
    let gw = spawn_gateway_hooked(
        |s| {
            s.cluster.channel_prefix = prefix.clone();
            s.store.url = pg.clone();
            s.cluster.redis_url = herald::config::Secret::new(format!("redis://{proxy}"));
            s.cluster.node_id = "owed".into();
        },
        hooks,
    )
    .await;
    ready(&gw).await;
    let first = notify(&gw, &user, "one").await;
    notify(&gw, &user, "two").await;

    let mut c = gw.connect_with(&user, &format!("&since={first}")).await;
    assert_eq!(c.raw_frame().await, json!({"type": "counts", "unread": 2, "unseen": 2}), "after ready");
    assert_eq!(c.raw_frame().await["type"], "notification");
    assert_eq!(c.raw_frame().await["type"], "replayed");
    // The subscription lands while the counts read waits: Redis has it (the node's earlier commands went first
    // over the slow link), then its answer reaches the node and the catch-up starts.
    let mut redis = redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{prefix}:u:{user}");
    eventually("the node's subscription to the user's channel", WAIT, async || {
        let subs: Vec<(String, i64)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut redis).await.unwrap();
        (subs[0].1 == 1).then_some(())
    })
    .await;
    tokio::time::sleep(SLOW_LINK + QUIET).await;
    gate.add_permits(1);
    assert_eq!(c.raw_frame().await, json!({"type": "counts", "unread": 2, "unseen": 2}), "right after replayed");
    assert!(reads.load(Ordering::SeqCst) >= 2, "the read was held");
}

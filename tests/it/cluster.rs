//! Several nodes: a shared PostgreSQL inbox and Redis pub/sub between nodes, all real.
//!
//! Needs HERALD_TEST_POSTGRES_URL and HERALD_TEST_REDIS_URL (scripts/test.sh starts both); each test gets its
//! own database, and unique user ids keep tests apart on the shared Redis.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald::config::Secret;
use serde_json::{json, Value};

use crate::support::*;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A fresh database on the test PostgreSQL server and a Redis URL, or None (with a note) when the suite runs
/// without them. Each test's nodes use their own Redis channel prefix (see `node`).
pub(crate) async fn fresh_database(test: &str) -> Option<(String, String)> {
    let (Some(pg), Some(redis)) = (env("HERALD_TEST_POSTGRES_URL"), env("HERALD_TEST_REDIS_URL")) else {
        eprintln!("{test}: skipped — HERALD_TEST_POSTGRES_URL and HERALD_TEST_REDIS_URL are not set (scripts/test.sh sets them)");
        return None;
    };
    use sqlx::Connection;
    let name = format!("herald_{}", unique("").replace('-', "_"));
    let mut admin = sqlx::PgConnection::connect(&pg).await.expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    let (base, _) = pg.rsplit_once('/').unwrap();
    Some((format!("{base}/{name}"), redis))
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{:x}", rand::random::<u64>())
}

pub(crate) async fn node(pg: &str, redis: &str, id: &str) -> Gateway {
    node_with(pg, redis, id, |_| {}).await
}

/// [`node`], with more settings.
pub(crate) async fn node_with(
    pg: &str,
    redis: &str,
    id: &str,
    more: impl FnOnce(&mut herald::config::Settings) + Send + 'static,
) -> Gateway {
    let (pg, redis, id) = (pg.to_owned(), redis.to_owned(), id.to_owned());
    // One channel prefix per database: tests sharing the Redis server never hear each other's broadcasts.
    let prefix = pg.rsplit('/').next().unwrap().to_owned();
    spawn_gateway_with(move |s| {
        s.cluster.channel_prefix = prefix;
        s.store.url = pg;
        s.cluster.redis_url = Secret::new(redis);
        s.cluster.node_id = id;
        s.cluster.presence_interval_secs = 1;
        more(s);
    })
    .await
}

/// Wait until a node's Redis link is up (readyz), so cross-node messages are not racing the first connect.
pub(crate) async fn ready(gw: &Gateway) {
    for _ in 0..100 {
        let r = gw.raw().get(gw.url("/readyz")).send().await.unwrap();
        if r.status() == 200 && r.json::<Value>().await.unwrap()["checks"]["redis"]["ok"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node never became ready");
}

/// Two nodes on one inbox and one Redis, named `ids`, both ready ([`ready`]).
pub(crate) async fn two_ready_nodes(pg: &str, redis: &str, ids: [&str; 2]) -> (Gateway, Gateway) {
    let a = node(pg, redis, ids[0]).await;
    let b = node(pg, redis, ids[1]).await;
    ready(&a).await;
    ready(&b).await;
    (a, b)
}

/// The node's `redis` readiness check: `{ok, detail}`.
pub(crate) async fn redis_check(gw: &Gateway) -> Value {
    let r = gw.raw().get(gw.url("/readyz")).send().await.unwrap();
    r.json::<Value>().await.unwrap()["checks"]["redis"].clone()
}

/// Wait until the node reports its Redis link down because the server's certificate was refused.
pub(crate) async fn redis_refuses_the_certificate(gw: &Gateway) {
    eventually("the Redis certificate refused on /readyz", Duration::from_secs(15), async || {
        let check = redis_check(gw).await;
        (check["ok"] == false && check["detail"].as_str()?.to_lowercase().contains("certificate")).then_some(())
    })
    .await;
}

pub(crate) async fn notify(gw: &Gateway, user: &str, title: &str) -> i64 {
    let body = json!({"user_id": user, "title": title, "message": "m", "type": "info"});
    let resp = gw.post_event("sgad.notifications", "", &body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
}

#[tokio::test]
async fn a_user_on_node_b_receives_what_node_a_ingested_and_read_state_crosses_nodes() {
    let Some((pg, redis)) = fresh_database("cross_node").await else { return };
    let (a, b) = two_ready_nodes(&pg, &redis, ["node-a", "node-b"]).await;
    let user = unique("u-");
    let mut on_a = a.connect(&user).await;
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // B's subscription to the user's channel

    let id = notify(&a, &user, "from a").await;
    assert_eq!(on_b.notification().await["notification"]["id"], id, "node B's session got node A's event");
    assert_eq!(on_a.notification().await["notification"]["id"], id);
    on_b.silent_for(Duration::from_millis(300)).await;

    // Read on node B: node A's tab hears about it.
    let t = b.token(&user);
    let r = b.post(&format!("/api/v1/users/{user}/notifications/{id}/read"), &t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let f = on_a.frame().await;
    assert_eq!((f["type"].as_str(), f["ids"][0].as_i64()), (Some("read"), Some(id)));

    // Stored once, visible from both nodes.
    assert_eq!(a.inbox(&user).await["items"].as_array().unwrap().len(), 1);
    assert_eq!(b.unread(&user).await, 0);
}

/// A node told to stop still finishes the requests in flight, and what they commit reaches the user's sessions
/// on the other nodes: the Redis link publishes until the node's last commit, not only until the signal (a
/// rolling update lost every such notification for the other nodes' tabs until the user's next one).
#[tokio::test]
async fn what_a_stopping_node_commits_while_it_drains_reaches_the_other_nodes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((pg, redis)) = fresh_database("drain_publish").await else { return };
    let (a, b) = two_ready_nodes(&pg, &redis, ["node-a", "node-b"]).await;
    let user = unique("u-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // B's subscription to the user's channel

    // A request in flight on node A when it is told to stop: its body is half sent.
    let body = json!({"user_id": user, "title": "during the drain", "message": "m", "type": "info"}).to_string();
    let head = format!(
        "POST /api/v1/events?exchange=sgad.notifications HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {SERVICE_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.addr,
        body.len()
    );
    let mut request = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    request.write_all(head.as_bytes()).await.unwrap();
    request.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(a.stop());
    tokio::time::sleep(Duration::from_millis(500)).await; // the signal's effects, the old link's end among them
    request.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = String::new();
    request.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    let f = on_b.notification().await;
    assert_eq!(f["notification"]["title"], "during the drain", "node B's session got what node A committed");
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_broadcast_reaches_every_user_on_every_node_once() {
    let Some((pg, redis)) = fresh_database("broadcast").await else { return };
    let (a, b) = two_ready_nodes(&pg, &redis, ["node-a", "node-b"]).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(a.connect(&unique(&format!("a{i}-"))).await);
        clients.push(b.connect(&unique(&format!("b{i}-"))).await);
    }
    let resp =
        b.post_event("sgad.notifications", "", &json!({"user_id": "system", "title": "all", "message": "m"})).await;
    let id = resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap();
    for c in &mut clients {
        assert_eq!(c.notification().await["notification"]["id"], id);
        c.silent_for(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn presence_counts_users_and_sessions_across_the_cluster() {
    let Some((pg, redis)) = fresh_database("presence").await else { return };
    let a = node(&pg, &redis, &unique("pa-")).await;
    let b = node(&pg, &redis, &unique("pb-")).await;
    ready(&a).await;
    ready(&b).await;
    let user = unique("p-");
    let _s1 = a.connect(&user).await;
    let _s2 = b.connect(&user).await;
    let _s3 = b.connect(&user).await;
    let (na, nb) = (a.settings.cluster.node_id.clone(), b.settings.cluster.node_id.clone());
    let mut seen = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = a.get("/api/v1/admin/presence", SERVICE_KEY).send().await.unwrap().json().await.unwrap();
        let nodes = seen["nodes"].as_array().unwrap();
        let of = |n: &str| nodes.iter().find(|x| x["node"] == n).map(|x| x["sessions"].as_u64().unwrap());
        if of(&na) == Some(1) && of(&nb) == Some(2) {
            return;
        }
    }
    panic!("presence never showed 1 session on A and 2 on B: {seen}");
}

/// `herald serve` as a real process with this config; returns it and its base URL.
fn spawn_process(dir: &std::path::Path, name: &str, pg: &str, redis: &str) -> (Child, String) {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\ndemo_dir = \"\"\n[store]\nurl = \"{pg}\"\n[rules]\npath = \"{}\"\n\
             [cluster]\nredis_url = \"{redis}\"\nnode_id = \"{name}\"\nchannel_prefix = \"{}\"\n",
            repo_path("config/rules.toml").display(),
            pg.rsplit('/').next().unwrap()
        ),
    )
    .unwrap();
    spawn_herald_process(&config)
}

async fn connect_to(base: &str, gw: &Gateway, user: &str, since: i64) -> Client {
    let host = base.trim_start_matches("http://");
    let url = format!("ws://{host}/ws/{user}?token={}&since={since}", gw.token(user));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("handshake");
    let mut c = Client { ws };
    assert_eq!(c.frame().await["type"], "ready");
    c
}

#[tokio::test]
async fn when_a_node_is_killed_its_clients_resume_on_another_with_every_notification_once() {
    let Some((pg, redis)) = fresh_database("node_loss").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut node_a, url_a) = spawn_process(dir.path(), "proc-a", &pg, &redis);
    let (mut node_b, url_b) = spawn_process(dir.path(), "proc-b", &pg, &redis);
    // A local gateway object only to mint tokens with the same (default) secret.
    let minter = spawn_gateway().await;
    let user = unique("k-");
    let http = reqwest::Client::new();
    let mut client = connect_to(&url_a, &minter, &user, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let total = 300;
    let poster = {
        let (http, url_b, user) = (http.clone(), url_b.clone(), user.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..total {
                let body = json!({"user_id": user, "title": format!("n{i}"), "message": "m", "type": "info"});
                let r = http
                    .post(format!("{url_b}/api/v1/events?exchange=sgad.notifications"))
                    .bearer_auth(SERVICE_KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                ids.push(r.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap());
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            ids
        })
    };

    let mut got: Vec<i64> = Vec::new();
    let mut killed = false;
    while got.len() < total {
        if !killed && got.len() >= total / 3 {
            node_a.kill().unwrap(); // SIGKILL
            node_a.wait().unwrap();
            killed = true;
        }
        use futures_util::StreamExt;
        match tokio::time::timeout(WAIT, client.ws.next()).await.expect("stalled") {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let f: Value = serde_json::from_str(t.as_str()).unwrap();
                if f["type"] == "notification" {
                    let id = f["notification"]["id"].as_i64().unwrap();
                    assert!(got.last().is_none_or(|l| id > *l), "in order, once");
                    got.push(id);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                assert!(killed, "the connection only drops when node A dies");
                // What the SDK does: reconnect elsewhere, resuming after the last id it processed.
                let since = got.last().copied().unwrap_or(0);
                client = connect_to(&url_b, &minter, &user, since).await;
            }
        }
    }
    let mut posted = poster.await.unwrap();
    posted.sort_unstable();
    assert_eq!(got, posted, "every notification exactly once, in order");
    node_b.kill().unwrap();
    node_b.wait().unwrap();
}

#[tokio::test]
async fn restarting_redis_mid_stream_loses_nothing_after_resume() {
    let Some((pg, _)) = fresh_database("redis_restart").await else { return };
    // This test owns its Redis so it can restart it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let start_redis = || {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    let mut redis = start_redis();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let (a, b) = two_ready_nodes(&pg, &redis_url, ["rr-a", "rr-b"]).await;
    let user = unique("rr-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut posted = Vec::new();
    for i in 0..20 {
        posted.push(notify(&a, &user, &format!("before-{i}")).await);
    }
    redis.kill().unwrap();
    redis.wait().unwrap();
    // Redis is down: node A still commits (the inbox is the truth); node B cannot hear about these live.
    for i in 0..20 {
        posted.push(notify(&a, &user, &format!("during-{i}")).await);
    }
    // Reported, not hidden (B is not a single node now), and B stays ready: it serves its sessions and the
    // inbox; a load balancer routing around every node for a Redis outage would take all of that down.
    let readiness = eventually("B's /readyz to report Redis down", WAIT, async || {
        let r = b.raw().get(b.url("/readyz")).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        (body["checks"]["redis"]["ok"] == false).then_some((status, body))
    })
    .await;
    assert_eq!(readiness.0, 200, "{}", readiness.1);
    assert_eq!(readiness.1["degraded"], json!(["redis"]), "{}", readiness.1);
    redis = start_redis();
    ready(&a).await;
    ready(&b).await;
    for i in 0..20 {
        posted.push(notify(&a, &user, &format!("after-{i}")).await);
    }

    let mut got = Vec::new();
    let mut saw_resync = false;
    while got.len() < posted.len() {
        let f = on_b.frame().await;
        match f["type"].as_str().unwrap() {
            "notification" => {
                let id = f["notification"]["id"].as_i64().unwrap();
                assert!(got.last().is_none_or(|l| id > *l), "in order, once");
                got.push(id);
            }
            "resync" => saw_resync = true,
            _ => {}
        }
    }
    assert!(saw_resync, "the session was told it resynced after the Redis outage");
    assert_eq!(got, posted);
    redis.kill().unwrap();
    redis.wait().unwrap();
}

/// A node's session reads the inbox only once its user's channel from the other nodes is live, so a read made
/// on another node right after `ready` reaches it. Before, with node B's Redis 300 ms away, B's first session for
/// the user read the inbox and said `ready` while its SUBSCRIBE was still on the way: the `read` node A published
/// meanwhile was lost (the subscription's catch-up replays notifications, not read state), and the tab showed the
/// notification unread until it refetched.
#[tokio::test]
async fn a_read_made_on_another_node_right_after_a_first_session_opens_reaches_it() {
    let Some((pg, redis)) = fresh_database("first_subscription").await else { return };
    let upstream = redis_addr(&redis);
    let slow = slow_link(upstream, Duration::from_millis(300)).await;
    let a = node(&pg, &redis, "first-a").await;
    let b = node(&pg, &format!("redis://{slow}"), "first-b").await;
    ready(&a).await;
    ready(&b).await;
    let user = unique("first-");
    let id = notify(&a, &user, "before B's session").await;

    let mut on_b = b.connect(&user).await;
    let read = a.post(&format!("/api/v1/users/{user}/notifications/{id}/read"), &a.token(&user)).send().await;
    assert_eq!(read.unwrap().status(), 200);
    let f = on_b.frame().await;
    assert_eq!((f["type"].as_str(), f["ids"][0].as_i64()), (Some("read"), Some(id)), "{f}");
    // And a second session of the user on B, opened now, is live at once.
    let mut again = b.connect(&user).await;
    let next = notify(&a, &user, "after").await;
    assert_eq!(again.notification().await["notification"]["id"], next);
}

/// A first session whose channel takes longer than the wait (2 s) to subscribe opens anyway; what another node
/// publishes before the subscription reaches Redis (a read) goes nowhere, so the subscription is followed by an
/// announced resync (`transport_lost`: the client refetches). Before, its catch-up was silent: the session got
/// the new counts but no `read` and no `resync`, and the list kept the notification unread.
#[tokio::test]
async fn a_session_that_outwaited_its_subscription_is_told_to_refetch_once_it_is_live() {
    let Some((pg, redis)) = fresh_database("outwaited").await else { return };
    let upstream = redis_addr(&redis);
    // What node B sends reaches Redis 2.5 s late (under the 3 s a reply may take): its SUBSCRIBE lands after the
    // session opened and after A's read was published.
    let late = lopsided_link(upstream, Duration::from_millis(2500), Duration::ZERO).await;
    let a = node(&pg, &redis, "outwait-a").await;
    let b = node(&pg, &format!("redis://{late}"), "outwait-b").await;
    ready(&a).await;
    ready(&b).await;
    let user = unique("outwait-");
    let id = notify(&a, &user, "before B's session").await;

    let mut on_b = b.connect(&user).await;
    let read = a.post(&format!("/api/v1/users/{user}/notifications/{id}/read"), &a.token(&user)).send().await;
    assert_eq!(read.unwrap().status(), 200);
    let told = eventually("a read or a resync on B", Duration::from_secs(15), async || {
        let f = on_b.frame().await;
        matches!(f["type"].as_str(), Some("read" | "resync")).then_some(f)
    })
    .await;
    assert!(told["type"] == "read" || told["reason"] == "transport_lost", "{told}");
}

/// Users who leave together are unsubscribed in a few commands, not one round trip each: 200 users closing their
/// sessions at once cost 200 `UNSUBSCRIBE`s, one after another, during which the node subscribed nobody new and
/// published nothing (a load balancer's restart dropping 20,000 sessions held the node's publishes for seconds).
#[tokio::test]
async fn users_leaving_together_are_unsubscribed_in_a_few_commands() {
    const USERS: usize = 200;
    let Some((pg, _)) = fresh_database("leaving_together").await else { return };
    // A Redis of its own: its command counts are this test's alone.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    struct Stopped(Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _redis = Stopped(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let redis_cli = |args: &[&str]| {
        let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually("redis to answer", WAIT, async || redis_cli(&["PING"]).contains("PONG").then_some(())).await;
    let slow = slow_link(upstream, Duration::from_millis(10)).await;
    let b = node(&pg, &format!("redis://{slow}"), "leaving-b").await;
    ready(&b).await;
    let users: Vec<String> = (0..USERS).map(|i| unique(&format!("leaving-{i}-"))).collect();
    let sessions = futures_util::future::join_all(users.iter().map(|u| b.connect(u))).await;
    let user_channels = || {
        let out = redis_cli(&["PUBSUB", "CHANNELS", "*"]);
        users.iter().filter(|u| out.lines().any(|line| line.ends_with(u.as_str()))).count()
    };
    eventually("every user's channel subscribed", WAIT, async || (user_channels() == USERS).then_some(())).await;

    drop(sessions);
    eventually("every user's channel unsubscribed", WAIT, async || (user_channels() == 0).then_some(())).await;
    let stats = redis_cli(&["INFO", "commandstats"]);
    let calls = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_unsubscribe:calls="))
        .and_then(|rest| rest.split(',').next()?.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(calls < USERS / 4, "{calls} UNSUBSCRIBE commands for {USERS} users leaving together");
}

/// While a first session waits for its user's channel, the frames committed for the user are taken and dropped,
/// not held: a burst larger than the session's queue cannot close it before `ready` (it used to, with 4008 under
/// `queue_full_policy = "close"`), and the replay it asked for carries the burst once, in order, after `ready`.
#[tokio::test]
async fn a_burst_while_a_session_waits_for_its_channel_does_not_close_it_and_its_replay_carries_it_once() {
    let Some((pg, redis)) = fresh_database("burst_while_waiting").await else { return };
    let upstream = redis_addr(&redis);
    let slow = slow_link(upstream, Duration::from_millis(400)).await;
    let b = node_with(&pg, &format!("redis://{slow}"), "burst-b", |s| {
        s.websocket.outbound_queue = 4;
        s.websocket.queue_full_policy = herald::config::QueueFullPolicy::Close;
    })
    .await;
    ready(&b).await;
    let user = unique("burst-");
    // The handshake only: the session registers and waits for its channel (a SUBSCRIBE 800 ms away) while the
    // burst commits on this same node.
    let url = format!("ws://{}/ws/{user}?token={}&since=0", b.addr, b.token(&user));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("handshake");
    let mut on_b = Client { ws };
    let mut posted = Vec::new();
    for i in 0..8 {
        posted.push(notify(&b, &user, &format!("burst {i}")).await);
    }
    let opened = on_b.frame().await;
    assert_eq!(opened["type"], "ready", "{opened}");
    assert_eq!(opened["latest_id"].as_i64(), posted.last().copied(), "the session read the inbox after the burst");
    let mut got = Vec::new();
    loop {
        let f = on_b.frame().await;
        match f["type"].as_str().unwrap() {
            "notification" => got.push(f["notification"]["id"].as_i64().unwrap()),
            "replayed" => break,
            other => panic!("unexpected {other}: {f}"),
        }
    }
    assert_eq!(got, posted, "the burst once, in order, from the replay");
    // Live from here on, and nothing of the burst comes again.
    let next = notify(&b, &user, "after").await;
    assert_eq!(on_b.notification().await["notification"]["id"], next);
}

/// A node that starts with Redis out of its reach still serves its sessions (degraded). What the other nodes
/// publish for those users meanwhile reaches them once its first connection is up: they resync from the inbox
/// (`resync`, `transport_lost`: the read state they missed is refetched). Before, the first connection subscribed
/// them silently, a notification committed in between waited for a later one to reveal the gap, and a read
/// never arrived.
#[tokio::test]
async fn sessions_opened_before_a_nodes_first_redis_connection_catch_up_when_it_connects() {
    let Some((pg, redis)) = fresh_database("redis_late").await else { return };
    let upstream = redis_addr(&redis);
    let (gate, open) = gated_link(upstream).await;
    let a = node(&pg, &redis, "late-a").await;
    let b = node(&pg, &format!("redis://{gate}"), "late-b").await;
    ready(&a).await;
    let r: Value = b.raw().get(b.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["checks"]["redis"]["ok"], false, "B has no Redis yet: {r}");
    let user = unique("late-");
    let mut on_b = b.connect(&user).await;
    let id = notify(&a, &user, "while B had no Redis").await;
    let read = a.post(&format!("/api/v1/users/{user}/notifications/{id}/read"), &a.token(&user)).send().await;
    assert_eq!(read.unwrap().status(), 200);

    open.store(true, std::sync::atomic::Ordering::SeqCst);
    ready(&b).await;
    let mut kinds = Vec::new();
    let got = loop {
        let f = on_b.frame().await;
        kinds.push(f["type"].as_str().unwrap().to_owned());
        if f["type"] == "notification" {
            break f;
        }
    };
    assert_eq!(kinds, ["resync", "notification"], "announced, then the notification from the inbox");
    assert_eq!(got["notification"]["id"], id);
    assert!(got["notification"]["read_at"].is_string(), "as the inbox has it now, read: {got}");
    // Live from here on.
    let next = notify(&a, &user, "after B connected").await;
    assert_eq!(on_b.notification().await["notification"]["id"], next);
}

#[tokio::test]
async fn interleaved_commits_on_two_nodes_reach_a_user_in_order_per_chain_with_nothing_skipped() {
    let Some((pg, redis)) = fresh_database("interleave").await else { return };
    let (a, b) = two_ready_nodes(&pg, &redis, ["il-a", "il-b"]).await;
    let user = unique("il-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Broadcasts committed on A travel over Redis; the user's own notifications are committed on B and
    // delivered locally, so they can overtake A's. The session must still deliver every id once, each chain in
    // id order (across chains there is no order: PROTOCOL.md, "Positions and gaps").
    let broadcasts = {
        let a_url = a.url("/api/v1/events?exchange=sgad.notifications");
        let http = a.raw().clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..100 {
                let body = json!({"user_id": "system", "title": format!("b{i}"), "message": "m"});
                let r = http.post(&a_url).bearer_auth(SERVICE_KEY).json(&body).send().await.unwrap();
                ids.push(r.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap());
            }
            ids
        })
    };
    let mut mine = Vec::new();
    for i in 0..100 {
        mine.push(notify(&b, &user, &format!("t{i}")).await);
    }
    let broadcasts = broadcasts.await.unwrap();
    let (mut got_mine, mut got_broadcasts) = (Vec::new(), Vec::new());
    while got_mine.len() + got_broadcasts.len() < mine.len() + broadcasts.len() {
        let f = on_b.notification().await;
        let id = f["notification"]["id"].as_i64().unwrap();
        let chain = if f["notification"]["user_id"].is_null() { &mut got_broadcasts } else { &mut got_mine };
        assert!(chain.last().is_none_or(|l| id > *l), "in order per chain, once: {id} after {:?}", chain.last());
        chain.push(id);
    }
    assert_eq!(got_mine, mine);
    assert_eq!(got_broadcasts, broadcasts);
}

/// Nodes configured so that they cannot work together are told apart and said so. Two nodes given the same
/// `cluster.node_id` took each other's messages for their own and dropped them (0 of 5 live); now each signs with
/// its process, hears the other, and both report `redis` degraded naming the shared id. A node on the other
/// pub/sub mode hears nobody: it and its peers say so.
#[tokio::test]
async fn nodes_sharing_a_node_id_still_hear_each_other_and_nodes_that_cannot_are_reported_degraded() {
    let Some((pg, redis)) = fresh_database("same_node_id").await else { return };
    let (a, b) = two_ready_nodes(&pg, &redis, ["twin", "twin"]).await;
    let user = unique("u-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // B's subscription to the user's channel
    let id = notify(&a, &user, "from the other twin").await;
    assert_eq!(on_b.notification().await["notification"]["id"], id, "a node with the same name is another node");
    let degraded = |gw: &Gateway| {
        let (url, http) = (gw.url("/readyz"), gw.raw().clone());
        async move {
            let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            (body["degraded"] == json!(["redis"]))
                .then(|| body["checks"]["redis"]["detail"].as_str().unwrap().to_owned())
        }
    };
    for gw in [&a, &b] {
        let detail =
            eventually("the shared node id reported", Duration::from_secs(15), async || degraded(gw).await).await;
        assert!(detail.contains("node `twin`") && detail.contains("cluster.node_id"), "{detail}");
    }

    let Some((pg, redis)) = fresh_database("pubsub_mismatch").await else { return };
    let classic = node(&pg, &redis, "classic").await;
    let sharded = node_with(&pg, &redis, "sharded", |s| s.cluster.pubsub = herald::config::PubSubMode::Sharded).await;
    for gw in [&classic, &sharded] {
        let detail =
            eventually("the other pub/sub mode reported", Duration::from_secs(15), async || degraded(gw).await).await;
        assert!(detail.contains("cluster.pubsub") && detail.contains("neither hears the other"), "{detail}");
    }
}

/// A resync replays over what retention pruned while the session missed it: `truncated` says so, as on a resume
/// (ids were skipped silently: the replay's first `prev_id` above the client's cursor, no frame saying why).
#[tokio::test]
async fn a_resync_over_pruned_history_is_announced_truncated() {
    let Some((pg, _)) = fresh_database("resync_pruned").await else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start_redis = || {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    let mut redis = start_redis();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let pruned = |s: &mut herald::config::Settings| {
        s.store.max_per_user = 5;
        s.store.prune_interval_secs = 1;
    };
    let a = node_with(&pg, &redis_url, "tr-a", pruned).await;
    let b = node_with(&pg, &redis_url, "tr-b", pruned).await;
    ready(&a).await;
    ready(&b).await;
    let user = unique("tr-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = notify(&a, &user, "seen").await;
    assert_eq!(on_b.notification().await["notification"]["id"], first);

    redis.kill().unwrap();
    redis.wait().unwrap();
    let mut missed = Vec::new();
    for i in 0..12 {
        missed.push(notify(&a, &user, &format!("missed-{i}")).await);
    }
    // Retention keeps the newest 5: the first 7 missed are gone.
    eventually("retention to prune", WAIT, async || {
        (a.inbox(&user).await["items"].as_array()?.len() == 5).then_some(())
    })
    .await;
    redis = start_redis();

    let truncated = eventually("the resync's truncated frame", Duration::from_secs(30), async || {
        let f = on_b.frame().await;
        (f["type"] == "truncated").then_some(f)
    })
    .await;
    assert_eq!(
        (truncated["since"].as_i64(), truncated["oldest_id"].as_i64()),
        (Some(first), Some(missed[7])),
        "{truncated}"
    );
    for id in &missed[7..] {
        assert_eq!(on_b.notification().await["notification"]["id"], *id);
    }
    redis.kill().unwrap();
    redis.wait().unwrap();
}

/// Pruning on PostgreSQL commits outside the writer: the users whose counts it changed still hear them (a tab's
/// badge kept the pruned notifications until the user's next change).
#[tokio::test]
async fn pruning_on_postgresql_sends_the_new_counts_to_the_users_sessions() {
    let Some((pg, redis)) = fresh_database("prune_counts").await else { return };
    let a = node_with(&pg, &redis, "pc-a", |s| {
        s.store.max_per_user = 2;
        s.store.prune_interval_secs = 1;
    })
    .await;
    ready(&a).await;
    let user = unique("pc-");
    let mut tab = a.connect(&user).await;
    for i in 0..5 {
        notify(&a, &user, &format!("n{i}")).await;
    }
    eventually("retention to prune", WAIT, async || {
        (a.inbox(&user).await["items"].as_array()?.len() == 2).then_some(())
    })
    .await;
    assert_eq!(tab.last_counts_when_quiet().await, Some((2, 2)), "the badge follows pruning");
}

/// The admin reload reaches every node: node B, asked over Redis, reloads its file too (it kept routing with the
/// old rules: half a shared queue routed one way and half the other).
#[tokio::test]
async fn a_rules_reload_through_one_node_reloads_every_node() {
    let Some((pg, redis)) = fresh_database("rules_reload").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    let shipped = std::fs::read_to_string(repo_path("config/rules.toml")).unwrap();
    std::fs::write(&path, &shipped).unwrap();
    let (pa, pb) = (path.clone(), path.clone());
    let a = node_with(&pg, &redis, "rr-a", move |s| s.rules.path = pa).await;
    let b = node_with(&pg, &redis, "rr-b", move |s| s.rules.path = pb).await;
    ready(&a).await;
    ready(&b).await;
    let changed = shipped.replace("title = \"{{ title }}\"", "title = \"NEW {{ title }}\"");
    assert_ne!(changed, shipped, "the sgad-notification rule's title is the one changed");
    std::fs::write(&path, changed).unwrap();

    let r = a.post("/api/v1/admin/rules/reload", SERVICE_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let digest = r.json::<Value>().await.unwrap()["digest"].as_str().unwrap().to_owned();
    assert_eq!(digest.len(), 12, "{digest}");
    // (Both nodes run in this process and share its metrics: what B routes is what tells.)
    let user = unique("rr-");
    let mut attempt = 0;
    eventually("node B to route with the new rules", WAIT, async || {
        attempt += 1;
        notify(&b, &user, &format!("routed by B {attempt}")).await;
        (b.inbox(&user).await["items"][0]["title"] == format!("NEW routed by B {attempt}")).then_some(())
    })
    .await;
}

/// The test Redis's TLS URL and the CA that signed its certificate (services.sh's `start_redis`), or None (with
/// a note) without them.
fn rediss() -> Option<(String, String)> {
    let found = env("HERALD_TEST_REDISS_URL").zip(env("HERALD_TEST_TLS_CA"));
    if found.is_none() {
        eprintln!("skipped: HERALD_TEST_REDISS_URL / HERALD_TEST_TLS_CA are not set (start_redis sets them)");
    }
    found
}

/// A Redis reached over TLS (`rediss://`) whose certificate a private CA signed (services.sh's `start_redis`:
/// `HERALD_TEST_REDISS_URL`, `HERALD_TEST_TLS_CA`): with that CA as `cluster.redis_ca_file` two nodes carry a
/// notification between them; without it the certificate is refused and `/readyz` says so. (The redis crate was
/// built without TLS: a `rediss://` URL passed the config check and never connected.)
#[tokio::test]
async fn two_nodes_linked_through_a_redis_behind_tls_signed_by_a_private_ca_deliver_across() {
    let Some((rediss, ca)) = rediss() else { return };
    let Some((pg, _)) = fresh_database("rediss").await else { return };
    let with_ca = {
        let ca = ca.clone();
        move |s: &mut herald::config::Settings| s.cluster.redis_ca_file = ca
    };
    let a = node_with(&pg, &rediss, "node-a", with_ca.clone()).await;
    let b = node_with(&pg, &rediss, "node-b", with_ca).await;
    ready(&a).await;
    ready(&b).await;
    let user = unique("u-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // B's subscription to the user's channel
    let id = notify(&a, &user, "over tls").await;
    assert_eq!(on_b.notification().await["notification"]["id"], id, "node B's session got node A's event");

    // The system's trust store does not know the private CA.
    let untrusted = node(&pg, &rediss, "node-c").await;
    redis_refuses_the_certificate(&untrusted).await;
}

/// `cluster.redis_ca_file` is read again before each reconnect: a node started with a CA that did not sign the
/// Redis server's certificate (a CA being rotated) reports the certificate refused, and once the file holds the
/// right CA it connects without a restart and carries notifications (as `amqp.ca_file` does for the broker).
#[tokio::test]
async fn a_renewed_redis_ca_file_is_taken_at_the_next_reconnect_without_a_restart() {
    let Some((rediss, ca)) = rediss() else { return };
    let Some((pg, _)) = fresh_database("rediss_ca_renewed").await else { return };
    // A CA of its own, valid but not the signer of the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=another-ca", "-keyout"])
        .arg(dir.path().join("ca.key"))
        .arg("-out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let path = file.to_str().unwrap().to_owned();
    let renewed = node_with(&pg, &rediss, "node-renewed", move |s| s.cluster.redis_ca_file = path).await;
    redis_refuses_the_certificate(&renewed).await;

    std::fs::copy(&ca, &file).unwrap();
    eventually("connected with the renewed CA", Duration::from_secs(30), async || {
        (redis_check(&renewed).await["ok"] == true).then_some(())
    })
    .await;
    let other = node_with(&pg, &rediss, "node-other", move |s| s.cluster.redis_ca_file = ca).await;
    ready(&other).await;
    let user = unique("u-");
    let mut session = renewed.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the renewed node's subscription to the user's channel
    let id = notify(&other, &user, "after the renewal").await;
    assert_eq!(session.notification().await["notification"]["id"], id, "the renewed node's session got it");
}

/// A Redis that asks every client for a certificate its CA signed (`tls-auth-clients yes`; services.sh's
/// `HERALD_TEST_REDISS_MTLS_URL`): a node without `cluster.redis_cert_file` is refused and says so on `/readyz`;
/// a node whose certificate file holds one the server's CA did not sign is refused too, and once the files hold
/// a signed certificate and its key it connects without a restart (both are read again before each reconnect)
/// and carries a notification to and from a node that had the right certificate from the start.
#[tokio::test]
async fn a_redis_that_requires_client_certificates_takes_the_configured_one_and_a_renewed_one_without_a_restart() {
    let Some((mtls, TestTls { ca, cert, key })) = test_tls("redis mtls", "HERALD_TEST_REDISS_MTLS_URL") else { return };
    let Some((pg, _)) = fresh_database("rediss_mtls").await else { return };

    // No client certificate: the server ends the handshake.
    let ca_only = ca.clone();
    let anonymous = node_with(&pg, &mtls, "mtls-anonymous", move |s| s.cluster.redis_ca_file = ca_only).await;

    // A certificate of its own making (self-signed, so no CA the server trusts signed it), then renewed.
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = self_signed_client(dir.path());
    let files = (ca.clone(), cert_file.clone(), key_file.clone());
    let renewed = node_with(&pg, &mtls, "mtls-renewed", move |s| {
        (s.cluster.redis_ca_file, s.cluster.redis_cert_file, s.cluster.redis_key_file) = files;
    })
    .await;

    let own_key = std::fs::read_to_string(&key_file).unwrap();
    for refused in [&anonymous, &renewed] {
        let detail = eventually("the handshake refused on /readyz", Duration::from_secs(15), async || {
            let check = redis_check(refused).await;
            (check["ok"] == false && check["detail"].as_str()?.contains("reconnecting"))
                .then(|| check["detail"].as_str().unwrap().to_owned())
        })
        .await;
        eprintln!("refused: {detail}");
        assert!(detail.contains("alert"), "the server's TLS alert, not another failure: {detail}");
        assert!(own_key.lines().all(|line| !detail.contains(line)), "no key material in /readyz: {detail}");
    }

    std::fs::copy(&key, &key_file).unwrap();
    std::fs::copy(&cert, &cert_file).unwrap();
    eventually("connected with the renewed client certificate", Duration::from_secs(30), async || {
        (redis_check(&renewed).await["ok"] == true).then_some(())
    })
    .await;
    let signed = node_with(&pg, &mtls, "mtls-signed", move |s| {
        (s.cluster.redis_ca_file, s.cluster.redis_cert_file, s.cluster.redis_key_file) = (ca, cert, key);
    })
    .await;
    ready(&signed).await;
    let (to_renewed, to_signed) = (unique("u-"), unique("u-"));
    let mut on_renewed = renewed.connect(&to_renewed).await;
    let mut on_signed = signed.connect(&to_signed).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the subscriptions to the users' channels
    let id = notify(&signed, &to_renewed, "over mutual tls").await;
    assert_eq!(on_renewed.notification().await["notification"]["id"], id, "the renewed node's session got it");
    let id = notify(&renewed, &to_signed, "and back").await;
    assert_eq!(on_signed.notification().await["notification"]["id"], id, "the signed node's session got it");
    assert_eq!(redis_check(&anonymous).await["ok"], false, "still refused without a certificate");
}

/// Two nodes whose inbox is reached through PgBouncer in session mode (services.sh's `start_pgbouncer`), the
/// pooler most PostgreSQL deployments put in front, at its defaults: Herald sends no startup option the pooler
/// refuses (sqlx's `extra_float_digits` was), a
/// notification ingested on one node reaches a session on the other and both inboxes, a session opened later
/// replays it, and a commit held behind another transaction's lock for longer than the writer's 5 s check is
/// stored rather than given up: through the pooler the writer still finds its own server process busy (in
/// transaction mode it could not; README, "PostgreSQL behind a pooler").
#[tokio::test]
async fn two_nodes_behind_pgbouncer_in_session_mode_deliver_store_replay_and_outwait_a_lock() {
    let Some((direct, redis)) = fresh_database("pgbouncer").await else { return };
    let Some(pooled) = through_pgbouncer(&direct, "SESSION") else { return };
    let (a, b) = two_ready_nodes(&pooled, &redis, ["pooled-a", "pooled-b"]).await;
    let user = unique("u-");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // B's subscription to the user's channel
    let first = notify(&a, &user, "through the pooler").await;
    assert_eq!(on_b.notification().await["notification"]["id"], first, "B's session got A's event");
    for gw in [&a, &b] {
        assert_eq!(gw.inbox(&user).await["items"][0]["id"], first, "the inbox through the pooler");
    }

    // Another client holds the table for longer than the writer's check (5 s), directly on the server.
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(&direct).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE notifications IN EXCLUSIVE MODE").execute(&mut holder).await.unwrap();
    let waiting = {
        let body = json!({"user_id": user, "title": "after the lock", "message": "m", "type": "info"});
        let url = a.url("/api/v1/events?exchange=sgad.notifications&routing_key=");
        let client = a.raw().clone();
        tokio::spawn(async move { client.post(url).bearer_auth(SERVICE_KEY).json(&body).send().await.unwrap() })
    };
    // Once the commit waits on the lock, longer than the writer's check (5 s) takes to look at it.
    let mut watcher = sqlx::PgConnection::connect(&direct).await.unwrap();
    let waits = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'herald' AND wait_event_type = 'Lock'";
    eventually("the commit waiting on the lock", WAIT, async || {
        (sqlx::query_scalar::<_, i64>(waits).fetch_one(&mut watcher).await.unwrap() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!waiting.is_finished(), "the commit waits behind the lock");
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status(), 202, "stored once the lock went: {}", answer.text().await.unwrap());
    let second = on_b.notification().await;
    assert_eq!(second["notification"]["title"], "after the lock", "{second}");

    // A session opened later replays both from the inbox, through the pooler.
    let mut late = b.connect_with(&user, "&since=0").await;
    let replayed = [late.notification().await, late.notification().await];
    assert_eq!(
        replayed.map(|f| f["notification"]["id"].as_i64()),
        [Some(first), second["notification"]["id"].as_i64()]
    );
}

/// A PgBouncer handing server connections out per transaction (`pool_mode = transaction`) mixes its clients'
/// prepared statements and session settings, which Herald keeps on its connections: a node started behind one
/// exits at once saying so and what to use instead, rather than after a bare "pool timed out" (as it did).
#[tokio::test]
async fn a_node_behind_pgbouncer_in_transaction_mode_refuses_to_start_saying_why() {
    let Some((direct, _)) = fresh_database("pgbouncer transaction").await else { return };
    let Some(pooled) = through_pgbouncer(&direct, "TRANSACTION") else { return };
    let stderr = refused_at_start(&pooled).await;
    assert!(stderr.contains("per transaction") && stderr.contains("pool_mode = session"), "{stderr}");
}

/// `direct` (a database's URL on the test server) through the PgBouncer of `mode` (`SESSION`, `TRANSACTION`;
/// services.sh's `start_pgbouncer`), or None with a note when that pooler is not running.
fn through_pgbouncer(direct: &str, mode: &str) -> Option<String> {
    let Some(port) = env(&format!("HERALD_TEST_PGBOUNCER_{mode}_PORT")) else {
        eprintln!("skipped: HERALD_TEST_PGBOUNCER_{mode}_PORT is not set (start_pgbouncer sets it)");
        return None;
    };
    let (head, db) = direct.rsplit_once('/').unwrap();
    let (host, _) = head.rsplit_once(':').unwrap();
    Some(format!("{host}:{port}/{db}"))
}

/// `herald serve` with `store_url` as its inbox: it must exit with an error; what it printed on stderr.
async fn refused_at_start(store_url: &str) -> String {
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .env("HERALD__STORE__URL", store_url)
        .env("HERALD__SERVER__BIND", "127.0.0.1:0")
        .env("HERALD__SERVER__OPS_BIND", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(Killed)
        .unwrap();
    let status = eventually("the node to exit", Duration::from_secs(60), async || node.0.try_wait().unwrap()).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut node.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

/// An inbox on a PostgreSQL reached over TLS, its certificate verified against a private CA (`sslmode=verify-full`,
/// `sslrootcert`), logging in with a client certificate (`sslcert`, `sslkey`; the server's `cert` authentication,
/// services.sh's role `guest`): the node stores and serves what it is sent. Without the client certificate, or
/// without TLS, the server refuses the login and the node does not start, saying why.
#[tokio::test]
async fn an_inbox_over_tls_logging_in_by_client_certificate_stores_and_one_without_it_is_refused() {
    let Some((_, TestTls { ca, cert, key })) = test_tls("postgres tls", "HERALD_TEST_POSTGRES_TLS") else { return };
    let Some(admin_url) = env("HERALD_TEST_POSTGRES_URL") else { return };
    use sqlx::Connection;
    let name = format!("herald_{}", unique("").replace('-', "_"));
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let create = format!("CREATE DATABASE {name} OWNER guest");
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut admin).await.unwrap();
    let (head, _) = admin_url.rsplit_once('/').unwrap();
    let host_port = head.rsplit_once('@').unwrap().1;
    let base = format!("postgres://guest@{host_port}/{name}");
    let url = format!("{base}?sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}");

    let gw = spawn_gateway_with({
        let url = url.clone();
        move |s| s.store.url = url
    })
    .await;
    let user = unique("u-");
    let id = notify(&gw, &user, "over tls").await;
    assert_eq!(gw.inbox(&user).await["items"][0]["id"], id, "stored and read back over TLS");
    gw.stop().await.unwrap();

    let without_certificate = refused_at_start(&format!("{base}?sslmode=verify-full&sslrootcert={ca}")).await;
    assert!(without_certificate.contains("certificate"), "{without_certificate}");
    let without_tls = refused_at_start(&format!("{base}?sslmode=disable")).await;
    assert!(without_tls.contains("pg_hba.conf rejects connection"), "{without_tls}");
}

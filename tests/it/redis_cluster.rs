//! Several nodes over a real three-shard Redis Cluster: sharded pub/sub (`cluster.redis_mode = "cluster"`,
//! `pubsub = "sharded"`), live delivery through every shard, and a shard killed and restarted mid-stream.
//!
//! Needs HERALD_TEST_POSTGRES_URL, HERALD_TEST_REDIS_CLUSTER_URLS and HERALD_TEST_REDIS_CLUSTER_DIR (scripts/test.sh:
//! `start_postgres`, `start_redis_cluster`), and for the TLS test HERALD_TEST_REDISS_CLUSTER_URLS
//! (`start_redis_cluster --tls`, a cluster of its own). The tests share the plain cluster and one of them restarts a
//! shard, so each holds the cluster's lock file while it runs (nextest runs tests as parallel processes).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::config::{PubSubMode, RedisMode, Secret};
use serde_json::{json, Value};

use crate::cluster::{notify, ready, redis_check, redis_refuses_the_certificate, unique};
use crate::support::*;

struct RedisCluster {
    urls: String,
    dir: PathBuf,
    _lock: std::fs::File,
}

impl RedisCluster {
    /// The cluster started by scripts/test.sh, locked for this test; None (with a note) without one.
    fn get(test: &str) -> Option<RedisCluster> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(urls), Some(dir)) = (var("HERALD_TEST_REDIS_CLUSTER_URLS"), var("HERALD_TEST_REDIS_CLUSTER_DIR"))
        else {
            eprintln!(
                "{test}: skipped — HERALD_TEST_REDIS_CLUSTER_URLS and HERALD_TEST_REDIS_CLUSTER_DIR are not set \
                 (scripts/test.sh sets them with start_redis_cluster)"
            );
            return None;
        };
        let dir = PathBuf::from(dir);
        let lock = std::fs::File::create(dir.join("test.lock")).unwrap();
        lock.lock().unwrap();
        Some(RedisCluster { urls, dir, _lock: lock })
    }

    fn ports(&self) -> Vec<u16> {
        self.urls.split(',').map(|u| u.rsplit(':').next().unwrap().parse().unwrap()).collect()
    }

    async fn con(port: u16) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// The port of the shard owning `channel`'s slot (CLUSTER KEYSLOT + CLUSTER SLOTS).
    async fn owner(&self, channel: &str) -> u16 {
        owner_through(&mut Self::con(self.ports()[0]).await, channel).await
    }

    /// Users whose channels (`{prefix}:u:{user}`) hash to each shard: shard port → user.
    async fn a_user_on_every_shard(&self, prefix: &str) -> BTreeMap<u16, String> {
        a_user_on_every_shard(&mut Self::con(self.ports()[0]).await, prefix, self.ports().len()).await
    }

    /// Move one (keyless) slot to another shard the way `redis-cli --cluster reshard` does: IMPORTING on the
    /// target, MIGRATING on the source, then the new owner announced to every shard.
    async fn move_slot(&self, slot: i64, from: u16, to: u16) {
        let id = |port: u16| async move {
            let mut con = Self::con(port).await;
            redis::cmd("CLUSTER").arg("MYID").query_async::<String>(&mut con).await.unwrap()
        };
        let (from_id, to_id) = (id(from).await, id(to).await);
        let setslot = |port: u16, args: Vec<String>| async move {
            let mut con = Self::con(port).await;
            redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(args).exec_async(&mut con).await.unwrap();
        };
        setslot(to, vec!["IMPORTING".into(), from_id.clone()]).await;
        setslot(from, vec!["MIGRATING".into(), to_id.clone()]).await;
        for port in [to, from].into_iter().chain(self.ports().into_iter().filter(|p| ![to, from].contains(p))) {
            setslot(port, vec!["NODE".into(), to_id.clone()]).await;
        }
    }

    async fn slot(&self, channel: &str) -> i64 {
        let mut con = Self::con(self.ports()[0]).await;
        redis::cmd("CLUSTER").arg("KEYSLOT").arg(channel).query_async(&mut con).await.unwrap()
    }

    fn kill(&self, port: u16) {
        let pid = std::fs::read_to_string(self.dir.join(format!("{port}/redis.pid"))).unwrap();
        let status = Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
        assert!(status.success());
    }

    /// Start the shard again (same node id and slots, from its nodes.conf) and wait for the whole cluster to
    /// say `cluster_state:ok`.
    async fn restart(&self, port: u16) {
        let status = Command::new("sh").arg(self.dir.join(format!("{port}/start"))).status().unwrap();
        assert!(status.success(), "restarting the shard on :{port}");
        for p in self.ports() {
            let mut ok = false;
            for _ in 0..150 {
                if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{p}")) {
                    if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                        let info: String =
                            redis::cmd("CLUSTER").arg("INFO").query_async(&mut con).await.unwrap_or_default();
                        if info.contains("cluster_state:ok") {
                            ok = true;
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(ok, "the cluster is not ok on :{p} after restarting :{port}");
        }
    }
}

/// The port of the shard owning `channel`'s slot (CLUSTER KEYSLOT + CLUSTER SLOTS), asked through `con`.
async fn owner_through(con: &mut redis::aio::MultiplexedConnection, channel: &str) -> u16 {
    let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(channel).query_async(con).await.unwrap();
    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(con).await.unwrap();
    for range in ranges {
        if let [redis::Value::Int(from), redis::Value::Int(to), redis::Value::Array(master), ..] = range.as_slice() {
            if (*from..=*to).contains(&slot) {
                if let [_, redis::Value::Int(port), ..] = master.as_slice() {
                    return *port as u16;
                }
            }
        }
    }
    panic!("no shard owns slot {slot}");
}

/// Users whose channels (`{prefix}:u:{user}`) hash to each of the cluster's `shards`, asked through `con`: shard
/// port → user.
async fn a_user_on_every_shard(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    shards: usize,
) -> BTreeMap<u16, String> {
    let mut users = BTreeMap::new();
    while users.len() < shards {
        let user = unique("rc-");
        users.entry(owner_through(con, &format!("{prefix}:u:{user}")).await).or_insert(user);
    }
    users
}

/// A fresh database on the test PostgreSQL server, or None (with a note) without one.
async fn fresh_database(test: &str) -> Option<String> {
    let Some(pg) = std::env::var("HERALD_TEST_POSTGRES_URL").ok().filter(|v| !v.is_empty()) else {
        eprintln!("{test}: skipped — HERALD_TEST_POSTGRES_URL is not set (scripts/test.sh sets it)");
        return None;
    };
    use sqlx::Connection;
    let name = format!("herald_{}", unique("").replace('-', "_"));
    let mut admin = sqlx::PgConnection::connect(&pg).await.expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    let (base, _) = pg.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// A node on the shared PostgreSQL database and the Redis Cluster, with the test's own channel prefix.
async fn sharded_node(pg: &str, cluster: &RedisCluster, id: &str) -> Gateway {
    sharded_node_at(pg, &cluster.urls, id, ("", "", "")).await
}

/// A node on the shared PostgreSQL database and the Redis Cluster seeded by `urls`, verifying a `rediss://`
/// cluster's certificates against `ca_file` (the system's trust store when empty).
/// A node on the cluster at `urls`; `tls` is its `cluster.redis_ca_file`, `redis_cert_file` and `redis_key_file`.
async fn sharded_node_at(pg: &str, urls: &str, id: &str, tls: (&str, &str, &str)) -> Gateway {
    let (pg, urls, id) = (pg.to_owned(), urls.to_owned(), id.to_owned());
    let (ca_file, cert_file, key_file) = (tls.0.to_owned(), tls.1.to_owned(), tls.2.to_owned());
    let prefix = channel_prefix(&pg);
    spawn_gateway_with(move |s| {
        s.cluster.channel_prefix = prefix;
        s.store.url = pg;
        s.cluster.redis_url = Secret::new(urls);
        s.cluster.redis_mode = RedisMode::Cluster;
        s.cluster.pubsub = PubSubMode::Sharded;
        (s.cluster.redis_ca_file, s.cluster.redis_cert_file, s.cluster.redis_key_file) = (ca_file, cert_file, key_file);
        s.cluster.node_id = id;
        s.cluster.presence_interval_secs = 1;
    })
    .await
}

fn channel_prefix(pg: &str) -> String {
    pg.rsplit('/').next().unwrap().to_owned()
}

async fn broadcast(gw: &Gateway, title: &str) -> i64 {
    let body = json!({"user_id": "system", "title": title, "message": "m"});
    let resp = gw.post_event("sgad.notifications", "", &body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
}

/// What one client has received, per chain, each checked to arrive in id order and once.
#[derive(Default, Clone, Debug)]
struct Received {
    mine: Vec<i64>,
    broadcasts: Vec<i64>,
    resyncs: usize,
}

impl Received {
    fn take(&mut self, frame: &Value) {
        match frame["type"].as_str() {
            Some("notification") => {
                let id = frame["notification"]["id"].as_i64().unwrap();
                let chain =
                    if frame["notification"]["user_id"].is_null() { &mut self.broadcasts } else { &mut self.mine };
                assert!(
                    chain.last().is_none_or(|l| id > *l),
                    "in order per chain, once: {id} after {:?}",
                    chain.last()
                );
                chain.push(id);
            }
            Some("resync") => self.resyncs += 1,
            _ => {}
        }
    }

    /// The `since` / `since_broadcast` query a client resumes with.
    fn position(&self) -> String {
        let since = self.mine.last().copied().unwrap_or(0);
        let since_broadcast = self.broadcasts.last().copied().unwrap_or(0);
        format!("&since={since}&since_broadcast={since_broadcast}")
    }
}

async fn read_until(client: &mut Client, got: &mut Received, mine: &[i64], broadcasts: &[i64]) {
    while got.mine.len() < mine.len() || got.broadcasts.len() < broadcasts.len() {
        let f = client.frame().await;
        got.take(&f);
    }
}

#[tokio::test]
async fn users_on_every_shard_receive_notifications_from_another_node_live() {
    let Some(cluster) = RedisCluster::get("redis_cluster_live") else { return };
    let Some(pg) = fresh_database("redis_cluster_live").await else { return };
    let a = sharded_node(&pg, &cluster, "rc-live-a").await;
    let b = sharded_node(&pg, &cluster, "rc-live-b").await;
    ready(&a).await;
    ready(&b).await;
    let users = cluster.a_user_on_every_shard(&channel_prefix(&pg)).await;
    assert_eq!(users.len(), 3, "one user per shard: {users:?}");
    let mut clients = Vec::new();
    for user in users.values() {
        clients.push(b.connect(user).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // B's SSUBSCRIBE to each user's shard

    for (user, client) in users.values().zip(&mut clients) {
        let id = notify(&a, user, "from a").await;
        assert_eq!(client.notification().await["notification"]["id"], id, "{user}'s session on B got A's event");
    }
    let id = broadcast(&a, "everyone").await;
    for client in &mut clients {
        assert_eq!(client.notification().await["notification"]["id"], id);
        client.silent_for(Duration::from_millis(200)).await;
    }

    // The presence view (a hash on whichever shard owns its key) counts B's three sessions.
    let mut seen = Value::Null;
    for _ in 0..50 {
        seen = a.get("/api/v1/admin/presence", SERVICE_KEY).send().await.unwrap().json().await.unwrap();
        let nodes = seen["nodes"].as_array().unwrap();
        if nodes.iter().any(|n| n["node"] == "rc-live-b" && n["sessions"] == 3) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("presence never showed node B's 3 sessions: {seen}");
}

#[tokio::test]
async fn restarting_a_shard_mid_stream_loses_nothing_after_resume_and_live_delivery_returns() {
    let Some(cluster) = RedisCluster::get("redis_cluster_restart") else { return };
    let Some(pg) = fresh_database("redis_cluster_restart").await else { return };
    let prefix = channel_prefix(&pg);
    let a = sharded_node(&pg, &cluster, "rc-restart-a").await;
    let b = sharded_node(&pg, &cluster, "rc-restart-b").await;
    ready(&a).await;
    ready(&b).await;
    let users: Vec<String> = cluster.a_user_on_every_shard(&prefix).await.into_values().collect();
    // The shard restarted owns the broadcast channel and, by construction, one user's channel.
    let victim = cluster.owner(&format!("{prefix}:all")).await;

    // Each user has a session kept open through the outage (the node resyncs it) and one that drops at the kill
    // and resumes later with its position, as the SDK does.
    let mut steady = Vec::new();
    let mut resumers = Vec::new();
    for user in &users {
        steady.push(b.connect(user).await);
        let mut client = b.connect(user).await;
        let got = Arc::new(Mutex::new(Received::default()));
        let record = got.clone();
        let reader = tokio::spawn(async move {
            loop {
                let f = client.frame().await;
                record.lock().unwrap().take(&f);
            }
        });
        resumers.push((reader, got));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rounds = 100;
    let done = Arc::new(AtomicUsize::new(0));
    let poster = {
        let (base, users, done) = (a.url("/api/v1/events?exchange=sgad.notifications"), users.clone(), done.clone());
        let http = a.raw().clone();
        tokio::spawn(async move {
            let post = |body: Value| {
                let (http, base) = (http.clone(), base.clone());
                async move {
                    let r = http.post(&base).bearer_auth(SERVICE_KEY).json(&body).send().await.unwrap();
                    assert_eq!(r.status(), 202);
                    r.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
                }
            };
            let mut mine = vec![Vec::new(); users.len()];
            let mut broadcasts = Vec::new();
            for round in 0..rounds {
                for (i, user) in users.iter().enumerate() {
                    mine[i].push(post(json!({"user_id": user, "title": format!("r{round}"), "message": "m"})).await);
                }
                if round % 5 == 0 {
                    broadcasts
                        .push(post(json!({"user_id": "system", "title": format!("b{round}"), "message": "m"})).await);
                }
                done.store(round + 1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (mine, broadcasts)
        })
    };

    while done.load(Ordering::Relaxed) < rounds / 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let positions: Vec<Received> = resumers
        .into_iter()
        .map(|(reader, got)| {
            reader.abort(); // drops that client's socket
            let got = got.lock().unwrap().clone();
            got
        })
        .collect();
    cluster.kill(victim);
    assert!(done.load(Ordering::Relaxed) < rounds, "the shard goes down while notifications are flowing");
    // Reported instead of pretending all is well; the node stays ready (degraded: it serves without Redis).
    let (status, body) = eventually("readyz to report the lost shard", WAIT, async || {
        let r = b.raw().get(b.url("/readyz")).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        (body["checks"]["redis"]["ok"] == false).then_some((status, body))
    })
    .await;
    assert_eq!((status, &body["degraded"]), (200, &json!(["redis"])), "{body}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.restart(victim).await;
    ready(&a).await;
    ready(&b).await;

    let mut resumed = Vec::new();
    for (user, got) in users.iter().zip(&positions) {
        resumed.push((b.connect_with(user, &got.position()).await, got.clone()));
    }
    let (mine, broadcasts) = poster.await.unwrap();
    for (i, user) in users.iter().enumerate() {
        let mut got = Received::default();
        read_until(&mut steady[i], &mut got, &mine[i], &broadcasts).await;
        assert_eq!(got.mine, mine[i], "{user}'s open session: every notification once");
        assert_eq!(got.broadcasts, broadcasts, "{user}'s open session: every broadcast once");
        assert!(got.resyncs > 0, "{user}'s open session was resynced after the transport loss");

        let (client, got) = &mut resumed[i];
        read_until(client, got, &mine[i], &broadcasts).await;
        assert_eq!(got.mine, mine[i], "{user}'s resumed client: every notification once");
        assert_eq!(got.broadcasts, broadcasts, "{user}'s resumed client: every broadcast once");
    }

    // Live again on every shard, the restarted one included.
    for (i, user) in users.iter().enumerate() {
        let id = notify(&a, user, "after").await;
        assert_eq!(steady[i].notification().await["notification"]["id"], id, "{user}: live after the restart");
        assert_eq!(resumed[i].0.notification().await["notification"]["id"], id);
    }
    let id = broadcast(&a, "after").await;
    for client in steady.iter_mut().chain(resumed.iter_mut().map(|(c, _)| c)) {
        assert_eq!(client.notification().await["notification"]["id"], id);
        client.silent_for(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn when_a_users_slot_moves_to_another_shard_the_subscription_follows_and_nothing_is_lost() {
    let Some(cluster) = RedisCluster::get("redis_cluster_slot_moved") else { return };
    let Some(pg) = fresh_database("redis_cluster_slot_moved").await else { return };
    let prefix = channel_prefix(&pg);
    let a = sharded_node(&pg, &cluster, "rc-move-a").await;
    let b = sharded_node(&pg, &cluster, "rc-move-b").await;
    ready(&a).await;
    ready(&b).await;
    let user = unique("rc-");
    let channel = format!("{prefix}:u:{user}");
    let mut on_b = b.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut posted = vec![notify(&a, &user, "before").await];
    let mut got = Received::default();
    got.take(&on_b.notification().await);

    // The shard that owned the slot drops our SSUBSCRIBE (a `sunsubscribe` push); node B subscribes again on the
    // new owner and the user's sessions catch up on what was published in between.
    let from = cluster.owner(&channel).await;
    let to = *cluster.ports().iter().find(|p| **p != from).unwrap();
    cluster.move_slot(cluster.slot(&channel).await, from, to).await;
    assert_eq!(cluster.owner(&channel).await, to);
    for i in 0..10 {
        posted.push(notify(&a, &user, &format!("moved-{i}")).await);
    }
    read_until(&mut on_b, &mut got, &posted, &[]).await;
    assert_eq!(got.mine, posted, "every notification once, in order");
    // Announced: state frames (a `read` elsewhere) published while the channel was away are not in a replay,
    // and the client refetches them.
    while got.resyncs == 0 {
        got.take(&on_b.frame().await);
    }

    // Live on the new owner.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = notify(&a, &user, "live").await;
    assert_eq!(on_b.notification().await["notification"]["id"], id);
    on_b.silent_for(Duration::from_millis(200)).await;
}

/// A Redis Cluster that speaks only TLS, its certificates signed by a private CA, and that asks every client for
/// a certificate that CA signed (services.sh's `start_redis_cluster --tls`: `HERALD_TEST_REDISS_CLUSTER_URLS`,
/// `HERALD_TEST_TLS_CA`, `HERALD_TEST_TLS_CLIENT_CERT` and `_KEY`): with that CA as `cluster.redis_ca_file` and the
/// client certificate as `redis_cert_file` and `redis_key_file`, two nodes carry a notification for a user on
/// every shard, each shard reached over mutual TLS at the address the cluster announces; without the CA the
/// server's certificate is refused, and without the client certificate the cluster refuses the node, and
/// `/readyz` says so.
#[tokio::test]
async fn over_a_tls_only_cluster_signed_by_a_private_ca_users_on_every_shard_receive_from_another_node() {
    let Some((urls, TestTls { ca, cert, key })) = test_tls("tls cluster", "HERALD_TEST_REDISS_CLUSTER_URLS") else {
        return;
    };
    let Some(pg) = fresh_database("redis_cluster_tls").await else { return };
    let a = sharded_node_at(&pg, &urls, "rc-tls-a", (&ca, &cert, &key)).await;
    let b = sharded_node_at(&pg, &urls, "rc-tls-b", (&ca, &cert, &key)).await;
    ready(&a).await;
    ready(&b).await;

    // A user whose channel lives on each shard, found by asking the cluster over TLS.
    let seed = urls.split(',').next().unwrap();
    let client_tls =
        redis::ClientTlsConfig { client_cert: std::fs::read(&cert).unwrap(), client_key: std::fs::read(&key).unwrap() };
    let certs = redis::TlsCertificates { client_tls: Some(client_tls), root_cert: Some(std::fs::read(&ca).unwrap()) };
    let mut con = redis::Client::build_with_tls(seed, certs).unwrap().get_multiplexed_async_connection().await.unwrap();
    let users = a_user_on_every_shard(&mut con, &channel_prefix(&pg), urls.split(',').count()).await;
    let mut clients = Vec::new();
    for user in users.values() {
        clients.push(b.connect(user).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // B's SSUBSCRIBE to each user's shard
    for (user, client) in users.values().zip(&mut clients) {
        let id = notify(&a, user, "over tls").await;
        assert_eq!(client.notification().await["notification"]["id"], id, "{user}'s session on B got A's event");
    }

    // Without the client certificate the cluster ends the handshake.
    let anonymous = sharded_node_at(&pg, &urls, "rc-tls-anonymous", (&ca, "", "")).await;
    let detail = eventually("the handshake refused on /readyz", Duration::from_secs(15), async || {
        let check = redis_check(&anonymous).await;
        (check["ok"] == false && check["detail"].as_str()?.contains("reconnecting"))
            .then(|| check["detail"].as_str().unwrap().to_owned())
    })
    .await;
    eprintln!("refused: {detail}");
    assert!(detail.contains("alert"), "the cluster's TLS alert, not another failure: {detail}");

    // The system's trust store does not know the private CA.
    let untrusted = sharded_node_at(&pg, &urls, "rc-tls-c", ("", &cert, &key)).await;
    redis_refuses_the_certificate(&untrusted).await;
}

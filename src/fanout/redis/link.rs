//! The link to Redis: one standalone server or a Redis Cluster, behind the same few operations, so the
//! transport's worker (subscriptions, publishing, presence, reconnects) is written once for both.
//!
//! In cluster mode the `redis` crate's cluster client learns the slot map from the seed nodes, keeps one RESP3
//! connection per shard (their pushes all reach the one push callback), sends each SSUBSCRIBE/SPUBLISH to the
//! shard owning its channel's slot and follows MOVED/ASK. Commands for different slots cannot share a pipeline
//! there, so a batch is split into one pipeline per channel (order within a channel kept, channels in
//! parallel) and subscriptions are sent one channel per command.
//!
//! Invariant: this file knows connections and commands, not channel names or the wire format between nodes.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use redis::aio::{AsyncPushSender, ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{ClusterSettings, PubSubMode, RedisMode};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Subscription commands in flight at once while (re)subscribing every channel on a cluster.
const SUBSCRIBE_CONCURRENCY: usize = 64;

/// How to reach Redis; opens [`Link`]s.
pub(super) enum Connector {
    Standalone(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl Connector {
    /// The key named in errors is `cluster.redis_url` (`cluster.redis_ca_file`, `redis_cert_file` or
    /// `redis_key_file` for the TLS files); the URLs were validated at start-up. `rediss://` URLs connect over TLS,
    /// verified against `redis_ca_file` when it is set, else the system's trust store, and present the client
    /// certificate of `redis_cert_file` and `redis_key_file` when they are set (mutual TLS). The files are read
    /// again here, so a renewed CA or client certificate is taken when the link is rebuilt.
    pub(super) fn new(settings: &ClusterSettings) -> Result<Connector, String> {
        let err = |e: redis::RedisError| format!("cluster.redis_url: {e}");
        let files = settings.tls_files();
        let root_cert = match files.ca_file {
            "" => None,
            path => Some(crate::config::read_ca_file(path).map_err(|e| format!("cluster.redis_ca_file: {e}"))?),
        };
        let client_tls = crate::config::read_client_identity(files)
            .map_err(|(file, e)| format!("cluster.redis_{}: {e}", file.setting()))?
            .map(|id| redis::ClientTlsConfig { client_cert: id.cert_pem, client_key: id.key_pem });
        let certs =
            (root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates { client_tls, root_cert });
        match settings.redis_mode {
            RedisMode::Standalone => {
                let url = settings.redis_url.expose();
                let sep = if url.contains('?') { '&' } else { '?' };
                let url = format!("{url}{sep}protocol=resp3");
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(url, certs),
                    None => redis::Client::open(url),
                };
                Ok(Connector::Standalone(Box::new(client.map_err(err)?)))
            }
            RedisMode::Cluster => {
                // Few, short retries: a shard that stays away is the worker's to handle (reconnect with backoff,
                // `/readyz` down), not a reason to stall every publish for minutes. Retries still cover MOVED
                // and ASK during a slot migration or failover.
                let mut builder = ClusterClientBuilder::new(settings.redis_urls())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .retries(4)
                    .min_retry_wait(20)
                    .max_retry_wait(500);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                Ok(Connector::Cluster(Box::new(builder.build().map_err(err)?)))
            }
        }
    }

    /// Connect; every push (messages, subscription changes, a lost connection to any shard) goes to `on_push`.
    pub(super) async fn connect(&self, on_push: Option<impl AsyncPushSender>) -> RedisResult<Link> {
        match self {
            Connector::Standalone(client) => {
                let mut config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                if let Some(on_push) = on_push {
                    config = config.set_push_sender(on_push);
                }
                Ok(Link::Standalone(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Connector::Cluster(client) => {
                let mut config =
                    ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT).set_response_timeout(RESPONSE_TIMEOUT);
                if let Some(on_push) = on_push {
                    config = config.set_push_sender(on_push);
                }
                Ok(Link::Cluster(client.get_async_connection_with_config(config).await?))
            }
        }
    }
}

/// One connection to standalone Redis, or to every shard of a cluster. Plain commands go through
/// [`ConnectionLike`] (`exec_async(&mut link)`); subscribing and publishing through the methods below.
#[derive(Clone)]
pub(super) enum Link {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Link {
    pub(super) async fn subscribe(&mut self, mode: PubSubMode, channels: &[String]) -> RedisResult<()> {
        self.each_channel(true, mode, channels).await
    }

    /// Many channels at once, as [`Link::subscribe`] does: a node whose users left by the thousand (a load
    /// balancer's restart) does not spend a round trip on each before it subscribes anyone new.
    pub(super) async fn unsubscribe(&mut self, mode: PubSubMode, channels: &[String]) -> RedisResult<()> {
        self.each_channel(false, mode, channels).await
    }

    async fn each_channel(&mut self, subscribe: bool, mode: PubSubMode, channels: &[String]) -> RedisResult<()> {
        match self {
            Link::Standalone(con) => {
                let verb = match (subscribe, mode) {
                    (true, PubSubMode::Classic) => "SUBSCRIBE",
                    (true, PubSubMode::Sharded) => "SSUBSCRIBE",
                    (false, PubSubMode::Classic) => "UNSUBSCRIBE",
                    (false, PubSubMode::Sharded) => "SUNSUBSCRIBE",
                };
                for chunk in channels.chunks(1000) {
                    redis::cmd(verb).arg(chunk).exec_async(con).await?;
                }
                Ok(())
            }
            Link::Cluster(con) => {
                // One channel per command: channels of different slots live on different shards. The futures
                // own what they use (a clone of the connection, the channel), so the worker stays `Send`.
                let commands: Vec<_> = channels
                    .iter()
                    .map(|channel| {
                        let (mut con, channel) = (con.clone(), channel.clone());
                        async move {
                            match (subscribe, mode) {
                                (true, PubSubMode::Classic) => con.subscribe(channel).await,
                                (true, PubSubMode::Sharded) => con.ssubscribe(channel).await,
                                (false, PubSubMode::Classic) => con.unsubscribe(channel).await,
                                (false, PubSubMode::Sharded) => con.sunsubscribe(channel).await,
                            }
                        }
                    })
                    .collect();
                futures_util::stream::iter(commands).buffer_unordered(SUBSCRIBE_CONCURRENCY).try_collect::<()>().await
            }
        }
    }

    /// Publish a batch: one pipeline on a standalone server; on a cluster one pipeline per channel, so each
    /// channel's messages keep their order and every pipeline stays within one slot.
    pub(super) async fn publish(&mut self, mode: PubSubMode, batch: &[(String, Bytes)]) -> RedisResult<()> {
        let verb = match mode {
            PubSubMode::Classic => "PUBLISH",
            PubSubMode::Sharded => "SPUBLISH",
        };
        match self {
            Link::Standalone(con) => {
                let mut pipe = redis::pipe();
                for (channel, payload) in batch {
                    pipe.cmd(verb).arg(channel).arg(payload.as_ref()).ignore();
                }
                pipe.exec_async(con).await
            }
            Link::Cluster(con) => {
                let mut pipes: Vec<Pipeline> = Vec::new();
                let mut index = std::collections::HashMap::new();
                for (channel, payload) in batch {
                    let i = *index.entry(channel.as_str()).or_insert_with(|| {
                        pipes.push(redis::pipe());
                        pipes.len() - 1
                    });
                    pipes[i].cmd(verb).arg(channel).arg(payload.as_ref()).ignore();
                }
                let sends: Vec<_> = pipes
                    .into_iter()
                    .map(|pipe| {
                        let mut con = con.clone();
                        async move { pipe.exec_async(&mut con).await }
                    })
                    .collect();
                futures_util::future::try_join_all(sends).await.map(|_| ())
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Standalone(con) => con.req_packed_command(cmd),
            Link::Cluster(con) => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Standalone(con) => con.req_packed_commands(pipeline, offset, count),
            Link::Cluster(con) => con.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Standalone(con) => con.get_db(),
            Link::Cluster(con) => con.get_db(),
        }
    }
}

//! Test support: a real gateway on 127.0.0.1:0, real HTTP and WebSocket clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::auth::Authenticator;
use herald::config::{Settings, SqliteSync};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const SERVICE_KEY: &str = "herald-dev-service-key";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A fixture file from `tests/fixtures/events/`.
pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(&format!("tests/fixtures/events/{name}"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
    auth: Authenticator,
}

pub fn test_settings(dir: &Path) -> Settings {
    let mut s = Settings::defaults();
    s.store.url = format!("sqlite://{}", dir.join("herald.db").display());
    // Process crashes are covered by `full` in the kill -9 test; in-process tests need no fsync.
    s.store.synchronous = SqliteSync::Normal;
    s.server.demo_dir = PathBuf::new();
    // A test that serves the console points this at a directory of its own.
    s.server.admin_dir = PathBuf::new();
    s.rules.path = repo_path("config/rules.toml");
    s
}

pub async fn spawn_gateway() -> Gateway {
    spawn_gateway_with(|_| {}).await
}

pub async fn spawn_gateway_with(configure: impl FnOnce(&mut Settings)) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    configure(&mut settings);
    start(settings, dir).await
}

/// A gateway with fault-injection hooks (see `herald::Hooks`).
pub async fn spawn_gateway_hooked(configure: impl FnOnce(&mut Settings), hooks: herald::Hooks) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    configure(&mut settings);
    start_hooked(settings, dir, hooks).await
}

async fn start(settings: Settings, dir: tempfile::TempDir) -> Gateway {
    start_hooked(settings, dir, herald::Hooks::default()).await
}

async fn start_hooked(settings: Settings, dir: tempfile::TempDir, hooks: herald::Hooks) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(herald::run_with(settings.clone(), listener, shutdown.clone(), hooks));
    let auth = Authenticator::new(&settings.auth).unwrap();
    Gateway { addr, settings, shutdown, task: Some(task), dir, http: reqwest::Client::new(), auth }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn token(&self, user: &str) -> String {
        self.auth.mint(user, 600).unwrap()
    }

    /// POST an event as a service would. `exchange`/`routing_key` go in the query when non-empty.
    pub async fn post_event(&self, exchange: &str, routing_key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/events"))
            .query(&[("exchange", exchange), ("routing_key", routing_key)])
            .bearer_auth(SERVICE_KEY)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST a fixture the way its service publishes it. Returns the 202 body.
    pub async fn post_fixture(&self, name: &str) -> Value {
        let resp = self.post_fixture_raw(name).await;
        assert_eq!(resp.status(), 202, "posting {name}");
        resp.json().await.unwrap()
    }

    /// POST a fixture the way its service publishes it, whatever the answer.
    pub async fn post_fixture_raw(&self, name: &str) -> reqwest::Response {
        let f = fixture(name);
        self.post_event(f["exchange"].as_str().unwrap_or(""), f["routing_key"].as_str().unwrap_or(""), &f["body"]).await
    }

    pub fn get(&self, path: &str, bearer: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(bearer)
    }

    pub fn post(&self, path: &str, bearer: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(bearer)
    }

    pub fn delete(&self, path: &str, bearer: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(bearer)
    }

    pub fn raw(&self) -> &reqwest::Client {
        &self.http
    }

    /// The user's inbox page as the user sees it.
    pub async fn inbox(&self, user: &str) -> Value {
        let resp =
            self.get(&format!("/api/v1/users/{user}/notifications?limit=100"), &self.token(user)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn unread(&self, user: &str) -> u64 {
        let resp = self
            .get(&format!("/api/v1/users/{user}/notifications/unread_count"), &self.token(user))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()["unread_count"].as_u64().unwrap()
    }

    /// Open a session with `?token=` and read the `ready` frame.
    pub async fn connect(&self, user: &str) -> Client {
        self.connect_with(user, "").await
    }

    /// Open a session with extra query (e.g. "&since=4") and read the `ready` frame.
    pub async fn connect_with(&self, user: &str, extra_query: &str) -> Client {
        let url = format!("ws://{}/ws/{user}?token={}{extra_query}", self.addr, self.token(user));
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("handshake");
        let mut c = Client { ws };
        let ready = c.frame().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        c
    }

    /// Attempt a handshake and return the HTTP status and JSON body of a refusal.
    pub async fn refused(&self, req: tokio_tungstenite::tungstenite::handshake::client::Request) -> (u16, Value) {
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => panic!("handshake unexpectedly accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_ref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
                (status, body)
            }
            Err(e) => panic!("expected an HTTP refusal, got {e}"),
        }
    }

    pub fn ws_request(&self, path_and_query: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        format!("ws://{}{path_and_query}", self.addr).into_client_request().unwrap()
    }

    /// Graceful stop; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.take().unwrap().await.unwrap()
    }

    /// Stop, and keep the files (the inbox, the trace) to look at.
    pub async fn stop_keeping_files(self) -> tempfile::TempDir {
        self.stopped().await.1
    }

    /// Stop and start again on the same database (a clean restart).
    pub async fn restart(self) -> Gateway {
        let (settings, dir) = self.stopped().await;
        start(settings, dir).await
    }

    /// Stop cleanly (a failed stop fails the test); what it ran with, and its files.
    async fn stopped(mut self) -> (Settings, tempfile::TempDir) {
        self.shutdown.cancel();
        self.task.take().unwrap().await.unwrap().unwrap();
        let Gateway { settings, dir, .. } = self;
        (settings, dir)
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// The next text frame as JSON, `counts` frames included (server pings are answered by the client library).
    pub async fn raw_frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame");
            match msg.expect("socket ended").expect("socket error") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// The next text frame as JSON, skipping `counts` frames (which follow `ready`, `replayed` and every change
    /// of the user's counts; the tests about them read them with [`Client::raw_frame`] or [`Client::counts`]).
    pub async fn frame(&mut self) -> Value {
        loop {
            let f = self.raw_frame().await;
            if f["type"] != "counts" {
                return f;
            }
        }
    }

    /// The next `counts` frame as (unread, unseen), skipping other frames.
    pub async fn counts(&mut self) -> (u64, u64) {
        loop {
            let f = self.raw_frame().await;
            if f["type"] == "counts" {
                return (f["unread"].as_u64().unwrap(), f["unseen"].as_u64().unwrap());
            }
        }
    }

    /// The next notification frame (skipping control frames such as `replayed`).
    pub async fn notification(&mut self) -> Value {
        loop {
            let f = self.frame().await;
            if f["type"] == "notification" {
                return f;
            }
        }
    }

    /// Wait for the server to close; return the close code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for close");
            match msg {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before close: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Assert nothing but `counts` frames arrives for `d` (used after the interesting frames, to prove there are
    /// no extras).
    pub async fn silent_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if serde_json::from_str::<Value>(t.as_str()).map(|f| f["type"] != "counts").unwrap_or(true) {
                panic!("unexpected frame: {t}");
            }
        }
    }

    /// Read every frame until none comes for a second: the last `counts` frame among them, as (unread, unseen).
    pub async fn last_counts_when_quiet(&mut self) -> Option<(u64, u64)> {
        let mut last = None;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(1), self.ws.next()).await {
            if let Message::Text(t) = msg {
                let f: Value = serde_json::from_str(t.as_str()).unwrap();
                if f["type"] == "counts" {
                    last = Some((f["unread"].as_u64().unwrap(), f["unseen"].as_u64().unwrap()));
                }
            }
        }
        last
    }

    /// Assert nothing at all arrives for `d`, `counts` frames included.
    pub async fn quiet_for(&mut self, d: Duration) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("unexpected frame: {t}");
        }
    }
}

/// The URL a `herald listening on http://ADDR` line names, plain or (with JSON logs) inside a JSON line.
pub fn listening_url(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("herald listening on ")?;
    Some(rest.split(|c: char| c.is_whitespace() || c == '"').next()?.to_owned())
}

/// `herald serve --config <config>` as a real process (for kill -9 tests). Returns the child and its base URL,
/// read from the `herald listening on` line; stdout keeps being drained so the child never blocks on it.
pub fn spawn_herald_process(config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config"])
        .arg(config)
        .env("HERALD__LOG__FILTER", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("herald exited before listening").unwrap();
        if let Some(url) = listening_url(&line) {
            break url;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Like [`spawn_herald_process`], with the child's log (its stdout after the `listening` line, and its stderr)
/// appended to `log` instead of the test's output: for long runs whose faults make every node log warnings,
/// kept for investigation.
pub fn spawn_herald_process_logged(config: &Path, log: &Path) -> (Child, String) {
    use std::io::Write;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config"])
        .arg(config)
        .env("HERALD__LOG__FILTER", "warn")
        .stdout(Stdio::piped())
        .stderr(log.try_clone().unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("herald exited before listening").unwrap();
        if let Some(url) = listening_url(&line) {
            break url;
        }
    };
    std::thread::spawn(move || {
        let mut log = log;
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    (child, addr)
}

/// A TCP proxy to `upstream` that hands on every chunk `delay` after reading it, in both directions: a link
/// with that much latency (order kept, throughput not limited). Both directions, because what matters here is
/// a node's PUBLISH reaching Redis late, and a real slow link is slow both ways.
pub async fn slow_link(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    lopsided_link(upstream, delay, delay).await
}

/// [`slow_link`] with a latency of its own each way: `up` for what the node sends, `down` for what it hears.
/// The socket address a `redis://host:port[/db]` URL names (what a test's link proxies to).
pub fn redis_addr(url: &str) -> SocketAddr {
    let host = url.trim_start_matches("redis://").split('/').next().unwrap();
    std::net::ToSocketAddrs::to_socket_addrs(host).unwrap().next().unwrap()
}

pub async fn lopsided_link(upstream: SocketAddr, up: Duration, down: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else { continue };
            let (from_node, to_node) = inbound.into_split();
            let (from_redis, to_redis) = outbound.into_split();
            tokio::spawn(delayed_copy(from_node, to_redis, up));
            tokio::spawn(delayed_copy(from_redis, to_node, down));
        }
    });
    addr
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    // The reader stamps each chunk as it arrives and the writer holds it until its time: a latency, not a
    // bandwidth limit (chunks read back to back leave back to back).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A TCP proxy to `upstream` that refuses every connection (accepts and drops it at once) until `open` is set:
/// a service out of a node's reach, then back, without restarting it.
pub async fn gated_link(upstream: SocketAddr) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !gate.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // dropped: the peer sees the connection closed
            }
            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { continue };
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, open)
}

/// A user token signed with the development HS256 secret, with exactly these claims (tests of hostile claims).
pub fn dev_jwt(claims: &Value) -> String {
    let secret = Settings::defaults().auth.jwt_secret.expose().as_bytes().to_vec();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap()
}

pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A config file for a real `herald serve` process: a fresh SQLite inbox in `dir`, the shipped rules, port 0,
/// no demo; `server_extra` is appended to `[server]`, `extra` after everything (more sections).
pub fn process_config(dir: &Path, server_extra: &str, extra: &str) -> PathBuf {
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\ndemo_dir = \"\"\n{server_extra}\n[store]\nurl = \"sqlite://{}\"\n[rules]\npath = \"{}\"\n{extra}\n",
            dir.join("herald.db").display(),
            repo_path("config/rules.toml").display()
        ),
    )
    .unwrap();
    config
}

/// A real `herald serve --config <config>` process whose stdout (where its logs go too) is kept line by line.
pub struct HeraldProcess {
    pub child: Child,
    pub url: String,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HeraldProcess {
    /// Every stdout line so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Like [`spawn_herald_process`], with extra environment variables and, when `nofile` is given, under
/// `prlimit --nofile=N:N` (so descriptor exhaustion can be tested without touching the test runner's limit).
pub fn spawn_herald_process_with(config: &Path, env: &[(&str, &str)], nofile: Option<u64>) -> HeraldProcess {
    let bin = env!("CARGO_BIN_EXE_herald");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["serve", "--config"]).arg(config).env("HERALD__LOG__FILTER", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = reader.next().expect("herald exited before listening").unwrap();
        let url = listening_url(&line);
        lines.lock().unwrap().push(line);
        if let Some(url) = url {
            break url;
        }
    };
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in reader.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    HeraldProcess { child, url, lines }
}

/// The sum of the series in `gw`'s `/metrics` whose line starts with `name_and_labels` (0 when none does).
pub async fn metric(gw: &Gateway, name_and_labels: &str) -> f64 {
    let text = gw.raw().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Poll `f` until it returns `Some`, or fail naming `what`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A service key with only `scopes` (any exchange and routing key).
pub fn scoped(id: &str, key: &str, scopes: &[herald::config::Scope]) -> herald::config::ServiceKeyConfig {
    herald::config::ServiceKeyConfig::Scoped(herald::config::ScopedServiceKey {
        id: id.into(),
        key: herald::config::Secret::new(key),
        scopes: scopes.to_vec(),
        exchanges: None,
        routing_keys: None,
    })
}

/// The test CA and the client certificate it signed (services.sh's `make_test_tls`), as files.
pub struct TestTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// The URL in `url_var` and [`TestTls`]'s files, or None (with a note naming `test`) when any is not set: the
/// script that starts the service sets them.
pub fn test_tls(test: &str, url_var: &str) -> Option<(String, TestTls)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let names = [url_var, "HERALD_TEST_TLS_CA", "HERALD_TEST_TLS_CLIENT_CERT", "HERALD_TEST_TLS_CLIENT_KEY"];
    let [Some(url), Some(ca), Some(cert), Some(key)] = names.map(var) else {
        eprintln!("SKIPPED {test}: {} are not all set (scripts/lib/services.sh sets them)", names.join(", "));
        return None;
    };
    Some((url, TestTls { ca, cert, key }))
}

/// A client certificate of its own making in `dir` (self-signed: no CA a test server trusts signed it) and its
/// key, as (certificate file, key file): what a node holds before its certificate is renewed.
pub fn self_signed_client(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=unsigned-client", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned())
}

//! Issue 13, the HTTP, auth and config half: each defect an adversarial probe found, and the resource bounds.
//! Every test here failed before its fix.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A token whose user claim is `alice` plus surrounding whitespace or a control character used to open alice's
/// inbox: the claim went through the trimming meant for event user ids. Now it is refused (401, JSON reason)
/// over REST and WebSocket alike.
#[tokio::test]
async fn a_user_claim_with_surrounding_whitespace_or_control_characters_opens_no_inbox() {
    let gw = spawn_gateway().await;
    let exp = unix_now() + 600;
    for claim in [" alice", "alice\u{a0}", "\talice\n", "alice\u{0}", "alice\u{7f}"] {
        let token = dev_jwt(&json!({"sub": claim, "exp": exp}));
        let resp = gw.get("/api/v1/users/alice/notifications", &token).send().await.unwrap();
        assert_eq!(resp.status(), 401, "REST with sub {claim:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_credentials", "{body}");
        assert!(body["message"].as_str().unwrap().contains("`sub`"), "{body}");

        let (status, body) = gw.refused(gw.ws_request(&format!("/ws/alice?token={token}"))).await;
        assert_eq!(status, 401, "WebSocket with sub {claim:?}: {body}");
        assert_eq!(body["error"], "invalid_credentials", "{body}");
    }
    // The exact claim (and a numeric one) still works.
    let token = dev_jwt(&json!({"sub": "alice", "exp": exp}));
    assert_eq!(gw.get("/api/v1/users/alice/notifications", &token).send().await.unwrap().status(), 200);
    let token = dev_jwt(&json!({"sub": 42, "exp": exp}));
    assert_eq!(gw.get("/api/v1/users/42/notifications", &token).send().await.unwrap().status(), 200);
}

/// A fractional `exp` (RFC 7519 NumericDate) is accepted and floored, over REST, at the handshake and in an
/// in-session refresh; one past 9999-12-31 (including any above i64::MAX) is refused as invalid everywhere.
/// Before: REST accepted both and the socket closed at once with 4001 (expiry read as 0).
#[tokio::test]
async fn fractional_and_absurd_exp_are_treated_alike_over_rest_and_websocket() {
    let gw = spawn_gateway().await;
    let exp = unix_now() + 600;
    let fractional = dev_jwt(&json!({"sub": "alice", "exp": exp as f64 + 0.75}));
    assert_eq!(gw.get("/api/v1/users/alice/notifications", &fractional).send().await.unwrap().status(), 200);

    let url = format!("ws://{}/ws/alice?token={fractional}", gw.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("handshake");
    let mut c = Client { ws };
    assert_eq!(c.frame().await["type"], "ready");
    c.send_text(&json!({"type": "auth", "token": fractional}).to_string()).await;
    let ok = c.frame().await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert_eq!(ok["expires_at"], exp, "floored");
    // Still open a while later (before, the session closed with 4001 straight away).
    let deadline = Instant::now() + Duration::from_millis(1500);
    while let Ok(msg) = tokio::time::timeout_at(deadline.into(), c.ws.next()).await {
        match msg {
            Some(Ok(Message::Close(f))) => panic!("closed: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }

    let absurd = [json!(10_000_000_000_000_000_000u64), json!(9.3e18), json!(253_402_300_800i64), json!(1e300)];
    for exp in absurd {
        let token = dev_jwt(&json!({"sub": "alice", "exp": exp}));
        let resp = gw.get("/api/v1/users/alice/notifications", &token).send().await.unwrap();
        assert_eq!(resp.status(), 401, "REST with exp {exp}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_credentials");
        let (status, body) = gw.refused(gw.ws_request(&format!("/ws/alice?token={token}"))).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_credentials")), "WebSocket with exp {exp}");
    }
}

/// An in-session `{"type":"auth"}` refresh may carry a token as large as one that connects (here 6 KiB, over
/// `max_inbound_bytes`): before, the socket's message limit closed it with 1009.
#[tokio::test]
async fn an_auth_refresh_with_a_token_over_max_inbound_bytes_is_accepted() {
    let gw = spawn_gateway().await;
    let big = dev_jwt(&json!({"sub": "alice", "exp": unix_now() + 600, "pad": "x".repeat(6000)}));
    assert!(big.len() > gw.settings.websocket.max_inbound_bytes);
    // The same token connects...
    let url = format!("ws://{}/ws/alice?token={big}", gw.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("handshake");
    let mut c = Client { ws };
    assert_eq!(c.frame().await["type"], "ready");
    // ...and refreshes.
    c.send_text(&json!({"type": "auth", "token": big}).to_string()).await;
    assert_eq!(c.frame().await["type"], "auth_ok");
}

/// Every error is `{error, message}` JSON: path-parse and query-parse rejections, 405 (an OPTIONS outside the
/// REST API included: REST routes answer preflights, tests/it/cors.rs) and 404.
#[tokio::test]
async fn every_error_is_json_with_error_and_message() {
    let gw = spawn_gateway().await;
    let alice = gw.token("alice");
    let http = gw.raw();
    let cases = [
        (http.post(gw.url("/api/v1/users/alice/notifications/abc/read")).bearer_auth(&alice), 400, "bad_path"),
        (http.delete(gw.url("/api/v1/users/alice/notifications/1x")).bearer_auth(&alice), 400, "bad_path"),
        (http.get(gw.url("/api/v1/users/%FF/notifications")).bearer_auth(&alice), 400, "bad_path"),
        (http.get(gw.url("/api/v1/users/alice/notifications?limit=abc")).bearer_auth(&alice), 400, "bad_query"),
        (http.get(gw.url("/api/v1/users/alice/notifications?unread=maybe")).bearer_auth(&alice), 400, "bad_query"),
        (http.put(gw.url("/api/v1/events")).bearer_auth(SERVICE_KEY), 405, "method_not_allowed"),
        (
            http.request(reqwest::Method::OPTIONS, gw.url("/healthz"))
                .header("origin", "http://localhost:5173")
                .header("access-control-request-method", "POST"),
            405,
            "method_not_allowed",
        ),
        (http.post(gw.url("/healthz")), 405, "method_not_allowed"),
        (http.delete(gw.url("/api/v1/users/alice/notifications")).bearer_auth(&alice), 405, "method_not_allowed"),
        // A route whose handler takes axum's own `Path`: the JSON safety net under every route.
        (http.get(gw.url("/api/v1/aliases/referee/%FF")).bearer_auth(SERVICE_KEY), 400, "bad_path"),
        (http.patch(gw.url("/api/v1/aliases/referee/7")).bearer_auth(SERVICE_KEY), 405, "method_not_allowed"),
        // An alias an event reads trimmed: a padded one could be taught but never found.
        (
            http.put(gw.url("/api/v1/aliases/referee/%2077")).bearer_auth(SERVICE_KEY).json(&json!({"user_id": "ann"})),
            400,
            "bad_path",
        ),
        (http.get(gw.url("/nothing-here")), 404, "not_found"),
        (http.get(gw.url("/api/v1/nothing-here")), 404, "not_found"),
    ];
    for (req, status, code) in cases {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url());
        let resp = http.execute(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        if status == 405 {
            assert!(resp.headers().contains_key("allow"), "{what}: a 405 still names the allowed methods");
        }
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(ct.starts_with("application/json"), "{what}: content-type {ct:?}");
        let body: Value = resp.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    }
}

/// `?tok%65n=<jwt>` authenticates (the query is percent-decoded before `token` is looked up), so the request
/// log must redact it too: the real binary's JSON log lines never hold the token.
#[tokio::test]
async fn a_percent_encoded_token_key_is_redacted_in_the_request_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(dir.path(), "", "");
    let herald = spawn_herald_process_with(
        &config,
        &[("RUST_LOG", "info,tower_http=debug"), ("HERALD__LOG__FORMAT", "json")],
        None,
    );
    let token = herald::auth::Authenticator::new(&herald::config::Settings::defaults().auth)
        .unwrap()
        .mint("alice", 600)
        .unwrap();
    let ws_url = format!("{}/ws/alice?tok%65n={token}&since=0", herald.url.replacen("http://", "ws://", 1));
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("?tok%65n= authenticates");
    let mut c = Client { ws };
    assert_eq!(c.frame().await["type"], "ready");
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = herald.output();
        if lines.iter().any(|l| l.contains("tok%65n=[redacted]")) {
            let leaked: Vec<&String> = lines.iter().filter(|l| l.contains(&token)).collect();
            assert!(leaked.is_empty(), "the token reached the log: {leaked:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no redacted request line logged; log: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A store that cannot be opened refuses to start, naming the cause, and never prints `herald listening`
/// (scripts and tests read that line as "ready").
#[tokio::test]
async fn a_store_open_failure_does_not_print_herald_listening() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(dir.path(), "", "");
    // The database path goes through a regular file: it cannot be created.
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let db = dir.path().join("not-a-dir").join("herald.db");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HERALD__STORE__URL", format!("sqlite://{}", db.display()))
        .env("HERALD__LOG__FILTER", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("herald kept running with an unopenable store");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(!stdout.contains("herald listening"), "stdout: {stdout}");
    assert!(stderr.contains("inbox"), "stderr names the cause: {stderr}");
}

/// With JSON logs every line on stdout is a JSON object, the `herald listening on` line included, so a log
/// shipper reading stdout as JSON lines meets no plain line; that line carries the URL in `address` too.
#[tokio::test]
async fn with_json_logs_every_stdout_line_parses_the_listening_line_included() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(dir.path(), "", "");
    let herald = spawn_herald_process_with(&config, &[("RUST_LOG", "info"), ("HERALD__LOG__FORMAT", "json")], None);
    let lines = herald.output();
    assert!(lines.len() >= 2, "the start's info lines, then the listening line: {lines:#?}");
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {l}")))
        .collect();
    assert!(parsed.iter().all(|v| v["level"].is_string() && v["message"].is_string()), "{lines:#?}");
    let listening = parsed
        .iter()
        .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with("herald listening on ")))
        .expect("the listening line");
    assert_eq!(listening["message"], format!("herald listening on {}", herald.url), "{listening}");
    assert_eq!(listening["address"], herald.url.as_str());
    assert_eq!(listening["level"], "INFO");
}

// ---- Resource bounds -------------------------------------------------------------------------------------

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.x: another "client host").
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One request on a fresh connection from `from`; the status, or `None` when the connection is closed
/// without an answer (refused over a cap).
async fn fresh_request(from: &str, addr: std::net::SocketAddr, request: &str) -> Option<u16> {
    let mut s = tokio::time::timeout(WAIT, connect_from(from, addr)).await.ok()?;
    if s.write_all(request.as_bytes()).await.is_err() {
        return None;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.ok()?;
    let head = String::from_utf8_lossy(&buf);
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn get_healthz() -> String {
    "GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n".to_owned()
}

fn post_event(user: &str) -> String {
    let body = json!({"user_id": user, "title": "t", "message": "m", "type": "info"}).to_string();
    format!(
        "POST /api/v1/events?exchange=sgad.notifications HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\
         Authorization: Bearer {SERVICE_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Wait until the server closes `s` (EOF or reset); how long it took.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
        }
    }
}

/// A socket that sends nothing, or the start of a request head and then nothing, is closed after
/// `server.header_read_timeout_secs` (before: held forever, one descriptor each).
#[tokio::test]
async fn a_connection_that_sends_no_whole_request_head_is_closed_after_the_header_read_timeout() {
    let gw = spawn_gateway_with(|s| s.server.header_read_timeout_secs = 1).await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = TcpStream::connect(gw.addr).await.unwrap();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: her").await.unwrap();
    let mut trickle = TcpStream::connect(gw.addr).await.unwrap();
    let trickling = tokio::spawn(async move {
        // One byte every 300 ms: each byte arrives in time, the head never does.
        for b in b"GET /healthz HTTP/1.1\r\nHost: herald\r\n" {
            if trickle.write_all(&[*b]).await.is_err() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("the trickling client was never cut off");
    });
    let t = closed_by_server(&mut silent, Duration::from_secs(5)).await;
    assert!(t >= Duration::from_millis(800), "closed too early: {t:?}");
    closed_by_server(&mut partial, Duration::from_secs(5)).await;
    let cut_at = trickling.await.unwrap();
    let _ = cut_at;
    // A whole request in time is served as usual.
    assert_eq!(fresh_request("127.0.0.1", gw.addr, &get_healthz()).await, Some(200));
    assert!(metric(&gw, "herald_http_header_timeouts_total").await >= 3.0);
}

/// What a connection may buffer of a request head is bounded (`server.max_head_bytes`, 32 KiB): an unfinished
/// head past it is answered `431` at once, without waiting for the rest or for the header timeout. Before, hyper
/// buffered up to ~400 KiB per connection until the timeout, and 3,000 such sockets held 1.4 GB. A head under it
/// (a large JWT) is served.
#[tokio::test]
async fn a_request_head_over_its_bound_is_refused_at_once_without_being_buffered_whole() {
    let gw = spawn_gateway().await;
    let header = |i: usize| format!("X-Filler-{i}: {}\r\n", "a".repeat(1000));
    let big = (0..40).map(header).collect::<String>(); // ~40 KiB, and the head never ends
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: herald\r\n{big}").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "answered before the 10 s header timeout");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&buf));
    let token = "t".repeat(20_000);
    let request = format!("GET /healthz?token={token} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n");
    assert_eq!(fresh_request("127.0.0.1", gw.addr, &request).await, Some(200), "a 20 KB head is served");

    // A whole head just over the bound, arriving in one piece: hyper, which checks its buffer only while a head
    // is unfinished, would take it (up to ~56 KiB got through); the bound is exact, and the answer says why in
    // JSON.
    let pad = "p".repeat(33_000);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Pad: {pad}\r\nConnection: close\r\n\r\n");
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default()).expect("a JSON body");
    assert_eq!(body["error"], "request_head_too_large", "{body}");
    // The JSON errors' own answers carry the headers every answer does.
    assert!(answer.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{answer}");
}

/// `server.max_connections`: one connection over the cap is closed at once; the count follows the socket, so
/// an open WebSocket session holds its slot until it closes.
#[tokio::test]
async fn connections_over_the_total_cap_are_closed_at_once_and_sessions_count() {
    let gw = spawn_gateway_with(|s| s.server.max_connections = 3).await;
    let _session = gw.connect("alice").await;
    let idle = TcpStream::connect(gw.addr).await.unwrap();
    let _idle2 = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(fresh_request("127.0.0.1", gw.addr, &get_healthz()).await, None, "over the cap");
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not left hanging");
    drop(idle);
    let mut served = None;
    for _ in 0..50 {
        served = fresh_request("127.0.0.1", gw.addr, &get_healthz()).await;
        if served.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, Some(200), "a freed slot is reused");
    drop(_idle2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(metric(&gw, "herald_connections_refused_total{reason=\"total\"}").await >= 1.0);
}

/// `server.ops_bind`: a gateway at `max_connections` (full, or flooded) still answers its liveness and readiness
/// probes and its scrape on the operators' listener, so an orchestrator does not kill a healthy node; that listener
/// serves nothing else, and its connections take none of the clients' slots.
#[tokio::test]
async fn a_gateway_at_its_connection_cap_still_answers_probes_and_scrapes_on_the_ops_listener() {
    let ops = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let gw = spawn_gateway_with(|s| {
        s.server.max_connections = 2;
        s.server.ops_bind = Some(ops);
    })
    .await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n");
    drop(eventually("the ops listener", WAIT, async || TcpStream::connect(ops).await.ok()).await);
    let _session = gw.connect("alice").await;
    let idle = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fresh_request("127.0.0.1", gw.addr, &get_healthz()).await, None, "the clients' listener is full");

    assert_eq!(fresh_request("127.0.0.1", ops, &get_healthz()).await, Some(200), "liveness");
    assert_eq!(fresh_request("127.0.0.1", ops, &get("/readyz")).await, Some(200), "readiness");
    let mut scrape = TcpStream::connect(ops).await.unwrap();
    scrape.write_all(get("/metrics").as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, scrape.read_to_string(&mut text)).await.unwrap().unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("herald_connections_refused_total{reason=\"total\"}"), "the refusal is scraped: {text}");

    // The scrape is the operators' only: the clients' address does not publish the node's internals.
    drop(_session);
    let answer = eventually("a freed client slot", WAIT, async || {
        let mut tcp = TcpStream::connect(gw.addr).await.ok()?;
        tcp.write_all(get("/metrics").as_bytes()).await.ok()?;
        let mut text = String::new();
        tokio::time::timeout(WAIT, tcp.read_to_string(&mut text)).await.ok()?.ok()?;
        (!text.is_empty()).then_some(text)
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("served on server.ops_bind only") && !answer.contains("herald_"), "{answer}");
    let _session = gw.connect("alice").await;

    // Nothing else is served there: not the API, not a session.
    assert_eq!(fresh_request("127.0.0.1", ops, &post_event("ops")).await, Some(404));
    assert_eq!(fresh_request("127.0.0.1", ops, &get("/ws/alice")).await, Some(404));
    assert_eq!(fresh_request("127.0.0.1", ops, &get("/api/v1/users/alice/notifications")).await, Some(404));

    // Connections held on the ops listener take none of the clients' slots.
    let _held: Vec<TcpStream> = futures_util::future::join_all((0..3).map(|_| TcpStream::connect(ops)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    drop(idle);
    let served =
        eventually("a freed client slot", WAIT, async || fresh_request("127.0.0.1", gw.addr, &get_healthz()).await)
            .await;
    assert_eq!(served, 200);
}

/// `server.max_connections_per_ip`: one source address cannot take more; another is served meanwhile.
#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_and_other_addresses_are_served() {
    let gw = spawn_gateway_with(|s| s.server.max_connections_per_ip = 2).await;
    let _a = connect_from("127.0.0.2", gw.addr).await;
    let _b = connect_from("127.0.0.2", gw.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fresh_request("127.0.0.2", gw.addr, &get_healthz()).await, None, "a third from 127.0.0.2");
    assert_eq!(fresh_request("127.0.0.1", gw.addr, &get_healthz()).await, Some(200));
    assert_eq!(fresh_request("127.0.0.3", gw.addr, &post_event("percap")).await, Some(202));
    assert!(metric(&gw, "herald_connections_refused_total{reason=\"per_ip\"}").await >= 1.0);
}

/// An ingest request with the service key whose body never finishes: it holds an ingest slot until its timeout.
async fn unfinished_ingest(gw: &Gateway) -> TcpStream {
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {SERVICE_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"user_id\":"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// One publisher cannot hold every ingest slot: past `server.ingest_max_concurrency_per_key` requests in flight,
/// its next answers 503 at once while another key's are taken; its share comes back as its requests end. Before,
/// 128 connections sending a body slowly with one narrowly scoped key shut every other publisher out.
#[tokio::test]
async fn one_key_holding_its_share_of_ingest_slots_leaves_the_rest_to_other_keys() {
    const OTHER: &str = "other-publisher-key-0123456789";
    let gw = spawn_gateway_with(|s| {
        s.server.ingest_max_concurrency = 4;
        s.server.ingest_max_concurrency_per_key = 2;
        s.auth.service_keys.push(scoped("other", OTHER, &[herald::config::Scope::Publish]));
    })
    .await;
    // The key's share: two requests whose bodies never finish.
    let slow = vec![unfinished_ingest(&gw).await, unfinished_ingest(&gw).await];
    let event = json!({"user_id": "share", "title": "t", "message": "m", "type": "info"});
    let post = |key: &'static str| gw.post("/api/v1/events?exchange=sgad.notifications", key).json(&event).send();
    let refused = eventually("the key's share is full", WAIT, async || {
        let resp = post(SERVICE_KEY).await.unwrap();
        (resp.status() == 503).then_some(resp)
    })
    .await;
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
    assert!(body["message"].as_str().unwrap().contains("ingest_max_concurrency_per_key"), "{body}");
    // Counted as what it is: a shed, not a store outage (the dashboard showed a slow publisher as one).
    let metrics = gw.raw().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let errors = |reason: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("herald_ingest_errors_total{") && l.contains(&format!("reason=\"{reason}\"")))
    };
    assert!(errors("overloaded") && !errors("store_unavailable"), "{metrics}");
    // Another key still has the slots the first does not hold.
    assert_eq!(post(OTHER).await.unwrap().status(), 202);
    // The share comes back as the slow requests end.
    drop(slow);
    eventually("the key's share is back", WAIT, async || {
        (post(SERVICE_KEY).await.unwrap().status() == 202).then_some(())
    })
    .await;
}

/// HTTP ingest is bounded: `server.ingest_max_concurrency` requests at once (one more answers 503 with
/// Retry-After and a JSON reason at once, instead of queueing), each within `server.ingest_timeout_secs`.
#[tokio::test]
async fn ingest_sheds_over_its_concurrency_limit_and_times_out_slow_requests() {
    let gw = spawn_gateway_with(|s| {
        s.server.ingest_max_concurrency = 1;
        s.server.ingest_timeout_secs = 2;
    })
    .await;
    // The one slot: a request whose body never finishes.
    let mut slow = unfinished_ingest(&gw).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let event = json!({"user_id": "shed", "title": "t", "message": "m", "type": "info"});
    let resp = gw.post_event("sgad.notifications", "", &event).await;
    assert!(started.elapsed() < Duration::from_secs(1), "shed at once, not queued");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");

    // The slow request ends at its timeout, with a JSON 503 of its own.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"error\":\"ingest_timeout\""), "{answer}");

    // The slot is free again.
    assert_eq!(gw.post_event("sgad.notifications", "", &event).await.status(), 202);
}

/// The probe's attack, on the real binary under a 256-descriptor limit: 400 sockets that connect and send
/// nothing or one byte. Before, they took every descriptor and `/healthz` and ingest stopped answering. Now
/// one address is capped (`max_connections_per_ip`), so other clients are served at once while the sockets
/// are held; and when many addresses fill the total cap (the descriptor limit less a reserve, by default), the
/// header-read timeout frees the slots within seconds, the sockets still held on the client side.
#[tokio::test]
async fn half_open_sockets_beyond_the_descriptor_limit_do_not_stop_healthz_or_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let header_timeout = Duration::from_secs(5);
    let config = process_config(
        dir.path(),
        &format!("max_connections_per_ip = 32\nheader_read_timeout_secs = {}", header_timeout.as_secs()),
        "",
    );
    let herald = spawn_herald_process_with(&config, &[], Some(256));
    let addr: std::net::SocketAddr = herald.url.trim_start_matches("http://").parse().unwrap();

    // One attacking address, 400 sockets.
    let attack_started = Instant::now();
    let mut held = Vec::new();
    for i in 0..400 {
        let mut s = connect_from("127.0.0.2", addr).await;
        if i % 2 == 1 {
            let _ = s.write_all(b"G").await;
        }
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fresh_request("127.0.0.1", addr, &get_healthz()).await, Some(200));
    assert_eq!(fresh_request("127.0.0.1", addr, &post_event("fd-1")).await, Some(202));
    // Served while every attacking socket was still held on both sides: before any header-read timeout.
    let t = attack_started.elapsed();
    assert!(t < header_timeout, "served only after {t:?}");

    // Many attacking addresses (13 × 30 = 390 sockets, each address under its cap): the total cap holds.
    for host in 3..16 {
        for _ in 0..30 {
            held.push(connect_from(&format!("127.0.0.{host}"), addr).await);
        }
    }
    let deadline = Instant::now() + header_timeout + Duration::from_secs(6);
    let (mut healthz, mut ingest) = (None, None);
    while Instant::now() < deadline && (healthz.is_none() || ingest.is_none()) {
        if healthz.is_none() {
            healthz = fresh_request("127.0.0.1", addr, &get_healthz()).await;
        }
        if ingest.is_none() {
            ingest = fresh_request("127.0.0.1", addr, &post_event("fd-2")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((healthz, ingest), (Some(200), Some(202)), "served within the header-read timeout");
    assert_eq!(held.len(), 790, "every attacking socket is still held by the client");

    let metrics = reqwest::get(format!("{}/metrics", herald.url)).await.unwrap().text().await.unwrap();
    let refused = |reason: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("herald_connections_refused_total{{reason=\"{reason}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(refused("per_ip") >= 368.0, "{metrics}");
    assert!(refused("total") >= 1.0, "{metrics}");
    // Both deliveries are in the inbox.
    let inbox = |user: &str| {
        let url = format!("{}/api/v1/users/{user}/notifications", herald.url);
        async move {
            let c = reqwest::Client::new();
            c.get(url).bearer_auth(SERVICE_KEY).send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    assert_eq!(inbox("fd-1").await["items"].as_array().unwrap().len(), 1);
    assert_eq!(inbox("fd-2").await["items"].as_array().unwrap().len(), 1);
    drop(held);
}

/// The JSON routes besides ingest (preferences, aliases, the rules' dry run, the dead letters' redrive) read a
/// body only once its caller is authorized, at most 64 KiB of it (the dry run: an event's worth), and only for
/// `server.body_read_timeout_secs`. Before, each read the body first: an unauthenticated client could declare
/// 2 MB, send it a byte at a time, hold the connection indefinitely and have Herald buffer all it sent.
#[tokio::test]
async fn json_bodies_are_read_only_after_authorization_and_only_within_the_body_timeout() {
    let gw = spawn_gateway_with(|s| s.server.body_read_timeout_secs = 1).await;
    let request = |method: &str, path: &str, auth: bool, content_type: &str, length: usize, body: &str| {
        let auth = if auth { format!("Authorization: Bearer {SERVICE_KEY}\r\n") } else { String::new() };
        format!(
            "{method} {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n{auth}Content-Type: {content_type}\r\n\
             Content-Length: {length}\r\n\r\n{body}"
        )
    };
    for (method, path) in [
        ("PUT", "/api/v1/users/alice/preferences"),
        ("PUT", "/api/v1/aliases/student/7"),
        ("POST", "/api/v1/admin/rules/dry-run"),
        ("POST", "/api/v1/admin/dead-letters/redrive"),
    ] {
        // The body is declared and never sent: an answer at all means it was not waited for.
        let refused = request(method, path, false, "application/json", 60_000, "{");
        assert_eq!(
            fresh_request("127.0.0.1", gw.addr, &refused).await,
            Some(401),
            "{method} {path} without credentials"
        );
        let never_whole = request(method, path, true, "application/json", 60_000, "{");
        let timed_out = fresh_request("127.0.0.1", gw.addr, &never_whole).await;
        assert_eq!(timed_out, Some(408), "{method} {path}: a body that never arrives whole");
        let text = request(method, path, true, "text/plain", 2, "{}");
        assert_eq!(fresh_request("127.0.0.1", gw.addr, &text).await, Some(415), "{method} {path}: not JSON");
    }
    // Preferences take up to 1,000 types of 200 bytes (~212 KiB); aliases 64 KiB.
    for (path, limit) in [("/api/v1/users/alice/preferences", 213 * 1024), ("/api/v1/aliases/student/7", 64 * 1024)] {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(limit));
        let over = request("PUT", path, true, "application/json", big.len(), &big);
        assert_eq!(fresh_request("127.0.0.1", gw.addr, &over).await, Some(413), "PUT {path} over {limit} bytes");
    }
    // What these routes answered before still holds for a well-formed request.
    let ok = request("PUT", "/api/v1/aliases/student/7", true, "application/json", 17, r#"{"user_id":"u-7"}"#);
    assert_eq!(fresh_request("127.0.0.1", gw.addr, &ok).await, Some(200));
}

/// A body the client cuts short (it declared more, sent part and closed its side) is a `400 body_read_failed`, on
/// ingest as on the other JSON routes; only a body over the limit is a `413` (before: ingest answered every read
/// failure `413 body_too_large`, telling a client its short body was too large).
#[tokio::test]
async fn a_body_cut_short_is_a_bad_request_and_only_one_over_the_limit_is_too_large() {
    let gw = spawn_gateway_with(|s| s.server.max_body_bytes = 1000).await;
    let answer = |method: &str, path: &str, length: usize, body: &str| {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {SERVICE_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{body}"
        );
        async move {
            let mut s = TcpStream::connect(gw.addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap(); // no more is coming
            let mut buf = Vec::new();
            tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.expect("no answer").unwrap();
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    for (method, path) in [("POST", "/api/v1/events?exchange=sgad.notifications"), ("PUT", "/api/v1/aliases/student/7")]
    {
        let cut = answer(method, path, 100, r#"{"user_id":"#).await;
        assert!(cut.starts_with("HTTP/1.1 400"), "{method} {path}, a body cut short: {cut}");
        assert!(cut.contains(r#""error":"body_read_failed""#), "{cut}");
    }
    let big = format!(r#"{{"user_id":"u","message":"{}"}}"#, "x".repeat(2000));
    let over = answer("POST", "/api/v1/events?exchange=sgad.notifications", big.len(), &big).await;
    assert!(over.starts_with("HTTP/1.1 413"), "{over}");
    assert!(over.contains(r#""error":"body_too_large""#), "{over}");
}

/// A client that sends requests and never reads the answers is cut off once it has taken nothing for
/// `server.write_stall_timeout_secs` (before: the connection stayed open, its descriptor and buffers held, for as
/// long as the client liked).
#[tokio::test]
async fn a_client_that_never_reads_is_closed_after_the_write_stall_timeout() {
    let gw = spawn_gateway_with(|s| {
        s.server.write_stall_timeout_secs = 1;
        s.server.header_read_timeout_secs = 120; // so only the stall can close it
    })
    .await;
    let doc = gw.raw().get(gw.url("/api/openapi.json")).send().await.unwrap().bytes().await.unwrap().len();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.addr).await.unwrap();
    let requests = 200;
    let one = "GET /api/openapi.json HTTP/1.1\r\nHost: herald\r\n\r\n";
    s.write_all(one.repeat(requests).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // reading nothing
    let mut taken = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Err(_) => panic!("still open after reading {taken} bytes"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => taken += n,
        }
    }
    assert!(taken < requests * doc / 2, "closed mid-way: {taken} of {} bytes", requests * doc);
    assert!(metric(&gw, "herald_write_stalls_total").await >= 1.0);
}

/// No answer is sniffed into another type or framed by another site: the JSON API, its errors, the Swagger UI.
#[tokio::test]
async fn every_answer_forbids_sniffing_and_framing() {
    let gw = spawn_gateway().await;
    for (path, status) in [
        ("/api/openapi.json", 200),
        ("/api/docs/", 200),
        ("/api/v1/users/u/notifications", 401),
        ("/no/such/route", 404),
    ] {
        let resp = gw.raw().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let h = resp.headers();
        assert_eq!(h.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{path}");
        assert_eq!(h.get("x-frame-options").map(|v| v.to_str().unwrap()), Some("DENY"), "{path}");
    }
}

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

/// Every error is `{error, message}` JSON: path-parse and query-parse rejections, 405 (a CORS preflight
/// included) and 404.
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
            http.request(reqwest::Method::OPTIONS, gw.url("/api/v1/events"))
                .header("origin", "http://localhost:5173")
                .header("access-control-request-method", "POST"),
            405,
            "method_not_allowed",
        ),
        (http.post(gw.url("/healthz")), 405, "method_not_allowed"),
        (http.delete(gw.url("/api/v1/users/alice/notifications")).bearer_auth(&alice), 405, "method_not_allowed"),
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

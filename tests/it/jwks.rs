//! JWKS and OIDC (issue 15): user tokens verified with keys an identity provider publishes. Each test serves its
//! own provider on 127.0.0.1:0 (`Idp`: a key set, a discovery document, switchable to an outage or garbage)
//! from the static test keys in `tests/fixtures/jwks/`, and talks to a real gateway over HTTP and WebSocket.
//! Nothing is timed: state changes are polled for with a generous deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// What the provider answers at `/jwks`.
#[derive(Clone)]
enum Mode {
    Keys(Value),
    Status(u16),
    Garbage,
}

struct Served {
    jwks: Mode,
    /// The discovery document's `issuer`; `None`: the provider's own base URL.
    issuer: Option<String>,
    /// The discovery document's `jwks_uri`, `{port}` replaced by the provider's; `None`: its own `/jwks`.
    jwks_uri: Option<String>,
    /// `GET /jwks` requests answered.
    hits: u64,
    /// `GET /.well-known/openid-configuration` requests answered.
    discoveries: u64,
}

/// A tiny identity provider: `GET /jwks` and `GET /.well-known/openid-configuration`.
struct Idp {
    base: String,
    served: Arc<Mutex<Served>>,
}

impl Idp {
    async fn start(kids: &[&str]) -> Idp {
        let served = Arc::new(Mutex::new(Served {
            jwks: Mode::Keys(set(kids)),
            issuer: None,
            jwks_uri: None,
            hits: 0,
            discoveries: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/jwks", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state((served.clone(), base.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Idp { base, served }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn serve(&self, mode: Mode) {
        self.served.lock().unwrap().jwks = mode;
    }
}

type IdpState = (Arc<Mutex<Served>>, String);

async fn jwks(State((served, _)): State<IdpState>) -> Response {
    let mode = {
        let mut served = served.lock().unwrap();
        served.hits += 1;
        served.jwks.clone()
    };
    match mode {
        Mode::Keys(set) => ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(set)).into_response(),
        Mode::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Mode::Garbage => ([(header::CONTENT_TYPE, "application/json")], "{\"keys\": [{\"kty\"").into_response(),
    }
}

async fn discovery(State((served, base)): State<IdpState>) -> axum::Json<Value> {
    let (issuer, jwks_uri) = {
        let mut served = served.lock().unwrap();
        served.discoveries += 1;
        let port = base.rsplit(':').next().unwrap();
        let jwks_uri = served.jwks_uri.as_ref().map(|u| u.replace("{port}", port));
        (served.issuer.clone().unwrap_or_else(|| base.clone()), jwks_uri.unwrap_or_else(|| format!("{base}/jwks")))
    };
    axum::Json(json!({ "issuer": issuer, "jwks_uri": jwks_uri, "id_token_signing_alg_values_supported": ["RS256"] }))
}

/// The public JWK of a fixture key, by kid.
fn jwk(kid: &str) -> Value {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/jwks/public.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap_or_else(|| panic!("no key {kid}")).clone()
}

fn set(kids: &[&str]) -> Value {
    json!({ "keys": kids.iter().map(|k| jwk(k)).collect::<Vec<_>>() })
}

/// A token signed with the private fixture key `pem`, its header saying `alg` and `kid`.
fn signed(alg: Algorithm, kid: Option<&str>, pem: &str, claims: &Value) -> String {
    let pem = std::fs::read(repo_path(&format!("tests/fixtures/jwks/{pem}.pem"))).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        other => panic!("{other:?}"),
    }
    .unwrap();
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

fn alg_of(kid: &str) -> Algorithm {
    match &kid[..2] {
        "rs" => Algorithm::RS256,
        "ec" => Algorithm::ES256,
        _ => Algorithm::EdDSA,
    }
}

/// `user`'s token signed by the fixture key `kid`, naming it.
fn token(user: &str, kid: &str) -> String {
    signed(alg_of(kid), Some(kid), kid, &json!({"sub": user, "exp": unix_now() + 600}))
}

async fn jwks_gateway(configure: impl FnOnce(&mut herald::config::Settings)) -> Gateway {
    spawn_gateway_with(|s| {
        s.auth.jwks_min_refresh_secs = 1;
        configure(s);
    })
    .await
}

/// `GET` the user's inbox with `token`: the status and JSON body.
async fn inbox_with(gw: &Gateway, user: &str, token: &str) -> (u16, Value) {
    let resp = gw.get(&format!("/api/v1/users/{user}/notifications"), token).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = gw.raw().get(gw.url("/readyz")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Poll `/readyz` until `done(status, body)`; panic with the last answer at the deadline.
async fn readyz_until(gw: &Gateway, what: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, body) = readyz(gw).await;
        if done(status, &body) {
            return (status, body);
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: /readyz still {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn loaded(gw: &Gateway) -> Value {
    readyz_until(gw, "the key set loads", |s, b| s == 200 && b["checks"]["jwks"]["ok"] == true).await.1
}

/// Retry the inbox with `token` until it answers 200 (a refresh the token asked for lands); every refusal on the
/// way must be the unknown-kid one.
async fn accepted_after_refresh(gw: &Gateway, user: &str, token: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, body) = inbox_with(gw, user, token).await;
        if status == 200 {
            return;
        }
        assert_eq!(status, 401, "{body}");
        assert!(body["message"].as_str().unwrap().contains("unknown key id"), "{body}");
        assert!(tokio::time::Instant::now() < deadline, "the new key never arrived: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_else(|| panic!("no message: {body}"))
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify_against_a_served_key_set() {
    let idp = Idp::start(&["rsa-1", "ec-1", "ed-1"]).await;
    let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks")).await;
    let ready = loaded(&gw).await;
    let detail = ready["checks"]["jwks"]["detail"].as_str().unwrap();
    assert!(detail.contains("3 keys") && detail.contains("\"ec-1\""), "{detail}");
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let (status, body) = inbox_with(&gw, "alice", &token("alice", kid)).await;
        assert_eq!(status, 200, "{kid}: {body}");
        // The user is still the token's: another user's inbox stays closed.
        assert_eq!(inbox_with(&gw, "bob", &token("alice", kid)).await.0, 403, "{kid}");
    }
    // Claims are checked as with a static key: an expired token is refused as expired.
    let expired = signed(Algorithm::EdDSA, Some("ed-1"), "ed-1", &json!({"sub": "alice", "exp": unix_now() - 600}));
    let (status, body) = inbox_with(&gw, "alice", &expired).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_expired")), "{body}");
    // A token signed by a key that is not the one its kid names fails on the signature.
    let forged = signed(Algorithm::RS256, Some("rsa-1"), "rsa-2", &json!({"sub": "alice", "exp": unix_now() + 600}));
    assert_eq!(inbox_with(&gw, "alice", &forged).await.0, 401);
    let metrics = gw.raw().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("herald_jwks_refreshes_total{outcome=\"ok\"}")), "{metrics}");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_handshake_and_refresh_accept_jwks_signed_tokens_and_refuse_an_unknown_kid() {
    let idp = Idp::start(&["ec-1", "ed-1"]).await;
    let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks")).await;
    loaded(&gw).await;
    for kid in ["ec-1", "ed-1"] {
        let url = format!("ws://{}/ws/alice?token={}", gw.addr, token("alice", kid));
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("handshake");
        let mut c = Client { ws };
        assert_eq!(c.frame().await["type"], "ready", "{kid}");
        // An in-session refresh goes through the same key set.
        c.send_text(&json!({"type": "auth", "token": token("alice", "ec-1")}).to_string()).await;
        let ok = c.frame().await;
        assert_eq!(ok["type"], "auth_ok", "{kid}: {ok}");
    }
    let (status, body) = gw.refused(gw.ws_request(&format!("/ws/alice?token={}", token("alice", "rsa-1")))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_credentials", "{body}");
    assert!(message(&body).contains("unknown key id \"rsa-1\""), "{body}");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn rotation_fetches_a_new_kid_on_demand_and_refuses_the_removed_one() {
    let idp = Idp::start(&["rsa-1"]).await;
    let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks")).await;
    loaded(&gw).await;
    assert_eq!(inbox_with(&gw, "alice", &token("alice", "rsa-1")).await.0, 200);

    // The provider rotates: rsa-2 replaces rsa-1. The first rsa-2 token finds a set without it: refused at once,
    // and a refresh is asked for; a retry after it is accepted.
    idp.serve(Mode::Keys(set(&["rsa-2"])));
    let (status, body) = inbox_with(&gw, "alice", &token("alice", "rsa-2")).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("unknown key id \"rsa-2\""), "{body}");
    accepted_after_refresh(&gw, "alice", &token("alice", "rsa-2")).await;

    // The set in force is the new one: the removed key no longer verifies anything.
    let (status, body) = inbox_with(&gw, "alice", &token("alice", "rsa-1")).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("unknown key id \"rsa-1\""), "{body}");
    gw.stop().await.unwrap();
}

/// A provider that replaces its key but keeps its `kid` (or serves one key without any): the new tokens' signatures
/// fail against the cached key, which asks for a refresh as an unknown `kid` does, so they are accepted after it.
/// Before, only an unknown `kid` refreshed: the new key's users were refused until the cached set expired (up to
/// 24 h at the provider's `max-age`).
#[tokio::test]
async fn a_key_replaced_under_the_same_kid_or_without_one_is_fetched_when_its_signature_fails() {
    let relabelled = |kid: &str, to: Option<&str>| {
        let mut k = jwk(kid);
        match to {
            Some(to) => k["kid"] = json!(to),
            None => drop(k.as_object_mut().unwrap().remove("kid")),
        }
        json!({ "keys": [k] })
    };
    for label in [Some("signing"), None] {
        let idp = Idp::start(&[]).await;
        idp.serve(Mode::Keys(relabelled("rsa-1", label)));
        let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks")).await;
        loaded(&gw).await;
        let claims = json!({"sub": "alice", "exp": unix_now() + 600});
        let old = signed(Algorithm::RS256, label, "rsa-1", &claims);
        assert_eq!(inbox_with(&gw, "alice", &old).await.0, 200, "{label:?}");
        idp.serve(Mode::Keys(relabelled("rsa-2", label)));
        let new = signed(Algorithm::RS256, label, "rsa-2", &claims);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, body) = inbox_with(&gw, "alice", &new).await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 401, "{body}");
            assert!(message(&body).contains("signature does not match"), "{label:?}: {body}");
            assert!(tokio::time::Instant::now() < deadline, "{label:?}: the replaced key was never fetched: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, body) = inbox_with(&gw, "alice", &old).await;
        assert_eq!(status, 401, "{label:?}: the replaced key verifies nothing: {body}");
        gw.stop().await.unwrap();
    }
}

#[tokio::test]
async fn made_up_kids_cannot_make_the_gateway_fetch_more_than_once_per_interval() {
    let idp = Idp::start(&["rsa-1"]).await;
    let gw = jwks_gateway(|s| {
        s.auth.jwks_url = idp.url("/jwks");
        s.auth.jwks_min_refresh_secs = 3600;
    })
    .await;
    loaded(&gw).await;
    let claims = json!({"sub": "alice", "exp": unix_now() + 600});
    for i in 0..50 {
        let t = signed(Algorithm::RS256, Some(&format!("made-up-{i}")), "rsa-1", &claims);
        let (status, body) = inbox_with(&gw, "alice", &t).await;
        assert_eq!(status, 401, "{body}");
    }
    // The first refresh they asked for may run only an hour after the load: the provider saw one request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(idp.served.lock().unwrap().hits, 1, "a token with an unknown kid fetched the key set");
    assert_eq!(inbox_with(&gw, "alice", &token("alice", "rsa-1")).await.0, 200);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_key_in_the_set_is_skipped_and_the_others_verify() {
    let mut off_curve = jwk("ec-1");
    off_curve["kid"] = json!("off-curve");
    off_curve["y"] = off_curve["x"].clone();
    let symmetric = json!({"kty": "oct", "kid": "hs", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"});
    let keys = json!({ "keys": [off_curve, jwk("rsa-weak"), symmetric, {"kty": "RSA", "kid": "junk", "n": 7}, jwk("ec-1"), jwk("ed-1")] });
    let idp = Idp::start(&[]).await;
    idp.serve(Mode::Keys(keys));
    let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks")).await;
    let ready = loaded(&gw).await;
    let detail = ready["checks"]["jwks"]["detail"].as_str().unwrap();
    assert!(detail.contains("2 keys") && detail.contains("4 skipped"), "{detail}");
    assert_eq!(inbox_with(&gw, "alice", &token("alice", "ec-1")).await.0, 200);
    assert_eq!(inbox_with(&gw, "alice", &token("alice", "ed-1")).await.0, 200);
    // The 1024-bit RSA key was skipped, so a token it signs names an unknown key.
    let (status, body) = inbox_with(&gw, "alice", &token("alice", "rsa-weak")).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("unknown key id"), "{body}");
    // An HS256 token "signed" with the published symmetric key is refused by algorithm.
    let hs = jsonwebtoken::encode(
        &Header { kid: Some("hs".into()), ..Header::new(Algorithm::HS256) },
        &json!({"sub": "alice", "exp": unix_now() + 600}),
        &EncodingKey::from_secret(b"secret-secret-secret"),
    )
    .unwrap();
    let (status, body) = inbox_with(&gw, "alice", &hs).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("HS256 is not accepted"), "{body}");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn an_outage_or_garbage_after_the_first_load_keeps_the_last_good_set_and_readiness() {
    let idp = Idp::start(&["ed-1"]).await;
    let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks")).await;
    loaded(&gw).await;
    for (mode, shows) in [(Mode::Status(503), "HTTP 503"), (Mode::Garbage, "not a JWK set")] {
        idp.serve(mode);
        // A token with an unknown kid asks for a refresh, which fails.
        assert_eq!(inbox_with(&gw, "alice", &token("alice", "rsa-2")).await.0, 401);
        let (status, body) =
            readyz_until(&gw, shows, |_, b| b["checks"]["jwks"]["detail"].as_str().is_some_and(|d| d.contains(shows)))
                .await;
        assert_eq!(status, 200, "still ready on the last good set: {body}");
        assert_eq!(body["checks"]["jwks"]["ok"], true, "{body}");
        assert!(message_of_detail(&body).contains("last good set (1 keys)"), "{body}");
        let (status, body) = inbox_with(&gw, "alice", &token("alice", "ed-1")).await;
        assert_eq!(status, 200, "the kept key still verifies: {body}");
    }
    gw.stop().await.unwrap();
}

fn message_of_detail(body: &Value) -> &str {
    body["checks"]["jwks"]["detail"].as_str().unwrap()
}

#[tokio::test]
async fn a_key_set_that_never_loaded_is_not_ready_and_tokens_are_refused_with_a_reason() {
    let idp = Idp::start(&["rsa-1"]).await;
    idp.serve(Mode::Status(500));
    // An address carrying a function key: `/readyz` (unauthenticated) and the logs name it without the key.
    let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks?code=hunter2-fn-key")).await;
    let (status, body) = readyz_until(&gw, "the first fetch fails", |_, b| {
        b["checks"]["jwks"]["detail"].as_str().is_some_and(|d| d.contains("never loaded"))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["checks"]["jwks"]["ok"], false, "{body}");
    assert!(message_of_detail(&body).contains("HTTP 500"), "{body}");
    assert!(message_of_detail(&body).contains("code=***"), "{body}");
    assert!(!body.to_string().contains("hunter2"), "the function key is not shown: {body}");

    let (status, body) = inbox_with(&gw, "alice", &token("alice", "rsa-1")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_credentials", "{body}");
    assert!(message(&body).contains("have not loaded yet"), "{body}");

    // The provider comes back: the retry loads it, and the gateway becomes ready.
    idp.serve(Mode::Keys(set(&["rsa-1"])));
    loaded(&gw).await;
    assert_eq!(inbox_with(&gw, "alice", &token("alice", "rsa-1")).await.0, 200);
    gw.stop().await.unwrap();
}

/// A provider that cannot be reached: the client's own error (which names the address it tried) is shown without
/// its address, so a key in the query does not reach `/readyz` that way either.
#[tokio::test]
async fn an_unreachable_key_set_is_not_ready_and_its_address_keeps_its_key_out_of_readyz() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks?sig=hunter2-signature", closed.local_addr().unwrap());
    drop(closed);
    let gw = jwks_gateway(|s| s.auth.jwks_url = url).await;
    let (status, body) = readyz_until(&gw, "the first fetch fails", |_, b| {
        b["checks"]["jwks"]["detail"].as_str().is_some_and(|d| d.contains("never loaded"))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(message_of_detail(&body).contains("sig=***"), "{body}");
    assert!(!body.to_string().contains("hunter2"), "the signature is not shown: {body}");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn oidc_discovery_finds_the_key_set_and_makes_the_issuer_required() {
    let idp = Idp::start(&["rsa-1", "ec-1"]).await;
    let issuer = idp.base.clone();
    let gw = jwks_gateway(|s| s.auth.oidc_issuer = issuer.clone()).await;
    let ready = loaded(&gw).await;
    assert!(message_of_detail(&ready).contains("/jwks"), "{ready}");
    let claims = |iss: Option<&str>| {
        let mut c = json!({"sub": "alice", "exp": unix_now() + 600});
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        c
    };
    let good = signed(Algorithm::ES256, Some("ec-1"), "ec-1", &claims(Some(&issuer)));
    assert_eq!(inbox_with(&gw, "alice", &good).await.0, 200);
    let (status, body) = inbox_with(&gw, "alice", &signed(Algorithm::ES256, Some("ec-1"), "ec-1", &claims(None))).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("iss"), "{body}");
    let other = signed(Algorithm::RS256, Some("rsa-1"), "rsa-1", &claims(Some("https://evil.example")));
    assert_eq!(inbox_with(&gw, "alice", &other).await.0, 401);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn oidc_discovery_is_read_once_and_again_only_after_the_key_set_fails() {
    let idp = Idp::start(&["rsa-1"]).await;
    let issuer = idp.base.clone();
    let gw = jwks_gateway(|s| s.auth.oidc_issuer = issuer.clone()).await;
    loaded(&gw).await;
    let signed_by = |kid: &str| {
        let claims = json!({"sub": "alice", "exp": unix_now() + 600, "iss": issuer});
        signed(alg_of(kid), Some(kid), kid, &claims)
    };
    // A rotation refreshes the key set from the jwks_uri found at start, without reading discovery again.
    idp.serve(Mode::Keys(set(&["rsa-2"])));
    accepted_after_refresh(&gw, "alice", &signed_by("rsa-2")).await;
    let (hits, discoveries) = {
        let s = idp.served.lock().unwrap();
        (s.hits, s.discoveries)
    };
    assert!(hits >= 2, "the rotation fetched the key set again ({hits} fetches)");
    assert_eq!(discoveries, 1, "discovery was read again for a key-set refresh");

    // The key set fails (the provider moved it): the next attempt goes back to discovery.
    idp.serve(Mode::Status(404));
    assert_eq!(inbox_with(&gw, "alice", &signed_by("rsa-1")).await.0, 401, "unknown kid asks for a refresh");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while idp.served.lock().unwrap().discoveries < 2 {
        assert!(std::time::Instant::now() < deadline, "a failed key-set fetch never led back to discovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn oidc_discovery_naming_another_issuer_is_refused_and_not_ready() {
    let idp = Idp::start(&["rsa-1"]).await;
    idp.served.lock().unwrap().issuer = Some("https://evil.example".into());
    let issuer = idp.base.clone();
    let gw = jwks_gateway(|s| s.auth.oidc_issuer = issuer).await;
    let (status, body) = readyz_until(&gw, "discovery is refused", |_, b| {
        b["checks"]["jwks"]["detail"].as_str().is_some_and(|d| d.contains("names issuer"))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(message_of_detail(&body).contains("evil.example"), "{body}");
    gw.stop().await.unwrap();
}

/// `/readyz` once the key set's check says `why` it failed.
async fn refused(gw: &Gateway, why: &'static str) -> (u16, Value) {
    readyz_until(gw, why, move |_, b| b["checks"]["jwks"]["detail"].as_str().is_some_and(|d| d.contains(why))).await
}

/// The key set a discovery document names meets what `auth.jwks_url` must: an issuer on loopback (a sidecar)
/// cannot point a production node at keys over plain http elsewhere, nor at an address with credentials, whose
/// password would then be printed.
#[tokio::test]
async fn a_discovered_key_set_must_be_an_address_jwks_url_could_be() {
    use herald::config::Profile;
    let idp = Idp::start(&["rsa-1"]).await;
    let gateway = |profile: Profile| {
        let issuer = idp.base.clone();
        jwks_gateway(move |s| {
            s.auth.oidc_issuer = issuer;
            s.auth.profile = profile;
        })
    };
    let claims = json!({"sub": "alice", "exp": unix_now() + 600, "iss": idp.base});
    let good = signed(Algorithm::RS256, Some("rsa-1"), "rsa-1", &claims);
    // 0.0.0.0 reaches this machine but is not a loopback address: plain http to it is what a remote host gets.
    idp.served.lock().unwrap().jwks_uri = Some("http://0.0.0.0:{port}/jwks".into());
    let gw = gateway(Profile::Production).await;
    let (status, body) = refused(&gw, "keys must come over https://").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(inbox_with(&gw, "alice", &good).await.0, 401);
    gw.stop().await.unwrap();
    // In development the same address serves (as `auth.jwks_url` may be plain http there).
    let gw = gateway(Profile::Development).await;
    loaded(&gw).await;
    assert_eq!(inbox_with(&gw, "alice", &good).await.0, 200);
    gw.stop().await.unwrap();

    idp.served.lock().unwrap().jwks_uri = Some("http://herald:hunter2@127.0.0.1:{port}/jwks".into());
    for profile in [Profile::Production, Profile::Development] {
        let gw = gateway(profile).await;
        let (status, body) = refused(&gw, "holds credentials").await;
        assert_eq!(status, 503, "{body}");
        assert!(!body.to_string().contains("hunter2"), "{body}");
        gw.stop().await.unwrap();
    }
}

/// A token that is not a JWT, or names an algorithm no key can have, is refused in the words a static key uses,
/// never the JWT library's ("Base64 error: …", "JSON error: unknown variant `none`…").
#[tokio::test]
async fn malformed_tokens_are_refused_in_words_that_point_at_the_fix() {
    use base64::Engine;
    let idp = Idp::start(&["rsa-1"]).await;
    let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks")).await;
    loaded(&gw).await;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = b64(json!({"sub": "alice", "exp": unix_now() + 600}));
    for (token, said) in [
        ("not-a-token".to_owned(), "nor a user token (a JWT"),
        ("%%%.%%%.%%%".to_owned(), "not a JWT"),
        (format!("{}.{claims}.", b64(json!({"alg": "none"}))), "the token's algorithm `none` is not accepted"),
        (format!("{}.{claims}.sig", b64(json!({"typ": "JWT"}))), "has no algorithm"),
    ] {
        let (status, body) = inbox_with(&gw, "alice", &token).await;
        assert_eq!(status, 401, "{token}: {body}");
        assert!(message(&body).contains(said), "{token}: {body}");
        for library in ["Base64 error", "JSON error", "InvalidToken"] {
            assert!(!message(&body).contains(library), "{token}: {body}");
        }
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_whose_alg_is_not_its_keys_is_refused() {
    let idp = Idp::start(&["rsa-1", "ec-1"]).await;
    let gw = jwks_gateway(|s| s.auth.jwks_url = idp.url("/jwks")).await;
    loaded(&gw).await;
    let claims = json!({"sub": "alice", "exp": unix_now() + 600});
    // Signed by the EC key, its header naming the RSA key's kid.
    let (status, body) = inbox_with(&gw, "alice", &signed(Algorithm::ES256, Some("rsa-1"), "ec-1", &claims)).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("verifies RS256, not the token's ES256"), "{body}");
    // HS256 keyed with the RSA key's public modulus: the classic confusion, refused by algorithm.
    let n = jwk("rsa-1")["n"].as_str().unwrap().to_owned();
    let hs = jsonwebtoken::encode(
        &Header { kid: Some("rsa-1".into()), ..Header::new(Algorithm::HS256) },
        &claims,
        &EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    let (status, body) = inbox_with(&gw, "alice", &hs).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("HS256 is not accepted"), "{body}");
    // Without kid, with two keys in the set: no key can be chosen.
    let (status, body) = inbox_with(&gw, "alice", &signed(Algorithm::ES256, None, "ec-1", &claims)).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("no `kid`"), "{body}");
    // An algorithm left out of auth.jwks_algorithms is refused even with its key present.
    let gw2 = jwks_gateway(|s| {
        s.auth.jwks_url = idp.url("/jwks");
        s.auth.jwks_algorithms = vec![herald::config::JwksAlgorithm::RS256];
    })
    .await;
    loaded(&gw2).await;
    let (status, body) = inbox_with(&gw2, "alice", &token("alice", "ec-1")).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("ES256 is not accepted"), "{body}");
    assert_eq!(inbox_with(&gw2, "alice", &token("alice", "rsa-1")).await.0, 200);
    gw.stop().await.unwrap();
    gw2.stop().await.unwrap();
}

//! CORS on the REST API: real preflights (OPTIONS with Origin, Access-Control-Request-Method and -Headers) and
//! cross-origin requests, for allowed and refused origins. (The browser's side: web-demo/e2e/cors.test.mjs.)

use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::support::*;

const APP: &str = "https://app.example.com";

fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str, headers: &str) -> reqwest::RequestBuilder {
    gw.raw()
        .request(Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

fn cors_headers(h: &HeaderMap) -> Vec<String> {
    h.keys().map(|k| k.as_str().to_owned()).filter(|k| k.starts_with("access-control-")).collect()
}

fn lists(value: &str, item: &str) -> bool {
    value.split(',').any(|v| v.trim().eq_ignore_ascii_case(item))
}

/// Before: `405`. Now every REST route answers a preflight from an allowed origin with that origin, the methods
/// and headers the API uses, and a max-age; no credentials. The request that follows carries the origin too.
#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_and_cached() {
    let gw = spawn_gateway_with(|s| s.server.cors_allowed_origins = Some(vec![APP.into()])).await;
    for (path, method, headers) in [
        ("/api/v1/users/alice/notifications", "GET", "authorization"),
        ("/api/v1/users/alice/notifications/read_all", "POST", "authorization"),
        ("/api/v1/users/alice/notifications/7", "DELETE", "authorization"),
        ("/api/v1/events", "POST", "authorization,content-type,idempotency-key"),
        ("/api/v1/aliases/student/7", "PUT", "authorization,content-type"),
    ] {
        let resp = preflight(&gw, path, APP, method, headers).send().await.unwrap();
        let what = format!("OPTIONS {path} for {method}");
        assert_eq!(resp.status(), 200, "{what}");
        let h = resp.headers();
        assert_eq!(header(h, "access-control-allow-origin"), APP, "{what}");
        assert!(lists(header(h, "access-control-allow-methods"), method), "{what}: {h:?}");
        for wanted in headers.split(',') {
            assert!(lists(header(h, "access-control-allow-headers"), wanted), "{what}: {wanted} in {h:?}");
        }
        assert_eq!(header(h, "access-control-max-age"), "600", "{what}");
        assert!(h.get("access-control-allow-credentials").is_none(), "{what}: bearer tokens, never cookies");
        assert!(lists(header(h, "vary"), "origin"), "{what}: caches key on Origin: {h:?}");
    }
    // Every method the published document gives a CORS route (the inbox, ingest, aliases) is allowed.
    let doc: serde_json::Value = gw.raw().get(gw.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !["/api/v1/users/", "/api/v1/events", "/api/v1/aliases/"].iter().any(|p| path.starts_with(p)) {
            continue;
        }
        let concrete =
            path.replace("{user_id}", "alice").replace("{id}", "7").replace("{kind}", "k").replace("{alias}", "a");
        for method in ops.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let method = method.to_uppercase();
            let resp = preflight(&gw, &concrete, APP, &method, "authorization").send().await.unwrap();
            let allowed = header(resp.headers(), "access-control-allow-methods").to_owned();
            assert!(lists(&allowed, &method), "{method} {path}: a documented method the preflight refuses ({allowed})");
            checked += 1;
        }
    }
    assert!(checked > 15, "{checked} operations checked");
    let alice = gw.token("alice");
    let resp = gw.get("/api/v1/users/alice/notifications", &alice).header("origin", APP).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), APP);
    assert!(lists(header(resp.headers(), "access-control-expose-headers"), "retry-after"));
    // Origins compare as the WebSocket handshake compares them: ASCII case aside.
    let resp = preflight(&gw, "/api/v1/events", "https://APP.example.com", "POST", "authorization").send().await;
    assert_eq!(header(resp.unwrap().headers(), "access-control-allow-origin"), "https://APP.example.com");
}

/// A refused origin gets no CORS header at all, on the preflight and on the request (which the server still
/// answers: the browser is what withholds it from the page).
#[tokio::test]
async fn a_refused_origin_gets_no_cors_headers() {
    let gw = spawn_gateway_with(|s| s.server.cors_allowed_origins = Some(vec![APP.into()])).await;
    for origin in ["https://evil.example", "https://app.example.com.evil.example", "http://app.example.com", "null"] {
        let resp =
            preflight(&gw, "/api/v1/users/alice/notifications", origin, "GET", "authorization").send().await.unwrap();
        assert!(cors_headers(resp.headers()).is_empty(), "{origin}: {:?}", resp.headers());
        let resp = gw
            .get("/api/v1/users/alice/notifications", &gw.token("alice"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(cors_headers(resp.headers()).is_empty(), "{origin}: {:?}", resp.headers());
    }
}

/// Unset, `server.cors_allowed_origins` is `websocket.allowed_origins`; `*` answers `*` (without credentials);
/// `[]` allows no origin.
#[tokio::test]
async fn cors_follows_the_websocket_origins_unless_set_and_star_allows_any() {
    let gw = spawn_gateway().await;
    let allowed = gw.settings.websocket.allowed_origins[0].clone();
    let resp = preflight(&gw, "/api/v1/events", &allowed, "POST", "authorization").send().await.unwrap();
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), allowed);
    let resp = preflight(&gw, "/api/v1/events", APP, "POST", "authorization").send().await.unwrap();
    assert!(cors_headers(resp.headers()).is_empty());

    let gw = spawn_gateway_with(|s| s.websocket.allowed_origins = vec!["*".into()]).await;
    let resp = preflight(&gw, "/api/v1/events", APP, "POST", "authorization").send().await.unwrap();
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), "*");
    assert!(resp.headers().get("access-control-allow-credentials").is_none());

    let gw = spawn_gateway_with(|s| {
        s.websocket.allowed_origins = vec!["*".into()];
        s.server.cors_allowed_origins = Some(vec![]);
    })
    .await;
    let resp = preflight(&gw, "/api/v1/events", APP, "POST", "authorization").send().await.unwrap();
    assert!(cors_headers(resp.headers()).is_empty(), "{:?}", resp.headers());
}

/// CORS covers the REST API only: `/healthz` and `/ws` still answer an OPTIONS with a JSON 405.
#[tokio::test]
async fn routes_outside_the_rest_api_carry_no_cors() {
    let gw = spawn_gateway_with(|s| s.server.cors_allowed_origins = Some(vec![APP.into()])).await;
    for path in ["/healthz", "/ws/alice"] {
        let resp = preflight(&gw, path, APP, "GET", "authorization").send().await.unwrap();
        assert_eq!(resp.status(), 405, "{path}");
        assert!(cors_headers(resp.headers()).is_empty(), "{path}: {:?}", resp.headers());
    }
}

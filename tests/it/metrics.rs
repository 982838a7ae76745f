//! Metrics: every family `/metrics` shows has a `# HELP`, every metric the source emits is described, and HTTP
//! requests are counted by matched route template, never by raw path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use herald::telemetry::{Kind, METRICS};
use serde_json::json;

use crate::support::*;

/// `(kind, name)` of every `counter!`/`gauge!`/`histogram!` call in the Rust files under `dir`. A name that is
/// not a string literal fails: this test (and the HELP it guards) must be able to see every metric.
fn emitted_metrics(dir: &Path, found: &mut BTreeSet<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            emitted_metrics(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for kind in ["counter", "gauge", "histogram"] {
            let call = format!("{kind}!(");
            for (at, _) in text.match_indices(&call) {
                // `describe_counter!(` is not an emission.
                if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let rest = text[at + call.len()..].trim_start();
                let name = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split_once('"'))
                    .map(|(name, _)| name.to_owned())
                    .unwrap_or_else(|| {
                        panic!("{}: a metric name must be a string literal: {kind}!({rest:.40}", path.display())
                    });
                found.insert((kind.to_owned(), name));
            }
        }
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

#[test]
fn every_metric_the_source_emits_is_described_with_its_kind() {
    let mut emitted = BTreeSet::new();
    emitted_metrics(&repo_path("src"), &mut emitted);
    assert!(emitted.len() >= 30, "the scan found the metrics: {emitted:?}");
    let described: BTreeMap<&str, &str> = METRICS.iter().map(|m| (m.name, kind_name(m.kind))).collect();
    assert_eq!(described.len(), METRICS.len(), "a metric is described twice");

    let undescribed: Vec<_> = emitted.iter().filter(|(k, n)| described.get(n.as_str()) != Some(&k.as_str())).collect();
    assert!(
        undescribed.is_empty(),
        "emitted without a description of that kind in telemetry::METRICS: {undescribed:?}"
    );
    let emitted_names: BTreeSet<&str> = emitted.iter().map(|(_, n)| n.as_str()).collect();
    let unused: Vec<_> = described.keys().filter(|n| !emitted_names.contains(*n)).collect();
    assert!(unused.is_empty(), "described but never emitted: {unused:?}");
    for m in METRICS {
        assert!(m.name.starts_with("herald_"), "{}", m.name);
        assert!(!m.help.trim().is_empty(), "{} has an empty help text", m.name);
    }
}

/// Families of the `herald_` samples in a scrape, and the families with a `# HELP` and a `# TYPE` line.
struct Scrape {
    sampled: BTreeSet<String>,
    helped: BTreeSet<String>,
    typed: BTreeMap<String, String>,
}

fn parse(text: &str) -> Scrape {
    let mut s = Scrape { sampled: BTreeSet::new(), helped: BTreeSet::new(), typed: BTreeMap::new() };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            s.helped.insert(rest.split(' ').next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            s.typed.insert(name.to_owned(), kind.to_owned());
        } else if line.starts_with("herald_") {
            let name = line.split(['{', ' ']).next().unwrap();
            s.sampled.insert(name.to_owned());
        }
    }
    // A histogram's samples are `_bucket`, `_sum` and `_count` of its family.
    s.sampled = s
        .sampled
        .iter()
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| n.strip_suffix(suffix))
                .find(|family| s.typed.get(*family).is_some_and(|k| k == "histogram"))
                .unwrap_or(n)
                .to_owned()
        })
        .collect();
    s
}

async fn scrape(gw: &Gateway) -> String {
    let resp = gw.raw().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn every_herald_family_on_metrics_has_help_after_real_traffic() {
    let gw = spawn_gateway().await;
    // Exercise the paths: a session that receives a live notification, HTTP ingest (stored and refused), a
    // handshake refused, the REST inbox, readiness.
    let mut client = gw.connect("123").await;
    gw.post_fixture("http-user-registered.json").await;
    client.notification().await;
    let refused = gw.post_event("", "", &json!("not an event")).await;
    assert!(refused.status().is_client_error());
    let (status, _) = gw.refused(gw.ws_request("/ws/123?token=forged")).await;
    assert_eq!(status, 401);
    gw.inbox("123").await;
    assert_eq!(gw.raw().get(gw.url("/readyz")).send().await.unwrap().status(), 200);
    drop(client);

    let s = parse(&scrape(&gw).await);
    for expected in [
        "herald_connections",
        "herald_sessions_opened_total",
        "herald_ingest_events_total",
        "herald_ingest_errors_total",
        "herald_notifications_delivered_total",
        "herald_delivery_latency_seconds",
        "herald_ws_rejected_total",
        "herald_http_requests_total",
        "herald_http_request_duration_seconds",
        "herald_ready",
    ] {
        assert!(s.sampled.contains(expected), "{expected} is exported after this traffic: {:?}", s.sampled);
    }
    let without_help: Vec<_> = s.sampled.iter().filter(|f| !s.helped.contains(*f)).collect();
    assert!(without_help.is_empty(), "families without # HELP: {without_help:?}");
    let without_type: Vec<_> = s.sampled.iter().filter(|f| !s.typed.contains_key(*f)).collect();
    assert!(without_type.is_empty(), "families without # TYPE: {without_type:?}");
}

#[tokio::test]
async fn http_requests_are_counted_by_route_template_not_raw_path() {
    let gw = spawn_gateway().await;
    let user = "alice-metrics";
    gw.inbox(user).await;
    let resp = gw.get(&format!("/api/v1/users/{user}/notifications"), "not-a-token").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = gw.raw().get(gw.url(&format!("/nowhere/{user}"))).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let text = scrape(&gw).await;
    let http: Vec<&str> = text.lines().filter(|l| l.starts_with("herald_http_")).collect();
    let has = |prefix: &str, parts: &[&str]| {
        http.iter().any(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
    };
    let inbox = r#"route="/api/v1/users/{user_id}/notifications""#;
    assert!(has("herald_http_requests_total{", &[r#"method="GET""#, inbox, r#"status="200""#]), "{http:#?}");
    assert!(has("herald_http_requests_total{", &[r#"method="GET""#, inbox, r#"status="401""#]), "{http:#?}");
    assert!(has("herald_http_requests_total{", &[r#"route="fallback""#, r#"status="404""#]), "{http:#?}");
    assert!(has("herald_http_request_duration_seconds_count{", &[r#"method="GET""#, inbox]), "{http:#?}");
    assert!(!has("herald_http_request_duration_seconds_bucket{", &["status="]), "no status label on the histogram");
    assert!(http.iter().all(|l| !l.contains(user)), "a raw path leaked into a label: {http:#?}");
}

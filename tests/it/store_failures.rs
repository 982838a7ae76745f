//! Issue 13 (7): a store that cannot write answers 503 and reports not ready, then recovers by itself.
//!
//! Tests run as root here, where `chmod` stops nothing: the read-only case makes the files immutable with
//! `chattr +i` (which stops writes through descriptors already open, as a read-only remount would).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

async fn post(gw: &Gateway, title: &str) -> reqwest::Response {
    gw.post_event("sgad.notifications", "", &json!({"user_id": "sf", "title": title, "message": "m", "type": "info"}))
        .await
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = gw.raw().get(gw.url("/readyz")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Poll `/readyz` until it answers `status` (the probe write runs every second while writes fail).
async fn wait_ready(gw: &Gateway, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, body) = readyz(gw).await;
        if got == status {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz still {got}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database files made immutable for as long as it lives.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` when this file system or user cannot set the attribute.
    fn set(files: Vec<PathBuf>) -> Option<Immutable> {
        let ok = Command::new("chattr").arg("+i").args(&files).status().is_ok_and(|s| s.success());
        let guard = Immutable(files);
        ok.then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

fn db_files(dir: &Path) -> Vec<PathBuf> {
    ["herald.db", "herald.db-wal"].iter().map(|f| dir.join(f)).filter(|p| p.exists()).collect()
}

#[tokio::test]
async fn a_read_only_database_answers_503_and_is_not_ready_until_a_write_succeeds_again() {
    let gw = spawn_gateway().await;
    assert_eq!(post(&gw, "before").await.status(), 202);
    assert_eq!(readyz(&gw).await.0, 200);

    let Some(immutable) = Immutable::set(db_files(gw.dir.path())) else {
        assert!(std::env::var_os("CI").is_none(), "CI must run it: chattr +i failed");
        eprintln!("SKIPPED: chattr +i is not available here");
        return;
    };
    let refused = post(&gw, "refused").await;
    assert_eq!(refused.status(), 503, "a write the disk refuses is retryable, not a 500");
    let body = wait_ready(&gw, 503).await;
    assert_eq!(body["checks"]["store_writes"]["ok"], false, "{body}");
    assert!(body["checks"]["store_writes"]["detail"].as_str().unwrap().contains("last write failed"), "{body}");

    // Writable again: the probe write brings readiness back without any traffic.
    drop(immutable);
    let body = wait_ready(&gw, 200).await;
    assert_eq!(body["checks"]["store_writes"]["ok"], true, "{body}");
    assert_eq!(post(&gw, "after").await.status(), 202);
    let titles: Vec<Value> =
        gw.inbox("sf").await["items"].as_array().unwrap().iter().map(|n| n["title"].clone()).collect();
    assert_eq!(titles, [json!("after"), json!("before")], "the refused event was not stored");
}

#[tokio::test]
async fn a_deleted_database_file_refuses_writes_and_is_not_ready() {
    let gw = spawn_gateway().await;
    assert_eq!(post(&gw, "before").await.status(), 202);
    let path = gw.dir.path().join("herald.db");
    let aside = gw.dir.path().join("aside.db");
    std::fs::rename(&path, &aside).unwrap();

    // `/readyz` checks the file itself: not ready before any write is attempted.
    let body = wait_ready(&gw, 503).await;
    assert_eq!(body["checks"]["store"]["ok"], false, "{body}");
    assert!(body["checks"]["store"]["detail"].as_str().unwrap().contains("gone"), "{body}");
    let refused = post(&gw, "refused").await;
    assert_eq!(refused.status(), 503, "not acknowledged into an unlinked file");
    assert_eq!(wait_ready(&gw, 503).await["checks"]["store_writes"]["ok"], false);

    std::fs::rename(&aside, &path).unwrap();
    wait_ready(&gw, 200).await;
    assert_eq!(post(&gw, "after").await.status(), 202);
    assert_eq!(gw.inbox("sf").await["items"].as_array().unwrap().len(), 2, "before and after, not the refused one");
}

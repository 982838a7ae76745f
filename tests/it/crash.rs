//! A kill -9 right after a 202 loses nothing: the real binary, a real SIGKILL, a restart on the same file. And
//! the real binary's process settings (transparent huge pages).

use serde_json::{json, Value};

use crate::support::*;

/// A config file in `dir`: the real binary on a free port, SQLite at `synchronous = full` in `dir`, the shipped
/// rules, and `server` lines appended to `[server]`.
fn sqlite_config(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\ndemo_dir = \"\"\n{server}[store]\nurl = \"sqlite://{}\"\nsynchronous = \"full\"\n[rules]\npath = \"{}\"\n",
            dir.join("herald.db").display(),
            repo_path("config/rules.toml").display()
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn kill_9_right_after_202_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path(), "");
    let http = reqwest::Client::new();
    let (mut child, addr) = spawn_herald_process(&config);
    let mut ids = Vec::new();
    for i in 0..20 {
        let resp = http
            .post(format!("{addr}/api/v1/events?exchange=sgad.notifications"))
            .bearer_auth(SERVICE_KEY)
            .json(&json!({"user_id": "crash", "title": format!("n{i}"), "message": "m", "type": "info"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        ids.push(resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap());
    }
    // SIGKILL immediately after the last 202: no chance to flush anything else.
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, addr) = spawn_herald_process(&config);
    let page: Value = http
        .get(format!("{addr}/api/v1/users/crash/notifications?limit=100"))
        .bearer_auth(SERVICE_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut got: Vec<i64> = page["items"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect();
    got.reverse();
    assert_eq!(got, ids, "every acknowledged notification survived the kill");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `THP_enabled` of a process, from `/proc/<pid>/status`: 0 once it turned transparent huge pages off for itself.
fn thp_enabled(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim().to_owned()).unwrap()
}

/// The served binary runs without transparent huge pages unless `server.transparent_huge_pages = true`, which
/// leaves the process as it was started (here: as this test process is).
#[test]
fn the_served_process_runs_without_transparent_huge_pages_unless_allowed() {
    for (allow, expected) in [(false, "0".to_owned()), (true, thp_enabled("self"))] {
        let dir = tempfile::tempdir().unwrap();
        let config = sqlite_config(dir.path(), &format!("transparent_huge_pages = {allow}\n"));
        let (mut child, _addr) = spawn_herald_process(&config);
        let got = thp_enabled(&child.id().to_string());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(got, expected, "THP_enabled with transparent_huge_pages = {allow}");
    }
}

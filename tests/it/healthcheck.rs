//! `herald healthcheck` (the container image's HEALTHCHECK, so the image needs no curl): the real binary against
//! a real gateway process, a closed port, a wrong path and a peer that never answers.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald")).arg("healthcheck").args(args).envs(env.iter().copied()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A gateway process on 127.0.0.1:<ephemeral>, with its config file: (child, "http://127.0.0.1:port", config).
fn gateway() -> (std::process::Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\ndemo_dir = \"\"\n[store]\nurl = \"sqlite://{}\"\n[rules]\npath = \"{}\"\n",
            dir.path().join("herald.db").display(),
            repo_path("config/rules.toml").display()
        ),
    )
    .unwrap();
    let (child, addr) = spawn_herald_process(&config);
    (child, addr, dir)
}

#[test]
fn healthy_gateway_exits_0_by_url_by_port_and_by_the_configured_bind() {
    let (mut child, addr, dir) = gateway();
    let port = addr.rsplit(':').next().unwrap().to_owned();

    let out = healthcheck(&["--url", &format!("{addr}/healthz")], &[]);
    assert_eq!(out.status.code(), Some(0), "stdout: {} stderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("healthy: "), "{}", text(&out.stdout));

    let out = healthcheck(&["--port", &port], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    // As in the image: no flags, server.bind = 0.0.0.0:<port> from the environment → probes 127.0.0.1:<port>.
    let config = dir.path().join("herald.toml");
    let bind = format!("0.0.0.0:{port}");
    let out = healthcheck(&["--config", config.to_str().unwrap()], &[("HERALD__SERVER__BIND", &bind)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("http://127.0.0.1:{port}/healthz")), "{}", text(&out.stdout));

    // The file named by HERALD_CONFIG (the image's way to give `serve` a file that also reaches the probe).
    let mine = dir.path().join("mine.toml");
    std::fs::write(&mine, format!("[server]\nbind = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = healthcheck(&[], &[("HERALD_CONFIG", mine.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("http://127.0.0.1:{port}/healthz")), "{}", text(&out.stdout));

    // A setting unrelated to the probe that does not validate: HERALD__SERVER__BIND alone still tells the port.
    let out = healthcheck(&[], &[("HERALD__SERVER__BIND", &bind), ("HERALD__AUTH__JWT_SECRET", "short")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    // As in the image with the secrets in a `serve --config` file the probe is not given: the base file's bind
    // under the production profile, whose refusal of the development secret is no concern of the probe's.
    let base = dir.path().join("image.toml");
    std::fs::write(&base, format!("profile = \"production\"\n[server]\nbind = \"0.0.0.0:{port}\"\n")).unwrap();
    let out = healthcheck(&[], &[("HERALD_BASE_CONFIG", base.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("http://127.0.0.1:{port}/healthz")), "{}", text(&out.stdout));

    // server.ops_bind, when set, is what the probe asks (it answers when server.bind is at its connection cap):
    // here the gateway's port is named as ops_bind and bind is a port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ops = dir.path().join("ops.toml");
    std::fs::write(&ops, format!("[server]\nbind = \"127.0.0.1:{closed}\"\nops_bind = \"0.0.0.0:{port}\"\n")).unwrap();
    let out = healthcheck(&["--config", ops.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("http://127.0.0.1:{port}/healthz")), "{}", text(&out.stdout));
    let out = healthcheck(
        &[],
        &[("HERALD__SERVER__BIND", &format!("127.0.0.1:{closed}")), ("HERALD__SERVER__OPS_BIND", &bind)],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    // A gateway that answers, but not 200 on that path.
    let out = healthcheck(&["--url", &format!("{addr}/no-such-endpoint")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("unhealthy: ") && err.contains("expected 200"), "{err}");

    child.kill().unwrap();
    child.wait().unwrap();

    // The same port once the gateway is gone.
    let out = healthcheck(&["--port", &port], &[]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn closed_port_exits_1_with_a_one_line_reason() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = healthcheck(&["--port", &port.to_string()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with(&format!("unhealthy: http://127.0.0.1:{port}/healthz: cannot connect")), "{err}");
}

#[test]
fn silent_peer_times_out_quickly_and_bad_urls_are_refused() {
    // Accepts the connection (the kernel does, from the backlog) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let started = Instant::now();
    let out = healthcheck(&["--url", &url, "--timeout-ms", "300"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let err = text(&out.stderr);
    assert!(err.contains("reading the response"), "{err}");
    drop(listener);

    let out = healthcheck(&["--url", "https://127.0.0.1:1/healthz"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("only http://"), "{}", text(&out.stderr));
}

/// `herald rules check` outside a checkout checks what `serve` would start with: the rules shipped in the binary
/// (MIGRATING's step 2 failed there with "no such rules file"); a configured path that does not exist still fails.
#[test]
fn rules_check_outside_a_checkout_checks_the_shipped_rules_and_a_missing_configured_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["rules", "check"])
            .current_dir(dir.path())
            .env_remove("HERALD__RULES__PATH")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let shipped = run(&[]);
    assert!(shipped.status.success(), "{}{}", text(&shipped.stdout), text(&shipped.stderr));
    assert!(text(&shipped.stdout).contains("shipped in the binary"), "{}", text(&shipped.stdout));
    let typo = run(&[("HERALD__RULES__PATH", "/nonexistent/rules.toml")]);
    assert!(!typo.status.success());
    assert!(text(&typo.stderr).contains("no such rules file"), "{}", text(&typo.stderr));
}

/// A command that fails says why on one line (and its causes), never with a backtrace, even where
/// `RUST_BACKTRACE` is set: before, every refused configuration printed ~25 frames under its reason, and the
/// missing file was called a "configuration key".
#[test]
fn a_refused_configuration_is_reported_without_a_backtrace() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["check-config", "--config", "/nonexistent/herald.toml"])
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("Error: --config: file /nonexistent/herald.toml does not exist"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// `herald check-config` refuses what `serve` would refuse before it listens: an RS256 public key that is missing
/// or not a PEM (it said "configuration ok" and `serve` then exited 1), and a write-stall bound that would cut a
/// stuck session's connection before the session closes it with its code.
#[test]
fn check_config_refuses_the_keys_and_timeouts_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-key.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let check = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("check-config")
            .current_dir(repo_path("."))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let ok = check(&[]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let rs256 =
        |path: &str| check(&[("HERALD__AUTH__ALGORITHM", "RS256"), ("HERALD__AUTH__JWT_PUBLIC_KEY_PATH", path)]);
    let missing = rs256("/nonexistent/public.pem");
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("auth.jwt_public_key_path: cannot read"), "{}", text(&missing.stderr));
    let garbage = rs256(not_pem.to_str().unwrap());
    assert_eq!(garbage.status.code(), Some(1));
    assert!(text(&garbage.stderr).contains("not an RSA public key PEM"), "{}", text(&garbage.stderr));
    let stall = check(&[("HERALD__SERVER__WRITE_STALL_TIMEOUT_SECS", "2")]);
    assert_eq!(stall.status.code(), Some(1));
    assert!(
        text(&stall.stderr).contains("server.write_stall_timeout_secs")
            && text(&stall.stderr).contains("write_timeout"),
        "{}",
        text(&stall.stderr)
    );
}

/// Liveness fails once an essential thread died (the store's writer panicked): `/healthz` answers 503 with what
/// stopped, and `herald healthcheck` exits 1: Kubernetes' liveness probe (or Swarm, on the image's HEALTHCHECK)
/// restarts a node that would refuse every write until then; plain Docker marks it unhealthy. (Each test is its own process under nextest: the failure stays in this one.)
#[tokio::test]
async fn healthz_fails_once_an_essential_thread_died() {
    let gw = spawn_gateway().await;
    let alive = reqwest::get(gw.url("/healthz")).await.unwrap();
    assert_eq!(alive.status(), 200);
    std::thread::spawn(|| herald::telemetry::essential("the test's essential thread stopped", || panic!("a bug")))
        .join()
        .unwrap();
    let failed = reqwest::get(gw.url("/healthz")).await.unwrap();
    assert_eq!(failed.status(), 503);
    let body: serde_json::Value = failed.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "status": "failed", "reason": "the test's essential thread stopped" }));
    let out = healthcheck(&["--url", &gw.url("/healthz")], &[]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
}

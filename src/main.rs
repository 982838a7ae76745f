//! The `herald` binary: thin on purpose. Load settings, start tracing, call [`herald::run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::config::{Settings, TlsFile, TlsFiles};
use tokio_util::sync::CancellationToken;

/// mimalloc: the hot paths allocate small, short-lived buffers on several threads; glibc's malloc spent
/// ~13 % of Herald's core in `_int_malloc`/`malloc_consolidate` under targeted load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "herald", version, about = "Real-time WebSocket notification gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// A TOML file layered over the defaults (environment variables still win).
        #[arg(long, short, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a user token signed with the configured HS256 secret (for trying things out).
    Token {
        user_id: String,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        #[arg(long, short, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and the rules, then exit.
    CheckConfig {
        #[arg(long, short, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check or dry-run the routing rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Publish event fixture files (the format of tests/fixtures/events/*.json) to RabbitMQ, each confirmed by
    /// the broker. A file that fails does not stop the others; the exit status is non-zero if any failed.
    Publish {
        /// Broker URL. Default: amqp.url from the configuration (HERALD__AMQP__URL).
        #[arg(long)]
        url: Option<String>,
        /// With an amqps:// URL: a PEM file of CA certificates trusted besides the system's (a broker signed by
        /// a private CA). Default: amqp.ca_file from the configuration when the URL comes from it too.
        #[arg(long)]
        ca_file: Option<String>,
        /// With an amqps:// URL: the client certificate (PEM) to present to a broker that asks for one (mutual
        /// TLS), with --key-file. Default: amqp.cert_file from the configuration when the URL comes from it too.
        #[arg(long)]
        cert_file: Option<String>,
        /// The private key (PEM) of --cert-file. Default: amqp.key_file, as --cert-file.
        #[arg(long)]
        key_file: Option<String>,
        #[arg(long, short, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
        /// Publish to this exchange instead of the fixture's `exchange`.
        #[arg(long)]
        exchange: Option<String>,
        /// Use this routing key instead of the fixture's `routing_key`.
        #[arg(long)]
        routing_key: Option<String>,
        #[arg(required = true)]
        fixtures: Vec<PathBuf>,
    },
    /// Probe a running gateway's /healthz (the container image's HEALTHCHECK: no curl needed). Exits 0 on a 200,
    /// 1 otherwise with a one-line reason.
    Healthcheck {
        /// The URL to probe (plain http only). Default: http://127.0.0.1:<port>/healthz.
        #[arg(long)]
        url: Option<String>,
        /// The port to probe on loopback. Default: the port of server.ops_bind from the configuration when it is
        /// set (it answers when server.bind is at max_connections), else server.bind's.
        #[arg(long, conflicts_with = "url")]
        port: Option<u16>,
        /// Give up after this long (connect, write and read each).
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        #[arg(long, short, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show how a running gateway handled an event (or a user's newest events): received, rule, stored ids,
    /// recipients, the nodes and sessions that got it (or why not), reads. Needs a service key with `admin`.
    Trace {
        /// The event id (as its producer gave it).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        event_id: Option<String>,
        /// A user's newest traces instead of one event's.
        #[arg(long)]
        user: Option<String>,
        /// With --user: how many traces (1 to 100).
        #[arg(long, default_value_t = 20, requires = "user")]
        limit: usize,
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The service key (with the `admin` scope). Never printed.
        #[arg(long, env = "HERALD_ADMIN_KEY", hide_env_values = true)]
        key: String,
        /// Print the answer as JSON instead of a timeline.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rules file (default: rules.path from the configuration) and print how many rules it holds.
    Check {
        file: Option<PathBuf>,
        #[arg(long, short, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Dry-run event fixture files through the configured rules: per event, the matched rule, the recipients
    /// (aliases resolved from what the given fixtures teach) and the notification, or why it would be
    /// dead-lettered. Exits with 1 when any would be.
    Test {
        #[arg(required = true)]
        fixtures: Vec<PathBuf>,
        #[arg(long, short, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
        /// Use this rules file instead of rules.path.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

/// A failure is its message and causes, never a backtrace: `RUST_BACKTRACE`, set in an environment for other
/// reasons, made every refused configuration print one under its one-line reason.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
            if !causes.is_empty() {
                eprintln!("\nCaused by:");
                for cause in causes {
                    eprintln!("    {cause}");
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // Before any thread or connection uses SQLite (see `sqlite_pcache`).
    herald::sqlite_pcache::install();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let settings = load(config.as_deref())?;
            herald::telemetry::init_tracing(&settings.log);
            // Before the runtime's threads and the sessions' memory: see `huge_pages`.
            herald::huge_pages::apply(settings.server.transparent_huge_pages);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let served = runtime.block_on(serve(settings));
            // Dropping the runtime waits for every blocking task still running (a store read that a stopped
            // database holds): the stop's bound is the drain's, not theirs.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            served
        }
        Command::Token { user_id, ttl_secs, config } => {
            let settings = load(config.as_deref())?;
            let auth = herald::auth::Authenticator::new(&settings.auth).map_err(anyhow::Error::msg)?;
            let token = auth.mint(&user_id, ttl_secs).context("tokens can be minted only with auth.algorithm = \"HS256\" and no key set (auth.jwks_url, auth.oidc_issuer)")?;
            println!("{token}");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let settings = load(config.as_deref())?;
            // What `serve` reads before it listens: the verification key (a PEM file, the key set's address).
            herald::auth::Authenticator::new(&settings.auth).map_err(anyhow::Error::msg)?;
            let rules = herald::rules::Rules::load_at_start(&settings.rules.path)?;
            for warning in settings.warnings() {
                eprintln!("warning: {warning}");
            }
            println!("configuration ok: {} rules", rules.len());
            Ok(())
        }
        Command::Rules { command: RulesCommand::Check { file, config } } => {
            let path = match file {
                Some(f) => f,
                // What `serve` would start with: the default path absent means the rules shipped in the binary.
                None => {
                    let path = load(config.as_deref())?.rules.path;
                    if path == std::path::Path::new(herald::rules::DEFAULT_RULES_PATH) && !path.exists() {
                        let rules = herald::rules::Rules::load_at_start(&path)?;
                        println!("no {}: the rules shipped in the binary, {} rules, ok", path.display(), rules.len());
                        return Ok(());
                    }
                    path
                }
            };
            anyhow::ensure!(path.is_file(), "{}: no such rules file", path.display());
            let rules = herald::rules::Rules::load(&path)?;
            println!("{}: {} rules, ok", path.display(), rules.len());
            Ok(())
        }
        Command::Rules { command: RulesCommand::Test { fixtures, config, rules } } => {
            let settings = load(config.as_deref())?;
            let rules = match rules {
                Some(path) => herald::rules::Rules::load(&path)?,
                None => herald::rules::Rules::load_at_start(&settings.rules.path)?,
            };
            let limits = herald::ingest::dry_run::Limits {
                unmatched: settings.amqp.unmatched,
                http_body_bytes: settings.server.max_body_bytes,
                amqp_message_bytes: settings.amqp.max_message_bytes,
                max_frame: settings.websocket.max_frame_bytes(),
            };
            let reports = herald::ingest::dry_run::run(&rules, &fixtures, limits);
            for r in &reports {
                println!("{}", herald::ingest::dry_run::render(r));
            }
            let dead = reports.iter().filter(|r| r.verdict.is_dead_letter()).count();
            println!("{} events: {} would be dead-lettered", reports.len(), dead);
            if dead > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Publish { url, ca_file, cert_file, key_file, config, exchange, routing_key, fixtures } => {
            // Without --url, the configured broker and its TLS files, each unless a flag names another.
            let (url, configured) = match url {
                Some(url) => (url, [String::new(), String::new(), String::new()]),
                None => {
                    let amqp = load(config.as_deref())?.amqp;
                    (amqp.url.expose().to_owned(), [amqp.ca_file, amqp.cert_file, amqp.key_file])
                }
            };
            let flags = [("--ca-file", ca_file), ("--cert-file", cert_file), ("--key-file", key_file)];
            if let Some((flag, _)) = flags.iter().find(|(_, f)| f.is_some()) {
                if !url.starts_with("amqps://") {
                    anyhow::bail!("{flag} is for an amqps:// URL (TLS); the broker URL is plain amqp://");
                }
            }
            // A client certificate and its key go together: a flag for either replaces both configured files.
            // Each file is named in errors as the setting it came from, else as the flag that sets it.
            let [(_, ca_flag), (_, cert_flag), (_, key_flag)] = flags;
            let [ca, mut cert, mut key] = configured;
            if cert_flag.is_some() || key_flag.is_some() {
                (cert, key) = (String::new(), String::new());
            }
            let named = |flag: &Option<String>, configured: &str, file: TlsFile| match flag {
                None if !configured.is_empty() => format!("amqp.{}", file.setting()),
                _ => format!("--{}", file.setting().replace('_', "-")),
            };
            let names = (
                named(&ca_flag, &ca, TlsFile::Ca),
                named(&cert_flag, &cert, TlsFile::Cert),
                named(&key_flag, &key, TlsFile::Key),
            );
            let files = (ca_flag.unwrap_or(ca), cert_flag.unwrap_or(cert), key_flag.unwrap_or(key));
            let tls =
                herald::ingest::amqp::tls(TlsFiles { ca_file: &files.0, cert_file: &files.1, key_file: &files.2 })
                    .map_err(|(file, e)| {
                        let name = match file {
                            TlsFile::Ca => &names.0,
                            TlsFile::Cert => &names.1,
                            TlsFile::Key => &names.2,
                        };
                        anyhow::anyhow!("{name}: {e}")
                    })?;
            herald::install_crypto_provider();
            let report = tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(
                herald::ingest::amqp::publish_fixtures(
                    &url,
                    tls,
                    &fixtures,
                    exchange.as_deref(),
                    routing_key.as_deref(),
                ),
            )?;
            // Every file is tried; the failures are counted at the end.
            let mut failed = 0;
            for outcome in &report {
                match outcome {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {e:#}");
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} fixtures failed to publish", report.len());
            }
            Ok(())
        }
        Command::Trace { event_id, user, limit, url, key, json } => {
            use herald::trace::terminal::{fetch, Query};
            let query = match (event_id, user) {
                (Some(id), _) => Query::Event(id),
                (None, Some(user)) => Query::User { user, limit },
                (None, None) => unreachable!("clap requires one"),
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            match runtime.block_on(fetch(&url, &key, &query, json)) {
                Ok(text) => {
                    print!("{text}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("herald trace: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Healthcheck { url, port, timeout_ms, config } => {
            let url = match (url, port) {
                (Some(url), _) => url,
                (None, Some(port)) => format!("http://127.0.0.1:{port}/healthz"),
                (None, None) => {
                    // server.ops_bind, else server.bind, from the configuration's layers, unchecked as a whole (the
                    // probe must not fail on a setting it does not use, such as secrets kept in a `serve --config`
                    // file it is not given); when even that does not load, the same from the variables alone.
                    let layered = Settings::layered(config.as_deref(), std::env::vars()).map_err(anyhow::Error::from);
                    let bind = layered.map(|s| s.server.ops_bind.unwrap_or(s.server.bind)).or_else(|e| {
                        ["HERALD__SERVER__OPS_BIND", "HERALD__SERVER__BIND"]
                            .iter()
                            .find_map(|k| std::env::var(k).ok().and_then(|v| v.parse::<std::net::SocketAddr>().ok()))
                            .ok_or(e)
                    });
                    let bind = match bind {
                        Ok(bind) => bind,
                        Err(e) => {
                            eprintln!("unhealthy: cannot read server.bind from the configuration: {e:#}");
                            std::process::exit(1);
                        }
                    };
                    let ip = match bind.ip() {
                        ip if !ip.is_unspecified() => ip,
                        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    };
                    format!("http://{}/healthz", std::net::SocketAddr::new(ip, bind.port()))
                }
            };
            match healthcheck::probe(&url, std::time::Duration::from_millis(timeout_ms.max(1))) {
                Ok(()) => {
                    println!("healthy: {url} answered 200");
                    Ok(())
                }
                Err(reason) => {
                    eprintln!("unhealthy: {url}: {}", reason.replace('\n', " "));
                    std::process::exit(1);
                }
            }
        }
    }
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    Settings::from_env(config).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.server.bind)
        .await
        .with_context(|| format!("binding server.bind = {}", settings.server.bind))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(herald::shutdown::on_signal(shutdown.clone()));
    let json = herald::telemetry::json_logs(&settings.log);
    let started = herald::start(settings, listener, shutdown).await?;
    // Tests and scripts read this line to learn the port when server.bind uses port 0, and as "serving": it is
    // printed once the store and the rules are open (the broker and Redis connect in the background: `/readyz`).
    println!("{}", herald::telemetry::listening_line(json, started.local_addr()?));
    started.serve().await
}

/// `herald healthcheck`: one plain HTTP/1.1 GET over std's blocking sockets (no HTTP client dependency).
mod healthcheck {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    /// `Ok` when `url` answers `200`; otherwise why not, in one line.
    pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
        let rest = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err("no host in the URL".into());
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        let target = if has_port { authority.to_owned() } else { format!("{authority}:80") };
        let addrs: Vec<_> = target.to_socket_addrs().map_err(|e| format!("cannot resolve {authority}: {e}"))?.collect();
        let mut last_err = format!("{authority} resolved to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => return request(stream, authority, path, timeout),
                Err(e) => last_err = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last_err)
    }

    fn request(mut stream: TcpStream, host: &str, path: &str, timeout: Duration) -> Result<(), String> {
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: herald-healthcheck\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
        // The status line is all we need; read until it is complete (or the peer closes).
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("reading the response: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let status_line = line.lines().next().unwrap_or("").trim();
        if status_line.is_empty() {
            return Err("connection closed without a response".into());
        }
        let mut parts = status_line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(v), Some("200")) if v.starts_with("HTTP/") => Ok(()),
            (Some(v), Some(code)) if v.starts_with("HTTP/") => Err(format!("status {code}, expected 200")),
            _ => Err(format!("not an HTTP response: {:?}", status_line.chars().take(80).collect::<String>())),
        }
    }
}

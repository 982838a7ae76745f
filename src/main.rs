//! The `herald` binary: thin on purpose. Load settings, start tracing, call [`herald::run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::config::Settings;
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
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a user token signed with the configured HS256 secret (for trying things out).
    Token {
        user_id: String,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and the rules, then exit.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check or dry-run the routing rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Publish event fixture files (the format of tests/fixtures/events/*.json) to RabbitMQ, each confirmed by
    /// the broker.
    Publish {
        /// Broker URL. Default: amqp.url from the configuration (HERALD__AMQP__URL).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, short)]
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
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rules file (default: rules.path from the configuration) and print how many rules it holds.
    Check {
        file: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Dry-run event fixture files through the configured rules: per event, the matched rule, the recipients
    /// (aliases resolved from what the given fixtures teach) and the notification, or why it would be
    /// dead-lettered. Exits with 1 when any would be.
    Test {
        #[arg(required = true)]
        fixtures: Vec<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Use this rules file instead of rules.path.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let settings = load(config.as_deref())?;
            herald::telemetry::init_tracing(&settings.log);
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(settings))
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
            let rules = herald::rules::Rules::load(&settings.rules.path)?;
            println!("configuration ok: {} rules", rules.len());
            Ok(())
        }
        Command::Rules { command: RulesCommand::Check { file, config } } => {
            let path = match file {
                Some(f) => f,
                None => load(config.as_deref())?.rules.path,
            };
            anyhow::ensure!(path.is_file(), "{}: no such rules file", path.display());
            let rules = herald::rules::Rules::load(&path)?;
            println!("{}: {} rules, ok", path.display(), rules.len());
            Ok(())
        }
        Command::Rules { command: RulesCommand::Test { fixtures, config, rules } } => {
            let settings = load(config.as_deref())?;
            let path = rules.unwrap_or(settings.rules.path);
            let rules = herald::rules::Rules::load(&path)?;
            let reports = herald::ingest::dry_run::run(&rules, &fixtures, settings.amqp.max_message_bytes);
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
        Command::Publish { url, config, exchange, routing_key, fixtures } => {
            let url = match url {
                Some(url) => url,
                None => load(config.as_deref())?.amqp.url.expose().to_owned(),
            };
            let report = tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(
                herald::ingest::amqp::publish_fixtures(&url, &fixtures, exchange.as_deref(), routing_key.as_deref()),
            )?;
            report.iter().for_each(|line| println!("{line}"));
            Ok(())
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
    let started = herald::start(settings, listener, shutdown).await?;
    // Tests and scripts read this line to learn the port when server.bind uses port 0, and as "ready": it is
    // printed only once the store, rules, broker and Redis are open.
    println!("herald listening on http://{}", started.local_addr()?);
    started.serve().await
}

//! `herald-loadtest`: the load tool behind BENCHMARKS.md.
//!
//! # Layout
//!
//! - `scenario/*`: one module per subcommand (`connect`, `targeted`, `broadcast`, `resume`), each printing a
//!   summary and writing a JSON report.
//! - `fleet` → `pool` → `client`: the WebSocket sessions, in this process or spread over worker processes
//!   (re-executions of this binary) when the descriptor limit requires it.
//! - `publish`: HTTP ingest and RabbitMQ publishers on an open-loop `schedule`.
//! - `frame` + `recorder`: what arrives, read without parsing whole frames; `hist`, `report`, `plot`,
//!   `summary`: numbers out.
//! - `limits`: the machine's limits (descriptors, ephemeral ports) and Herald's process, from /proc.

mod client;
mod fleet;
mod frame;
mod hist;
mod limits;
mod plot;
mod pool;
mod publish;
mod recorder;
mod report;
mod scenario;
mod schedule;
mod summary;
mod token;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herald-loadtest", version, about = "Load tool for Herald")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    // A later option overrides an earlier one (scripts/bench.sh appends SHORT=1 overrides to an entry).
    /// Open N authenticated sessions: connects/s and Herald's RSS per idle session.
    #[command(args_override_self = true)]
    Connect(scenario::connect::ConnectArgs),
    /// M notifications to random connected users: delivered/s, lost, duplicated, latency.
    #[command(args_override_self = true)]
    Targeted(scenario::targeted::TargetedArgs),
    /// B broadcasts to every session: deliveries/s and latency of each broadcast's last delivery.
    #[command(args_override_self = true)]
    Broadcast(scenario::broadcast::BroadcastArgs),
    /// Disconnect, miss K notifications, reconnect with `since`: time to catch up, anything missing.
    #[command(args_override_self = true)]
    Resume(scenario::resume::ResumeArgs),
    /// Medians per benchmark over a directory of JSON reports, beside the goals and the peers.
    Summary(summary::SummaryArgs),
    /// Internal: hold connections for a coordinator (JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let deadline = match &cli.command {
        Cmd::Connect(a) => Some(a.common.deadline),
        Cmd::Targeted(a) => Some(a.common.deadline),
        Cmd::Broadcast(a) => Some(a.common.deadline),
        Cmd::Resume(a) => Some(a.common.deadline),
        Cmd::Summary(_) | Cmd::Worker => None,
    };
    if let Some(secs) = deadline {
        // Whatever happens (a stuck server, a lost worker), the tool stops by itself.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            eprintln!("herald-loadtest: --deadline of {secs} s reached; stopping (the run is incomplete)");
            std::process::exit(3);
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        match cli.command {
            Cmd::Connect(a) => scenario::connect::run(a).await,
            Cmd::Targeted(a) => scenario::targeted::run(a).await,
            Cmd::Broadcast(a) => scenario::broadcast::run(a).await,
            Cmd::Resume(a) => scenario::resume::run(a).await,
            Cmd::Summary(a) => summary::run(a),
            Cmd::Worker => fleet::worker_main().await,
        }
    })?;
    // Sessions and workers end with the process; don't wait for runtime shutdown of thousands of tasks.
    std::process::exit(0)
}

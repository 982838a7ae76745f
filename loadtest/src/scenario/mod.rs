//! What every scenario shares: the command-line options, the run context (where Herald is, how connections
//! are spread), the connect phase, progress bars, and writing the report.

pub mod broadcast;
pub mod connect;
pub mod resume;
pub mod targeted;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Target;
use crate::fleet::Fleet;
use crate::hist::Latency;
use crate::limits::{self, ProcSample, Sources};
use crate::plot::{self, Chart};
use crate::pool::{ConnectOutcome, PoolConfig};
use crate::report::{line, per_second, Report};
use crate::schedule::mono_ns;

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Herald's base URL (HTTP; WebSockets go to the same host).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server under test: Herald, or nginx + nchan as the reference peer (its worker's PID as
    /// `--server-pid`; see scripts/bench.sh for its configuration).
    #[arg(long, value_enum, default_value_t = Target::Herald)]
    pub target: Target,
    /// A shell command run as the measured phase starts (`$SERVER_PID` is set), e.g. to start a profiler;
    /// the phase starts once it returns.
    #[arg(long)]
    pub on_measure_start: Option<String>,
    /// A shell command run as the measured phase ends (`$SERVER_PID` is set), e.g. to stop a profiler.
    #[arg(long)]
    pub on_measure_end: Option<String>,
    /// HS256 secret Herald verifies user tokens with.
    #[arg(long, default_value = "herald-dev-secret-change-me")]
    pub jwt_secret: String,
    /// Claim holding the user id (`auth.user_claim`).
    #[arg(long, default_value = "sub")]
    pub user_claim: String,
    /// Service key for HTTP ingest (`auth.service_keys`).
    #[arg(long, default_value = "herald-dev-service-key")]
    pub service_key: String,
    /// Users are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "lt-")]
    pub user_prefix: String,
    /// Herald's PID on this machine: RSS, CPU and descriptors are read from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the machine-readable report here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write a plot (.svg or .png): latency distribution and throughput over time.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Names this run in reports (rounds of one benchmark share a label).
    #[arg(long)]
    pub label: Option<String>,
    /// Worker processes holding the connections (default: as many as the descriptor limit requires).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Descriptors each process keeps free for everything but WebSockets.
    #[arg(long, default_value_t = 2_000)]
    pub fd_reserve: u64,
    /// Connections per 127.0.0.x source address (default: 90 % of the ephemeral port range).
    #[arg(long)]
    pub per_source: Option<u64>,
    /// Handshakes in flight at once, per process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds one connection may take to become ready.
    #[arg(long, default_value_t = 15.0)]
    pub connect_timeout: f64,
    /// Read buffer per WebSocket, bytes.
    #[arg(long, default_value_t = 8_192)]
    pub read_buffer: usize,
    /// The fanout exchange events are published to (`?exchange=` for HTTP).
    #[arg(long, default_value = "sgad.notifications")]
    pub exchange: String,
    /// The tool stops itself after this many seconds, whatever it is doing.
    #[arg(long, default_value_t = 900)]
    pub deadline: u64,
}

pub struct Ctx {
    pub common: Common,
    pub server: SocketAddr,
    pub host: String,
    /// Marks this run's events, so stray frames from another run are not counted.
    pub run: u64,
    pub fd_limit: u64,
}

impl Ctx {
    pub async fn new(common: Common) -> anyhow::Result<Ctx> {
        let fd_limit = limits::raise_nofile();
        let rest = common.url.strip_prefix("http://").context("--url must start with http://")?;
        let host = rest.split('/').next().unwrap_or(rest).to_owned();
        if host.is_empty() {
            bail!("--url has no host");
        }
        let with_port = if host.contains(':') { host.clone() } else { format!("{host}:80") };
        let server = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .find(|a| a.is_ipv4())
            .with_context(|| format!("{with_port} has no IPv4 address"))?;
        Ok(Ctx { common, server, host, run: rand::random::<u32>() as u64, fd_limit })
    }

    pub fn pool_config(&self) -> PoolConfig {
        let c = &self.common;
        let loopback = matches!(self.server.ip(), IpAddr::V4(ip) if ip.is_loopback());
        PoolConfig {
            server: self.server,
            host: self.host.clone(),
            jwt_secret: c.jwt_secret.clone(),
            user_claim: c.user_claim.clone(),
            token_ttl_secs: 6 * 3_600,
            user_prefix: c.user_prefix.clone(),
            // Several source addresses only make sense (and only work) towards loopback.
            sources: loopback.then(|| Sources::plan(Ipv4Addr::new(127, 0, 0, 1), c.per_source)),
            connect_timeout_ms: (c.connect_timeout * 1_000.0) as u64,
            concurrency: c.connect_concurrency,
            read_buffer: c.read_buffer,
            target: c.target,
        }
    }

    pub async fn fleet(&self, n: u64) -> anyhow::Result<Fleet> {
        let workers = limits::plan_workers(n, self.fd_limit, self.common.fd_reserve, self.common.workers);
        Fleet::start(self.pool_config(), n, workers).await
    }

    pub fn herald(&self) -> Option<ProcSample> {
        self.common.server_pid.and_then(limits::sample)
    }

    /// Run `--on-measure-start` / `--on-measure-end`; a failing hook is reported, not fatal.
    pub fn hook(&self, cmd: Option<&str>) {
        let Some(cmd) = cmd else { return };
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(cmd);
        if let Some(pid) = self.common.server_pid {
            c.env("SERVER_PID", pid.to_string());
        }
        match c.status() {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("herald-loadtest: measure hook `{cmd}` exited with {s}"),
            Err(e) => eprintln!("herald-loadtest: measure hook `{cmd}` could not run: {e}"),
        }
    }

    /// Open `n` sessions (or re-open them with `since`), with a progress bar.
    pub async fn connect(
        &self,
        fleet: &mut Fleet,
        n: u64,
        resume: bool,
        rate: f64,
        origin_ns: u64,
    ) -> anyhow::Result<ConnectOutcome> {
        let what = if resume { "reconnecting" } else { "connecting" };
        let bar = bar(n, what);
        let progress = fleet.progress();
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                b.set_position(progress());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let out = fleet.connect(resume, rate, origin_ns).await;
        ticker.abort();
        bar.finish_and_clear();
        out
    }

    /// Print, write JSON, plot.
    pub fn finish(&self, report: &Report, lines: &[(String, String)], chart: Option<Chart>) -> anyhow::Result<()> {
        report.print(lines);
        if let Some(p) = &self.common.json_out {
            report.write(p)?;
            println!("  report: {}", p.display());
        }
        if let (Some(p), Some(c)) = (&self.common.plot, chart) {
            plot::write(p, &c)?;
            println!("  plot: {}", p.display());
        }
        Ok(())
    }
}

pub fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>13} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

/// Lines and limits every scenario reports about its connect phase.
pub fn connect_lines(
    out: &ConnectOutcome,
    origin_ns: u64,
    herald: Option<&ProcSample>,
    report: &mut Report,
) -> Vec<(String, String)> {
    let secs = (out.last_ns.saturating_sub(origin_ns)) as f64 / 1e9;
    let hs = Latency::decode(&out.handshake).unwrap_or_default().summary();
    let mut lines = vec![
        line("sessions", format!("{} of {} ready in {secs:.1} s", out.connected, out.attempted)),
        line("connects/s", format!("{:.0}", per_second(out.connected, origin_ns, out.last_ns))),
        line("handshake", format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", hs.p50_ms, hs.p99_ms, hs.max_ms)),
    ];
    if !out.failures.is_empty() {
        let f: Vec<String> = out.failures.iter().map(|(k, v)| format!("{v} {}", k.explain())).collect();
        lines.push(line("failed", f.join("; ")));
    }
    report.limits.extend(limits::explain_failures(&out.failures, herald));
    lines
}

/// CPU use during a measured phase: Herald's, the load tool's (this process and its workers), and other
/// processes' on Herald's core — this machine is shared, and a busy neighbour is not Herald's fault.
pub struct Meter {
    herald: Option<(u32, ProcSample)>,
    load: Vec<(u32, Option<ProcSample>)>,
    core: Option<(usize, (u64, u64))>,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuUse {
    pub herald: Option<f64>,
    pub load: f64,
    /// Percent of Herald's core used by processes other than Herald.
    pub others_on_herald_core: Option<f64>,
    /// Bytes Herald wrote to storage during the phase (WAL, checkpoints).
    pub herald_disk_bytes: Option<u64>,
    /// CPU seconds (user + system) the server process used during the phase.
    pub herald_cpu_secs: Option<f64>,
}

impl Meter {
    pub fn start(ctx: &Ctx, fleet: &Fleet) -> Self {
        let herald = ctx.common.server_pid.and_then(|p| Some((p, limits::sample(p)?)));
        let mut pids = vec![std::process::id()];
        pids.extend(fleet.pids());
        let core = ctx.common.server_pid.and_then(limits::pinned_core).and_then(|c| Some((c, limits::core_ticks(c)?)));
        Meter { herald, load: pids.into_iter().map(|p| (p, limits::sample(p))).collect(), core }
    }

    pub fn finish(&self, report: &mut Report) -> CpuUse {
        let herald_end = self.herald.and_then(|(p, a)| Some((a, limits::sample(p)?)));
        let herald = herald_end.map(|(a, b)| limits::cpu_percent(&a, &b));
        let herald_disk_bytes = herald_end.map(|(a, b)| b.disk_write_bytes.saturating_sub(a.disk_write_bytes));
        let herald_cpu_secs = herald_end.map(|(a, b)| limits::cpu_secs(&a, &b));
        let load =
            self.load.iter().filter_map(|(p, a)| Some(limits::cpu_percent(a.as_ref()?, &limits::sample(*p)?))).sum();
        let others = self.core.and_then(|(c, (b0, t0))| {
            let (b1, t1) = limits::core_ticks(c)?;
            let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0;
            Some((busy - herald?).max(0.0))
        });
        let u = CpuUse { herald, load, others_on_herald_core: others, herald_disk_bytes, herald_cpu_secs };
        if let Some(h) = herald {
            report.headline("herald_cpu_percent", h.round());
            if h >= 90.0 {
                report.notes.push(format!("Herald used {h:.0} % of its core: it was the bottleneck of this run"));
            }
        }
        report.headline("load_cpu_percent", load.round());
        if load >= 90.0 {
            report.limits.push(format!(
                "the load tool used {load:.0} % of a core: on this machine it may have bounded the result"
            ));
        }
        if let Some(o) = others {
            report.headline("others_on_herald_core_percent", o.round());
            if o >= 10.0 {
                report.limits.push(format!(
                    "other processes used {o:.0} % of Herald's core during the measurement: the machine was shared"
                ));
            }
        }
        u
    }
}

impl CpuUse {
    /// The server's CPU time per unit of work (an event, a delivery), in µs, as a headline and a line.
    pub fn per(&self, what: &str, n: u64, report: &mut Report) -> Option<(String, String)> {
        let secs = self.herald_cpu_secs?;
        if n == 0 {
            return None;
        }
        let us = secs / n as f64 * 1e6;
        report.headline(&format!("cpu_us_per_{what}"), (us * 10.0).round() / 10.0);
        Some(line(&format!("server CPU per {what}"), format!("{us:.1} µs ({secs:.2} CPU s / {n})")))
    }

    pub fn line(&self) -> Option<(String, String)> {
        let h = self.herald?;
        let mut s = format!("server {h:.0} % of its core, load tool {:.0} %", self.load);
        if let Some(o) = self.others_on_herald_core {
            s.push_str(&format!(", other processes {o:.0} % of the server's core"));
        }
        Some(line("CPU", s))
    }
}

pub fn origin() -> u64 {
    mono_ns()
}

//! The fleet: every pool of a run, in this process or in worker processes.
//!
//! When the connections do not fit under one process's descriptor limit, the tool re-executes itself as
//! `herald-loadtest worker` children, each holding a contiguous range of users. Coordinator and workers speak
//! JSON lines: the first line is the [`PoolConfig`], then one [`Command`] per line, each answered by one
//! [`Reply`] (plus `Progress` lines while a `Connect` runs). A worker exits when its stdin closes, so a
//! coordinator that dies takes its workers with it.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::pool::{Command, ConnectOutcome, Pool, PoolConfig, Reply, Snapshot};
use crate::recorder::Arm;

enum Member {
    Local(Pool),
    Remote(Remote),
}

struct Remote {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::UnboundedReceiver<Reply>,
}

impl Member {
    async fn call(&mut self, cmd: Command) -> anyhow::Result<Reply> {
        let reply = match self {
            Member::Local(p) => p.handle(cmd).await,
            Member::Remote(r) => {
                let mut line = serde_json::to_string(&cmd)?;
                line.push('\n');
                r.stdin.write_all(line.as_bytes()).await.context("worker stdin")?;
                r.stdin.flush().await?;
                r.replies.recv().await.ok_or_else(|| anyhow!("a worker process exited"))?
            }
        };
        match reply {
            Reply::Error(e) => bail!("worker: {e}"),
            r => Ok(r),
        }
    }
}

pub struct Fleet {
    members: Vec<Member>,
    ranges: Vec<(u64, u64)>,
    progress: Vec<Arc<AtomicU64>>,
}

impl Fleet {
    /// `workers == 0`: every connection in this process.
    pub async fn start(cfg: PoolConfig, n: u64, workers: usize) -> anyhow::Result<Fleet> {
        let parts = workers.max(1) as u64;
        let ranges: Vec<(u64, u64)> = (0..parts).map(|k| (n * k / parts, n * (k + 1) / parts)).collect();
        let mut members = Vec::new();
        let mut progress = Vec::new();
        if workers == 0 {
            let pool = Pool::new(cfg);
            progress.push(pool.progress());
            members.push(Member::Local(pool));
        } else {
            for _ in 0..workers {
                let (m, p) = spawn_worker(&cfg).await?;
                members.push(m);
                progress.push(p);
            }
        }
        Ok(Fleet { members, ranges, progress })
    }

    /// Worker process ids (empty when everything runs in this process).
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| match m {
                Member::Remote(r) => r.child.id(),
                Member::Local(_) => None,
            })
            .collect()
    }

    pub fn workers(&self) -> usize {
        self.members.iter().filter(|m| matches!(m, Member::Remote(_))).count()
    }

    /// A counter of finished connection attempts across the fleet, for progress bars.
    pub fn progress(&self) -> impl Fn() -> u64 + Send + 'static {
        let p = self.progress.clone();
        move || p.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    async fn all(&mut self, make: impl Fn((u64, u64)) -> Command) -> anyhow::Result<Vec<Reply>> {
        let calls = self.members.iter_mut().zip(&self.ranges).map(|(m, r)| m.call(make(*r)));
        join_all(calls).await.into_iter().collect()
    }

    pub async fn connect(&mut self, resume: bool, rate: f64, origin_ns: u64) -> anyhow::Result<ConnectOutcome> {
        let per_member_rate = rate / self.members.len() as f64;
        let replies =
            self.all(|(from, to)| Command::Connect { from, to, resume, rate: per_member_rate, origin_ns }).await?;
        let mut out = ConnectOutcome::default();
        for r in replies {
            match r {
                Reply::Connected(o) => out.merge(&o)?,
                other => bail!("unexpected reply {other:?}"),
            }
        }
        Ok(out)
    }

    pub async fn arm(&mut self, arm: Arm) -> anyhow::Result<()> {
        self.all(|_| Command::Arm(arm)).await.map(drop)
    }

    pub async fn count(&mut self) -> anyhow::Result<u64> {
        let mut n = 0;
        for r in self.all(|_| Command::Count).await? {
            if let Reply::Count(c) = r {
                n += c;
            }
        }
        Ok(n)
    }

    pub async fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut out = Snapshot::default();
        for r in self.all(|_| Command::Snapshot).await? {
            match r {
                Reply::Snapshot(s) => out.merge(&s)?,
                other => bail!("unexpected reply {other:?}"),
            }
        }
        Ok(out)
    }

    pub async fn disconnect(&mut self) -> anyhow::Result<()> {
        self.all(|_| Command::Disconnect).await.map(drop)
    }

    /// Wait until `target` deliveries were recorded, nothing arrived for `quiet`, or `timeout` passed.
    /// Returns the count reached.
    pub async fn drain(&mut self, target: u64, quiet: Duration, timeout: Duration) -> anyhow::Result<u64> {
        let start = tokio::time::Instant::now();
        let (mut last, mut last_change) = (u64::MAX, start);
        loop {
            let n = self.count().await?;
            let now = tokio::time::Instant::now();
            if n != last {
                last = n;
                last_change = now;
            }
            if n >= target || now - last_change >= quiet || now - start >= timeout {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn spawn_worker(cfg: &PoolConfig) -> anyhow::Result<(Member, Arc<AtomicU64>)> {
    let exe = std::env::current_exe().context("finding this executable to start workers")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker process")?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let mut line = serde_json::to_string(cfg)?;
    line.push('\n');
    stdin.write_all(line.as_bytes()).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Arc::new(AtomicU64::new(0));
    let p = progress.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            match serde_json::from_str::<Reply>(&l) {
                Ok(Reply::Progress(n)) => p.store(n, Ordering::Relaxed),
                Ok(r) => {
                    if tx.send(r).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Reply::Error(format!("bad line from worker: {e}")));
                }
            }
        }
    });
    Ok((Member::Remote(Remote { child, stdin, replies: rx }), progress))
}

/// `herald-loadtest worker`: serve one pool over stdin/stdout until stdin closes.
pub async fn worker_main() -> anyhow::Result<()> {
    crate::limits::raise_nofile();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let cfg_line = lines.next_line().await?.ok_or_else(|| anyhow!("worker: no configuration on stdin"))?;
    let cfg: PoolConfig = serde_json::from_str(&cfg_line).context("worker configuration")?;
    let mut pool = Pool::new(cfg);
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        while let Some(r) = rx.recv().await {
            let mut l = serde_json::to_string(&r).expect("replies serialise");
            l.push('\n');
            if out.write_all(l.as_bytes()).await.is_err() || out.flush().await.is_err() {
                break;
            }
        }
    });
    let progress = pool.progress();
    let ptx = tx.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let n = progress.load(Ordering::Relaxed);
            if n != seen {
                seen = n;
                if ptx.send(Reply::Progress(n)).is_err() {
                    break;
                }
            }
        }
    });
    while let Some(l) = lines.next_line().await? {
        let reply = match serde_json::from_str::<Command>(&l) {
            Ok(cmd) => pool.handle(cmd).await,
            Err(e) => Reply::Error(format!("bad command: {e}")),
        };
        if tx.send(reply).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    Ok(())
}

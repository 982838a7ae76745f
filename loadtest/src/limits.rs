//! This machine's limits, and telling them apart from Herald's own failures.
//!
//! A process here may hold at most 20,000 descriptors and one source address has ~28k ephemeral ports; the
//! tool plans around both (worker processes, 127.0.0.x source addresses) and, when a connection still fails,
//! names the limit that stopped it rather than blaming the server.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Why one connection attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// This tool ran out of file descriptors (EMFILE/ENFILE).
    ToolFdLimit,
    /// No ephemeral port left for this source address (EADDRNOTAVAIL/EADDRINUSE).
    EphemeralPorts,
    /// Herald refused the TCP connection (not listening, or its accept backlog/fd limit).
    Refused,
    /// The connection was reset or closed before the session was ready.
    Reset,
    /// No answer in time.
    Timeout,
    /// Herald answered the handshake with an HTTP error (auth, origin, ...).
    HttpStatus,
    /// Anything else in the WebSocket handshake.
    Handshake,
}

impl Failure {
    pub fn from_io(e: &std::io::Error) -> Failure {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => Failure::ToolFdLimit,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => Failure::EphemeralPorts,
            Some(libc::ECONNREFUSED) => Failure::Refused,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => Failure::Reset,
            Some(libc::ETIMEDOUT) => Failure::Timeout,
            _ => match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Failure::Reset,
                _ => Failure::Handshake,
            },
        }
    }

    /// A limit of this machine or of the tool, not something Herald did.
    pub fn is_local_limit(self) -> bool {
        matches!(self, Failure::ToolFdLimit | Failure::EphemeralPorts)
    }

    pub fn explain(self) -> &'static str {
        match self {
            Failure::ToolFdLimit => "the load tool hit its open-files limit (not Herald)",
            Failure::EphemeralPorts => "ephemeral ports ran out for a source address (not Herald)",
            Failure::Refused => "Herald refused the TCP connection",
            Failure::Reset => "the connection was reset before the session was ready",
            Failure::Timeout => "no answer in time",
            Failure::HttpStatus => "Herald refused the handshake with an HTTP error",
            Failure::Handshake => "the WebSocket handshake failed",
        }
    }
}

pub type Failures = BTreeMap<Failure, u64>;

/// Raise the soft open-files limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    rl.rlim_cur
}

/// The ephemeral port range (`net.ipv4.ip_local_port_range`); (32768, 60999) if unreadable.
pub fn port_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// Which source address connection `i` binds to: `per_source` connections per 127.0.0.x, from `first`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Sources {
    pub first: Ipv4Addr,
    pub per_source: u64,
}

impl Sources {
    /// `per_source` defaults to 90 % of the ephemeral range, leaving room for sockets in TIME_WAIT.
    pub fn plan(first: Ipv4Addr, per_source: Option<u64>) -> Self {
        let (lo, hi) = port_range();
        let default = ((hi.saturating_sub(lo) + 1) as u64 * 9 / 10).max(1);
        Sources { first, per_source: per_source.unwrap_or(default).max(1) }
    }

    pub fn for_index(&self, i: u64) -> Ipv4Addr {
        let k = (i / self.per_source) as u32;
        Ipv4Addr::from(u32::from(self.first).wrapping_add(k))
    }

    pub fn count_for(&self, n: u64) -> u64 {
        n.div_ceil(self.per_source)
    }
}

/// How many worker processes hold `n` connections when one process may hold `fd_limit` descriptors.
/// 0 means "in this process". `reserve` descriptors per process stay free for HTTP clients, files, etc.
pub fn plan_workers(n: u64, fd_limit: u64, reserve: u64, forced: Option<usize>) -> usize {
    if let Some(w) = forced {
        return w;
    }
    let per = fd_limit.saturating_sub(reserve).max(1);
    if n <= per {
        0
    } else {
        n.div_ceil(per) as usize
    }
}

/// Herald's process as seen from `/proc` (same machine only).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
    /// user + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub fds: u64,
    pub fd_limit: u64,
    /// Bytes this process caused to be written to storage (`/proc/PID/io` `write_bytes`).
    #[serde(default)]
    pub disk_write_bytes: u64,
    pub at_ns: u64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may contain spaces: utime is the 14th field overall, stime the 15th.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let cpu_ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    let fd_limit = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let disk_write_bytes = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find(|l| l.starts_with("write_bytes:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    Some(ProcSample {
        disk_write_bytes,
        rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
        cpu_ticks,
        fds,
        fd_limit,
        at_ns: crate::schedule::mono_ns(),
    })
}

/// Share of one core used between two samples, in percent.
pub fn cpu_percent(a: &ProcSample, b: &ProcSample) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let secs = (b.at_ns.saturating_sub(a.at_ns)) as f64 / 1e9;
    if secs <= 0.0 {
        return 0.0;
    }
    (b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / hz) / secs * 100.0
}

/// CPU seconds (user + system) used between two samples.
pub fn cpu_secs(a: &ProcSample, b: &ProcSample) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / hz
}

/// (busy, total) clock ticks of one core so far, from /proc/stat.
pub fn core_ticks(core: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{core}");
    let l = stat.lines().find(|l| l.split_whitespace().next() == Some(&name))?;
    let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?; // idle + iowait
    Some((total - idle, total))
}

/// The one core a process is pinned to (`taskset -c N`), if it is pinned to exactly one.
pub fn pinned_core(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let list = status.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?.split_whitespace().nth(1)?;
    if list.contains(',') || list.contains('-') {
        return None;
    }
    list.parse().ok()
}

/// Plain-words limits to add to a report from a failure tally and Herald's descriptor use.
pub fn explain_failures(failures: &Failures, server: Option<&ProcSample>) -> Vec<String> {
    let mut out = Vec::new();
    for (f, n) in failures {
        if f.is_local_limit() {
            out.push(format!("{n} connections failed: {}", f.explain()));
        }
    }
    if let Some(s) = server {
        if s.fd_limit > 0 && s.fds + 16 >= s.fd_limit {
            out.push(format!(
                "Herald holds {} of its {} allowed descriptors: the machine's open-files limit, not Herald's \
                 code, refused further connections",
                s.fds, s.fd_limit
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_fill_one_address_before_the_next() {
        let s = Sources { first: Ipv4Addr::new(127, 0, 0, 1), per_source: 25_000 };
        assert_eq!(s.for_index(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(s.for_index(24_999), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(s.for_index(25_000), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(s.count_for(60_000), 3);
    }

    #[test]
    fn workers_only_when_one_process_cannot_hold_the_connections() {
        assert_eq!(plan_workers(10_000, 20_000, 2_000, None), 0);
        assert_eq!(plan_workers(18_000, 20_000, 2_000, None), 0);
        assert_eq!(plan_workers(19_000, 20_000, 2_000, None), 2);
        assert_eq!(plan_workers(50_000, 20_000, 2_000, None), 3);
        assert_eq!(plan_workers(10, 20_000, 2_000, Some(4)), 4);
    }

    #[test]
    fn io_errors_are_classified() {
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(Failure::from_io(&e), Failure::ToolFdLimit);
        assert!(Failure::from_io(&e).is_local_limit());
        let e = std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(Failure::from_io(&e), Failure::EphemeralPorts);
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(Failure::from_io(&e), Failure::Refused);
        assert!(!Failure::Refused.is_local_limit());
    }

    #[test]
    fn herald_at_its_descriptor_limit_is_named() {
        let s = ProcSample { fds: 19_995, fd_limit: 20_000, ..Default::default() };
        let mut f = Failures::new();
        f.insert(Failure::Timeout, 3);
        let l = explain_failures(&f, Some(&s));
        assert_eq!(l.len(), 1);
        assert!(l[0].contains("19995 of its 20000"));
    }

    #[test]
    fn core_ticks_grow() {
        let (busy, total) = core_ticks(0).unwrap();
        assert!(total >= busy && total > 0);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.fds > 0 && s.fd_limit > 0);
    }
}

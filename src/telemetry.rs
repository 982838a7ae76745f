//! Telemetry: tracing (pretty on a terminal, JSON in production), the Prometheus recorder, and the health
//! board that `/readyz` reads.
//!
//! Invariants: metric labels never carry user ids (unbounded cardinality, and personal data); the recorder is
//! installed once per process, so several gateways in one test binary share it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Start logging. Safe to call more than once (later calls do nothing).
pub fn init_tracing(s: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&s.filter));
    let json = match s.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// The process-wide Prometheus handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .expect("buckets are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (embedding apps); then ours only renders empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// One dependency's state, as `/readyz` shows it.
#[derive(Debug, Clone)]
pub struct Component {
    pub ok: bool,
    pub detail: String,
}

/// Components (broker, Redis, the store's last write: `inbox::Monitored`) report here; `/readyz` reads.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<&'static str, Component>>>,
}

impl Health {
    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let c = Component { ok, detail: detail.into() };
        self.components.lock().expect("health poisoned").insert(name, c);
    }

    pub fn snapshot(&self) -> Vec<(&'static str, Component)> {
        self.components.lock().expect("health poisoned").iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

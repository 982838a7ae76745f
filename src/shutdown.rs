//! Shutdown: one [`CancellationToken`] for the whole gateway, cancelled by SIGINT/SIGTERM (or by a test).
//!
//! Order on shutdown (see `run`): stop accepting connections, let in-flight requests (and their commits)
//! finish, close every session with 1001, wait for session tasks, then close the store (which commits what is
//! queued).

use tokio_util::sync::CancellationToken;

/// Cancel `token` on SIGINT or SIGTERM.
pub async fn on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        _ = token.cancelled() => return,
    }
    tracing::info!("shutdown signal received");
    token.cancel();
}

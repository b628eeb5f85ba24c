//! How a simulated provider takes connections: axum's router behind an accept loop of our own,
//! so that no client can hold the sandbox open — at most [`MAX_CONNECTIONS`] at once (more are
//! closed at once), a request's headers within [`HEADER_TIMEOUT`], and the body read only after
//! the credentials were checked (`server::message`), up to a small cap. Hand-written over
//! hyper-util because `axum::serve` sets neither a connection cap nor a header-read timeout.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections served at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send a request's headers (and, on a new connection, its
/// first byte).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connections still open may take to finish once the sandbox stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A passing failure (too many open files): wait a moment, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the cap: closed at once
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            // hyper's header timeout starts at the first byte: a connection that sends none
            // within the same time is closed too, or silent ones could fill every slot.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                return;
            }
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
            }
            drop(slot);
        });
    }
    connections.close();
    let _ = tokio::time::timeout(DRAIN, connections.wait()).await;
}

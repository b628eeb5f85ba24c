//! Why a campaign stops early: Ctrl-C / SIGTERM (`INTERRUPTED`, exit 130) or the start of quiet
//! hours (`PAUSED`, exit 75). Both stop the pipeline the same way, through one cancellation
//! token; the first cause to fire is the one recorded.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::job::JobStatus;

pub(super) struct Stops {
    token: CancellationToken,
    cause: Arc<Mutex<Option<JobStatus>>>,
}

impl Stops {
    pub(super) fn new() -> Stops {
        Stops {
            token: CancellationToken::new(),
            cause: Arc::default(),
        }
    }

    /// When `event` happens, stop the campaign as `status` (unless it already stopped).
    pub(super) fn on(
        &self,
        event: impl Future<Output = ()> + Send + 'static,
        status: JobStatus,
        message: &'static str,
    ) {
        let (token, cause) = (self.token.clone(), self.cause.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = event => {}
                () = token.cancelled() => return,
            }
            let mut cause = cause.lock().unwrap_or_else(|p| p.into_inner());
            if cause.is_none() {
                *cause = Some(status);
                tracing::warn!("{message}");
                token.cancel();
            }
        });
    }

    pub(super) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The status the first stop asked for, if any.
    pub(super) fn cause(&self) -> Option<JobStatus> {
        *self.cause.lock().unwrap_or_else(|p| p.into_inner())
    }
}

//! What the operator is told about a run: the end-of-run [`summary`] (text or JSON) and the
//! files a run writes ([`output`], [`invalid_rows`]), the live [`progress`] (a bar at a terminal, a log line every
//! 10 s elsewhere), the [`metrics`] and the watched conditions that raise [`alerts`].

pub mod alerts;
pub mod invalid_rows;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod summary;

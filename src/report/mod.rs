//! What the operator is told about a run: the end-of-run [`summary`] (text or JSON), the live
//! [`progress`] (a bar at a terminal, a log line every 10 s elsewhere) and [`alerts`].

pub mod alerts;
pub mod metrics;
pub mod progress;
pub mod summary;

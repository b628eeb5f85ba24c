//! The run's resume point as the run goes (`source::resume`): the start of the first batch of
//! source rows the run has not finished with, and the counts before it.
//!
//! The producer opens a batch when it reads its first row and says, once the journal answered
//! its admission, how many of its recipients are to be sent; the collector closes them one by
//! one as their outcomes are committed. A batch with nothing left open goes; the earliest one
//! left is the point. The collector writes it in the transaction that commits the outcomes
//! that moved it, so a point on disk never runs ahead of the outcomes on disk. A recipient
//! given back to the queue (a stopped run) keeps its batch open: the point stays before it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::job::SourceCounts;
use crate::source::RowStart;
use crate::source::resume::{FileIdentity, ResumePoint};

/// What every point of this run shares: the file, the screening, the run that last read the
/// file from its first row.
#[derive(Debug, Clone)]
pub struct Basis {
    pub file: FileIdentity,
    pub screening: String,
    pub base_run: u32,
}

/// The run's batches not finished with, and the last point handed out.
pub struct Checkpoints {
    basis: Basis,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By the line of their first row.
    open: BTreeMap<u64, OpenBatch>,
    /// A row came without a start: no later point can be trusted, the last one stays.
    lost: bool,
    last: Option<RowStart>,
}

struct OpenBatch {
    start: RowStart,
    counts: SourceCounts,
    in_range: u64,
    /// Recipients to be sent and not finished; `None` until the journal answered.
    unfinished: Option<usize>,
}

/// A batch the producer opened, to tell [`Checkpoints::admitted`] about.
#[derive(Debug, Clone, Copy)]
pub struct BatchKey(Option<u64>);

impl Checkpoints {
    pub fn new(basis: Basis) -> Checkpoints {
        Checkpoints {
            basis,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a consistent map: every method
        // changes it in one step.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A batch whose first row starts at `start`, with `counts` and `in_range` rows before it.
    pub fn open(&self, start: Option<RowStart>, counts: SourceCounts, in_range: u64) -> BatchKey {
        let mut state = self.state();
        let Some(start) = start else {
            state.lost = true;
            return BatchKey(None);
        };
        state.open.insert(
            start.line,
            OpenBatch {
                start,
                counts,
                in_range,
                unfinished: None,
            },
        );
        BatchKey(Some(start.line))
    }

    /// The journal admitted the batch: `to_send` of its recipients are to be sent.
    pub fn admitted(&self, key: BatchKey, to_send: usize) {
        let Some(line) = key.0 else { return };
        let mut state = self.state();
        if to_send == 0 {
            state.open.remove(&line);
        } else if let Some(batch) = state.open.get_mut(&line) {
            batch.unfinished = Some(to_send);
        }
    }

    /// The outcome of the recipient at `line` is in the transaction about to commit.
    pub fn finished(&self, line: u64) {
        let mut state = self.state();
        let Some((&first, batch)) = state.open.range_mut(..=line).next_back() else {
            return;
        };
        if let Some(unfinished) = &mut batch.unfinished {
            *unfinished = unfinished.saturating_sub(1);
            if *unfinished == 0 {
                state.open.remove(&first);
            }
        }
    }

    /// The point as of now, if it moved since the last one handed out.
    pub fn moved(&self) -> Option<ResumePoint> {
        let mut state = self.state();
        if state.lost {
            return None;
        }
        let (_, batch) = state.open.first_key_value()?;
        if state.last == Some(batch.start) {
            return None;
        }
        let point = ResumePoint {
            file: self.basis.file.clone(),
            screening: self.basis.screening.clone(),
            base_run: self.basis.base_run,
            start: batch.start,
            counts: batch.counts,
            in_range: batch.in_range,
        };
        state.last = Some(batch.start);
        Some(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::LineStart;

    fn start(line: u64) -> Option<RowStart> {
        Some(RowStart {
            at: LineStart {
                byte: line * 10,
                after_cr: false,
            },
            line,
        })
    }

    fn counts(total: u64) -> SourceCounts {
        SourceCounts {
            total,
            ..SourceCounts::default()
        }
    }

    fn checkpoints() -> Checkpoints {
        Checkpoints::new(Basis {
            file: FileIdentity {
                len: 1000,
                modified: (1, 2),
                head: "h".into(),
            },
            screening: "s".into(),
            base_run: 1,
        })
    }

    #[test]
    fn the_point_is_the_first_batch_not_finished_with() {
        let points = checkpoints();
        let first = points.open(start(2), counts(0), 0);
        assert_eq!(points.moved().unwrap().start, start(2).unwrap());
        let second = points.open(start(5), counts(3), 2);
        points.admitted(first, 2);
        points.admitted(second, 1);
        assert!(points.moved().is_none(), "the same point twice");
        points.finished(3);
        assert!(points.moved().is_none());
        // The second batch finishes first: the point waits for the first.
        points.finished(6);
        assert!(points.moved().is_none());
        points.finished(2);
        // Both finished: nothing open, the last point stays (nothing to write).
        assert!(points.moved().is_none());
        let third = points.open(start(8), counts(6), 5);
        let point = points.moved().unwrap();
        assert_eq!(
            (point.start.line, point.counts.total, point.in_range),
            (8, 6, 5)
        );
        points.admitted(third, 0);
        let fourth = points.open(start(9), counts(7), 6);
        assert_eq!(points.moved().unwrap().start.line, 9);
        points.admitted(fourth, 1);
    }

    #[test]
    fn a_row_without_a_start_freezes_the_point() {
        let points = checkpoints();
        let first = points.open(start(2), counts(0), 0);
        assert!(points.moved().is_some());
        points.admitted(first, 0);
        points.open(None, counts(1), 1);
        points.open(start(9), counts(2), 2);
        assert!(points.moved().is_none());
    }
}

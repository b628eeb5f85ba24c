//! Resuming a CSV source where an earlier run of the job got to, instead of from its first row.
//!
//! A resumed run must read its source again: the rows an earlier run did not reach, and the
//! counts (`total`, `invalid`, `duplicate`, `suppressed`) of the whole source. Re-reading every
//! row an earlier run already finished costs a journal lookup each — about 25 s before the
//! first send of a half-done 10 M-row job. So a run records, with its journal writes, a
//! [`ResumePoint`]: the start of the first row of the source that it has not finished with
//! (every row before it is recorded in a final state), and the counts of the rows before it. A
//! later run of the job opens the file there and starts from those counts — if the file and
//! the screening are what they were ([`ResumePoint::fits`]); otherwise it reads the file from
//! its first row, and says why.
//!
//! A database source has no such point: a query's row order is not stable between runs.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::RowStart;
use crate::job::SourceCounts;
use crate::phone::Phone;

/// How much of a file's start its identity hashes.
const HEAD: u64 = 64 * 1024;

/// What a file is, as far as resuming it goes: a change of its size, its modification time or
/// its first 64 KiB means a change of the file (an edit, an export overwriting it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    pub len: u64,
    /// Seconds and nanoseconds since the Unix epoch.
    pub modified: (u64, u32),
    /// SHA-256 of the first 64 KiB, in hex.
    pub head: String,
}

impl FileIdentity {
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let file = std::fs::File::open(path)?;
        let metadata = file.metadata()?;
        let modified = metadata
            .modified()?
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut head = Vec::new();
        file.take(HEAD).read_to_end(&mut head)?;
        Ok(FileIdentity {
            len: metadata.len(),
            modified: (modified.as_secs(), modified.subsec_nanos()),
            head: hex::encode(Sha256::digest(&head)),
        })
    }
}

/// What decides which rows of a file a run screens out besides the job's own parameters: the
/// suppression list and an ad's consent column (both from the config, which may change between
/// runs). As a fingerprint, the same whatever the list's order.
pub fn screening_fingerprint(suppression: &HashSet<Phone>, consent_column: Option<&str>) -> String {
    let mut phones: Vec<&str> = suppression.iter().map(Phone::as_str).collect();
    phones.sort_unstable();
    let mut hash = Sha256::new();
    for phone in phones {
        hash.update(phone.as_bytes());
        hash.update(b"\n");
    }
    hash.update(b"consent:");
    hash.update(consent_column.unwrap_or("").as_bytes());
    hex::encode(hash.finalize())
}

/// Where a later run of a job may start reading its CSV file, and what it finds before there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    /// The file the point was taken on.
    pub file: FileIdentity,
    /// The screening it was taken under ([`screening_fingerprint`]).
    pub screening: String,
    /// The run that last read the file from its first row. Every run since read this same
    /// file, so a recipient that one of them recorded at a line before [`start`](Self::start)
    /// first occurs there: a later row with its phone is a duplicate.
    pub base_run: u32,
    /// The first row not finished with; every row before it is recorded in a final state.
    pub start: RowStart,
    /// The counts of the rows before `start`.
    pub counts: SourceCounts,
    /// The rows before `start` in the age range (the progress display's position).
    pub in_range: u64,
}

/// Why a run reads its file from the first row although the job has a resume point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfit {
    FileChanged,
    ScreeningChanged,
    /// The point is none a run can have recorded on this file (a journal edited or damaged):
    /// trusting it could skip rows, or count rows before it as duplicates.
    Implausible,
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Misfit::FileChanged => "the file changed since the job's last run",
            Misfit::ScreeningChanged => {
                "the suppression list or the consent column changed since the job's last run"
            }
            Misfit::Implausible => "the job's resume point does not fit its file",
        })
    }
}

impl ResumePoint {
    /// Whether a run may start at this point of `path`: the file is the one it was taken on
    /// (`file`, its identity now), the rows are screened as they were, and the point is one a
    /// run can have recorded there.
    pub fn fits(&self, path: &Path, file: &FileIdentity, screening: &str) -> Result<(), Misfit> {
        if *file != self.file || self.start.at.byte > file.len {
            return Err(Misfit::FileChanged);
        }
        if screening != self.screening {
            return Err(Misfit::ScreeningChanged);
        }
        if !self.plausible() || !self.starts_a_line(path) {
            return Err(Misfit::Implausible);
        }
        Ok(())
    }

    /// What any point a run recorded satisfies: a data row (after the header's line) starts
    /// after at least one byte a line, the rows before it hold at least a line each, and the
    /// counts are parts of the total.
    fn plausible(&self) -> bool {
        let RowStart { at, line } = self.start;
        let c = &self.counts;
        line >= 2
            && at.byte > 0
            && line - 1 <= at.byte
            && c.total < line
            && [c.invalid, c.duplicate, c.suppressed, self.in_range]
                .iter()
                .all(|&n| n <= c.total)
            && c.no_consent.saturating_add(c.consent_expired) <= c.suppressed
    }

    /// Whether the point's byte starts a line of `path` as it says: the byte before it ends a
    /// line, a `\r` exactly when the point says so.
    fn starts_a_line(&self, path: &Path) -> bool {
        use std::io::{Seek, SeekFrom};
        let at = self.start.at;
        let Some(before) = at.byte.checked_sub(1) else {
            return false;
        };
        let mut byte = [0u8; 1];
        let read = std::fs::File::open(path).and_then(|mut file| {
            file.seek(SeekFrom::Start(before))?;
            file.read_exact(&mut byte)
        });
        read.is_ok() && matches!((byte[0], at.after_cr), (b'\r', true) | (b'\n', false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rewritten_with_other_bytes_is_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, "name,phone\na,010-1111-2222\n").unwrap();
        let first = FileIdentity::of(&path).unwrap();
        assert_eq!(FileIdentity::of(&path).unwrap(), first);
        std::fs::write(&path, "name,phone\nb,010-1111-2222\n").unwrap();
        let second = FileIdentity::of(&path).unwrap();
        assert_eq!(second.len, first.len);
        assert_ne!(second.head, first.head);
        assert_ne!(second, first);
    }

    #[test]
    fn the_screening_fingerprint_ignores_order_and_sees_the_consent_column() {
        let phone = |text: &str| Phone::parse(text).unwrap();
        let a: HashSet<Phone> = [phone("010-1111-2222"), phone("010-3333-4444")].into();
        let b: HashSet<Phone> = [phone("010-3333-4444"), phone("010-1111-2222")].into();
        assert_eq!(
            screening_fingerprint(&a, None),
            screening_fingerprint(&b, None)
        );
        assert_ne!(
            screening_fingerprint(&a, None),
            screening_fingerprint(&a, Some("consent"))
        );
        assert_ne!(
            screening_fingerprint(&a, None),
            screening_fingerprint(&HashSet::new(), None)
        );
    }
}

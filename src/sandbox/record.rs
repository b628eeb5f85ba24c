//! `--record FILE`: every message the sandbox accepted, one JSON object a line, written whole
//! with one `write` so that a reader (or a crash) never sees half a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One line of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedMessage {
    pub provider: String,
    pub credential: String,
    pub phone: String,
    pub message: String,
    pub id: String,
    pub at: String,
}

impl RecordedMessage {
    /// Reads a record file back (tests, the demo).
    pub fn read_all(path: &Path) -> std::io::Result<Vec<RecordedMessage>> {
        let text = std::fs::read_to_string(path)?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).map_err(std::io::Error::other))
            .collect()
    }
}

#[derive(Debug)]
pub(super) struct Recorder {
    file: Mutex<File>,
}

impl Recorder {
    pub(super) fn create(path: &Path) -> std::io::Result<Self> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        // Accepted messages hold phones: readable by their owner only, never via a symlink.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        let file = options.open(path).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot open the record file {}: {error}", path.display()),
            )
        })?;
        Ok(Recorder {
            file: Mutex::new(file),
        })
    }

    pub(super) fn write(&self, message: &RecordedMessage) {
        let mut line = serde_json::to_vec(message).expect("a record serialises");
        line.push(b'\n');
        let mut file = self.file.lock().expect("record lock");
        if let Err(error) = file.write_all(&line) {
            tracing::error!("cannot write to the record file: {error}");
        }
    }
}

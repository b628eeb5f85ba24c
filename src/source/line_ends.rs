//! Line ends as an editor counts them. Files come with `\n`, `\r\n` or, from old spreadsheet
//! exports, a lone `\r`; this reader hands the csv crate `\n` only (each `\r\n` and each lone
//! `\r` becomes one `\n`), and an empty line as a line holding one space. The csv crate then
//! ends records at line ends and counts lines as an editor does: with `\r\n` it reports a
//! record one line low (it starts at the `\n` of the line before), with a lone `\r` it sees one
//! line, and it skips an empty line without counting it, so every later line number is low.
//! A line of white space is no row (the readers skip it); inside a quoted field an empty line
//! gains that one space. Hand-written: no crate offers this as a `Read`.
//!
//! The reader also remembers where in the file each line it hands out starts ([`LineStart`]),
//! so that a resumed campaign can open an unchanged file at the first row it still needs
//! instead of re-reading every row before it (`source::resume`).

use std::collections::VecDeque;
use std::io::{self, Read};

/// Where a line starts in the file itself, with the one piece of the reader's state that
/// matters there: whether the line before ended with a `\r` (a `\n` right here is then the
/// rest of that line end, not an empty line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LineStart {
    /// The byte offset in the file.
    pub byte: u64,
    pub after_cr: bool,
}

/// `inner` with every `\r\n` and every lone `\r` read as `\n`, and every empty line as ` \n`.
pub struct UnixLineEnds<R> {
    inner: R,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    /// The last byte read was a `\r` (handed out as `\n`): a `\n` right after it is dropped.
    after_cr: bool,
    /// Nothing has been handed out on the current line yet.
    at_line_start: bool,
    /// The `\n` of an empty line, after its space, when the caller's buffer was full.
    pending_newline: bool,
    /// The file offset of `buffer[0]`.
    buffer_offset: u64,
    /// Bytes handed out so far: the offsets the csv crate's positions count.
    handed_out: u64,
    /// When asked for: the lines handed out and not yet asked about by
    /// [`line_start`](Self::line_start), by their handed-out offset. The csv crate reads at most
    /// its buffer ahead, so this stays small; [`MAX_LINE_STARTS`] bounds it anyway (a field
    /// of a million quoted newlines), forgetting the oldest.
    line_starts: Option<VecDeque<(u64, LineStart)>>,
}

/// The most line starts remembered (a few hundred kilobytes).
const MAX_LINE_STARTS: usize = 16 * 1024;

impl<R> UnixLineEnds<R> {
    pub fn new(inner: R) -> Self {
        UnixLineEnds {
            line_starts: None,
            ..Self::tracking_line_starts(
                inner,
                LineStart {
                    byte: 0,
                    after_cr: false,
                },
            )
        }
    }

    /// `inner`, positioned at `at` (the file's start, or a line start this reader reported
    /// earlier), remembering where lines start for [`line_start`](Self::line_start).
    pub fn tracking_line_starts(inner: R, at: LineStart) -> Self {
        UnixLineEnds {
            inner,
            buffer: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            after_cr: at.after_cr,
            at_line_start: true,
            pending_newline: false,
            buffer_offset: at.byte,
            handed_out: 0,
            line_starts: Some(VecDeque::from([(0, at)])),
        }
    }

    /// Where the line that starts at handed-out offset `handed_out` (a csv position's byte)
    /// starts in the file; `None` if no line starts there. Forgets every line before it.
    pub fn line_start(&mut self, handed_out: u64) -> Option<LineStart> {
        let line_starts = self.line_starts.as_mut()?;
        while let Some(&(at, start)) = line_starts.front() {
            if at > handed_out {
                return None;
            }
            line_starts.pop_front();
            if at == handed_out {
                return Some(start);
            }
        }
        None
    }

    /// A `\n` was just handed out: the next line starts here.
    fn line_ended(&mut self) {
        let Some(line_starts) = self.line_starts.as_mut() else {
            return;
        };
        if line_starts.len() == MAX_LINE_STARTS {
            line_starts.pop_front();
        }
        line_starts.push_back((
            self.handed_out,
            LineStart {
                byte: self.buffer_offset + self.start as u64,
                after_cr: self.after_cr,
            },
        ));
    }
}

impl<R: Read> Read for UnixLineEnds<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < out.len() {
            if self.pending_newline {
                self.pending_newline = false;
                out[written] = b'\n';
                written += 1;
                self.handed_out += 1;
                self.line_ended();
                continue;
            }
            if self.start == self.end {
                if written > 0 {
                    break; // hand out what there is rather than wait for more
                }
                let read = self.inner.read(&mut self.buffer)?;
                self.buffer_offset += self.end as u64;
                self.end = read;
                self.start = 0;
                if self.end == 0 {
                    break; // the end of the file
                }
            }
            let byte = self.buffer[self.start];
            self.start += 1;
            let byte = match byte {
                b'\r' => {
                    self.after_cr = true;
                    b'\n'
                }
                b'\n' if self.after_cr => {
                    self.after_cr = false;
                    continue;
                }
                other => {
                    self.after_cr = false;
                    other
                }
            };
            if byte == b'\n' && self.at_line_start {
                out[written] = b' ';
                self.pending_newline = true;
                self.handed_out += 1;
            } else {
                out[written] = byte;
                self.at_line_start = byte == b'\n';
                self.handed_out += 1;
                if byte == b'\n' {
                    self.line_ended();
                }
            }
            written += 1;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` through the adapter `chunk` bytes at a time.
    fn normalised(input: &[u8], chunk: usize) -> Vec<u8> {
        struct Chunks<'a>(&'a [u8], usize);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        UnixLineEnds::new(Chunks(input, chunk))
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_line_end_becomes_one_newline_whatever_the_read_sizes() {
        let input = b"a\r\nb\rc\nd\r\r\ne\r";
        for chunk in 1..=input.len() {
            assert_eq!(
                normalised(input, chunk),
                b"a\nb\nc\nd\n \ne\n",
                "chunk {chunk}"
            );
        }
        assert_eq!(normalised(b"\r\n\n", 1), b" \n \n");
        // A caller's buffer of one byte splits an empty line's space from its newline.
        let mut reader = UnixLineEnds::new(&b"x\r\n\r\ny"[..]);
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while reader.read(&mut byte).unwrap() == 1 {
            out.push(byte[0]);
        }
        assert_eq!(out, b"x\n \ny");
        assert_eq!(normalised(b"", 4), b"");
    }
}

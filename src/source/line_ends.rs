//! Line ends as an editor counts them. Files come with `\n`, `\r\n` or, from old spreadsheet
//! exports, a lone `\r`; this reader hands the csv crate `\n` only (each `\r\n` and each lone
//! `\r` becomes one `\n`), and an empty line as a line holding one space. The csv crate then
//! ends records at line ends and counts lines as an editor does: with `\r\n` it reports a
//! record one line low (it starts at the `\n` of the line before), with a lone `\r` it sees one
//! line, and it skips an empty line without counting it, so every later line number is low.
//! A line of white space is no row (the readers skip it); inside a quoted field an empty line
//! gains that one space. Hand-written: no crate offers this as a `Read`.

use std::io::{self, Read};

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
}

impl<R> UnixLineEnds<R> {
    pub fn new(inner: R) -> Self {
        UnixLineEnds {
            inner,
            buffer: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            after_cr: false,
            at_line_start: true,
            pending_newline: false,
        }
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
                continue;
            }
            if self.start == self.end {
                if written > 0 {
                    break; // hand out what there is rather than wait for more
                }
                self.end = self.inner.read(&mut self.buffer)?;
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
            } else {
                out[written] = byte;
                self.at_line_start = byte == b'\n';
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

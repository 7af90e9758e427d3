//! HMP front end of the block commands: QEMU 7.2's argument types for them (`-f`-style
//! flags, `B` device names, `s` strings with double-quote escapes, `o` sizes defaulting to
//! MiB) with its error texts, and the commands' output.

use super::info::{info_block_text, info_blockstats_text};
use super::jobs::{info_block_jobs_text, StreamRequest};
use super::snapshot::{NewImageMode, SnapshotRequest};
use crate::monitor::commands::{CommandError, MonitorCommands};

/// The block commands HMP offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockHmp {
    InfoBlock,
    InfoBlockstats,
    InfoBlockJobs,
    SnapshotBlkdev,
    BlockStream,
    Commit,
    BlockJobCancel,
    BlockJobComplete,
    BlockJobPause,
    BlockJobResume,
    BlockJobSetSpeed,
}

/// A parse failure: the text HMP prints.
struct Fail(String);

/// QEMU's parser state over the argument text of one command.
struct Args<'a> {
    /// The command as `help` knows it (for `Try "help …"`).
    help_name: &'static str,
    /// The name in messages.
    name: &'static str,
    text: &'a [u8],
    pos: usize,
}

impl<'a> Args<'a> {
    fn new(help_name: &'static str, name: &'static str, text: &'a [u8]) -> Args<'a> {
        Args {
            help_name,
            name,
            text,
            pos: 0,
        }
    }

    fn fail(&self, what: &str) -> Fail {
        Fail(format!(
            "{what}\nTry \"help {}\" for more information\n",
            self.help_name
        ))
    }

    fn skip_spaces(&mut self) {
        while self.pos < self.text.len() && self.text[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    /// A `-x` flag type: set when the next word is `-x`. `later` are the flags that may
    /// still follow (QEMU accepts them in their own turn).
    fn flag(&mut self, letter: u8, later: &[u8]) -> Result<bool, Fail> {
        self.skip_spaces();
        if self.text.get(self.pos) != Some(&b'-') {
            return Ok(false);
        }
        let c = self.text.get(self.pos + 1).copied().unwrap_or(0);
        if c == letter {
            self.pos += 2;
            return Ok(true);
        }
        if later.contains(&c) {
            return Ok(false);
        }
        Err(self.fail(&format!(
            "{}: unsupported option -{}",
            self.name,
            String::from_utf8_lossy(&[c])
        )))
    }

    /// QEMU's `get_str`: a word, or a double-quoted string with `\n \r \\ \' \"`.
    fn word(&mut self) -> Result<Option<String>, Fail> {
        self.skip_spaces();
        if self.pos >= self.text.len() {
            return Ok(None);
        }
        let mut out = Vec::new();
        if self.text[self.pos] == b'"' {
            self.pos += 1;
            loop {
                match self.text.get(self.pos) {
                    None => return Err(self.fail(&format!("{}: unterminated string", self.name))),
                    Some(b'"') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let c = match self.text.get(self.pos + 1) {
                            Some(b'n') => b'\n',
                            Some(b'r') => b'\r',
                            Some(c @ (b'\\' | b'\'' | b'"')) => *c,
                            _ => {
                                return Err(
                                    self.fail(&format!("{}: unsupported escape code", self.name))
                                )
                            }
                        };
                        out.push(c);
                        self.pos += 2;
                    }
                    Some(&c) => {
                        out.push(c);
                        self.pos += 1;
                    }
                }
            }
        } else {
            while self.pos < self.text.len() && !self.text[self.pos].is_ascii_whitespace() {
                out.push(self.text[self.pos]);
                self.pos += 1;
            }
        }
        Ok(Some(String::from_utf8_lossy(&out).into_owned()))
    }

    /// A required `B` argument.
    fn device(&mut self) -> Result<String, Fail> {
        match self.word()? {
            Some(d) => Ok(d),
            None => Err(self.fail(&format!("{}: block device name expected", self.name))),
        }
    }

    /// An `o` argument: a size, MiB unless a suffix says otherwise; `None` when optional
    /// and absent.
    fn size(&mut self, optional: bool) -> Result<Option<i64>, Fail> {
        self.skip_spaces();
        if optional && self.pos >= self.text.len() {
            return Ok(None);
        }
        let rest = &self.text[self.pos..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut end = digits;
        if rest.get(end) == Some(&b'.') {
            end += 1;
            end += rest[end..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
        }
        if digits == 0 {
            return Err(self.fail("invalid size"));
        }
        let number: f64 = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.fail("invalid size"))?;
        let (mul, used) = match rest.get(end).map(|c| c.to_ascii_uppercase()) {
            Some(b'B') => (1u64, 1),
            Some(b'K') => (1 << 10, 1),
            Some(b'M') => (1 << 20, 1),
            Some(b'G') => (1 << 30, 1),
            Some(b'T') => (1 << 40, 1),
            Some(b'P') => (1 << 50, 1),
            Some(b'E') => (1 << 60, 1),
            _ => (1 << 20, 0),
        };
        let value = number * mul as f64;
        if !(0.0..=i64::MAX as f64).contains(&value) {
            return Err(self.fail("invalid size"));
        }
        self.pos += end + used;
        Ok(Some(value as i64))
    }

    fn end(&mut self) -> Result<(), Fail> {
        self.skip_spaces();
        if self.pos < self.text.len() {
            return Err(self.fail(&format!(
                "{}: extraneous characters at the end of line",
                self.name
            )));
        }
        Ok(())
    }
}

fn report(result: Result<(), CommandError>) -> String {
    match result {
        Ok(()) => String::new(),
        Err(e) => format!("Error: {}\n", e.desc),
    }
}

/// Runs a block command; `argument` is the text after the command name.
pub(crate) fn execute(
    commands: &MonitorCommands,
    command: BlockHmp,
    argument: Option<&[u8]>,
) -> Vec<u8> {
    let text = argument.unwrap_or(b"");
    match run(commands, command, text) {
        Ok(out) => out.into_bytes(),
        Err(Fail(out)) => out.into_bytes(),
    }
}

fn run(commands: &MonitorCommands, command: BlockHmp, text: &[u8]) -> Result<String, Fail> {
    Ok(match command {
        BlockHmp::InfoBlock => {
            let mut a = Args::new("info block", "block", text);
            let nodes = a.flag(b'n', b"v")?;
            let verbose = a.flag(b'v', b"")?;
            let device = a.word()?;
            a.end()?;
            if nodes {
                return Ok("Error: vmscope does not implement 'info block -n'\n".into());
            }
            info_block_text(&commands.query_block(), device.as_deref(), verbose)
        }
        BlockHmp::InfoBlockstats => {
            Args::new("info blockstats", "blockstats", text).end()?;
            let drives: Vec<_> = commands.drives().iter().cloned().collect();
            info_blockstats_text(&drives)
        }
        BlockHmp::InfoBlockJobs => {
            Args::new("info block-jobs", "block-jobs", text).end()?;
            info_block_jobs_text(&commands.query_block_jobs())
        }
        BlockHmp::SnapshotBlkdev => {
            let mut a = Args::new("snapshot_blkdev", "snapshot_blkdev", text);
            let reuse = a.flag(b'n', b"")?;
            let device = a.device()?;
            let file = a.word()?;
            let format = a.word()?;
            a.end()?;
            let Some(file) = file else {
                return Ok("Error: Parameter 'snapshot-file' is missing\n".into());
            };
            report(commands.blockdev_snapshot_sync(&SnapshotRequest {
                device: Some(device),
                node_name: None,
                snapshot_file: file,
                snapshot_node_name: None,
                format,
                mode: if reuse {
                    NewImageMode::Existing
                } else {
                    NewImageMode::AbsolutePaths
                },
            }))
        }
        BlockHmp::BlockStream => {
            let mut a = Args::new("block_stream", "block_stream", text);
            let device = a.device()?;
            let speed = a.size(true)?;
            let base = a.word()?;
            a.end()?;
            report(commands.block_stream(&StreamRequest {
                job_id: Some(device.clone()),
                device,
                base,
                speed,
                ..Default::default()
            }))
        }
        BlockHmp::Commit => {
            let mut a = Args::new("commit", "commit", text);
            let device = a.device()?;
            a.end()?;
            match commands.hmp_commit(&device) {
                Ok(()) => String::new(),
                Err(text) => format!("{text}\n"),
            }
        }
        BlockHmp::BlockJobCancel => {
            let mut a = Args::new("block_job_cancel", "block_job_cancel", text);
            let force = a.flag(b'f', b"")?;
            let device = a.device()?;
            a.end()?;
            report(commands.block_job_cancel(&device, force))
        }
        BlockHmp::BlockJobComplete | BlockHmp::BlockJobPause | BlockHmp::BlockJobResume => {
            let name = match command {
                BlockHmp::BlockJobComplete => "block_job_complete",
                BlockHmp::BlockJobPause => "block_job_pause",
                _ => "block_job_resume",
            };
            let mut a = Args::new(name, name, text);
            let device = a.device()?;
            a.end()?;
            report(match command {
                BlockHmp::BlockJobComplete => commands.block_job_complete(&device),
                BlockHmp::BlockJobPause => commands.block_job_pause(&device),
                _ => commands.block_job_resume(&device),
            })
        }
        BlockHmp::BlockJobSetSpeed => {
            let mut a = Args::new("block_job_set_speed", "block_job_set_speed", text);
            let device = a.device()?;
            let speed = a.size(false)?.unwrap_or(0);
            a.end()?;
            report(commands.block_job_set_speed(&device, speed))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_to_mib_and_stop_at_the_suffix() {
        let size = |t: &[u8]| {
            let mut a = Args::new("x", "x", t);
            let v = a.size(true).map_err(|Fail(s)| s);
            (v, a.pos)
        };
        assert_eq!(size(b"1"), (Ok(Some(1 << 20)), 1));
        assert_eq!(size(b"1x"), (Ok(Some(1 << 20)), 1));
        assert_eq!(size(b"4k"), (Ok(Some(4096)), 2));
        assert_eq!(size(b"1.5M"), (Ok(Some(1572864)), 4));
        assert_eq!(size(b"0B"), (Ok(Some(0)), 2));
        assert_eq!(size(b""), (Ok(None), 0));
        let invalid = "invalid size\nTry \"help x\" for more information\n".to_string();
        assert_eq!(size(b"-5").0, Err(invalid.clone()));
        assert_eq!(size(b"abc").0, Err(invalid));
    }

    #[test]
    fn flags_words_and_errors_as_qemu() {
        let mut a = Args::new("block_job_cancel", "block_job_cancel", b" -f \"a b\\\"\" c");
        assert!(a.flag(b'f', b"").unwrap_or(false));
        assert_eq!(a.word().ok().flatten().as_deref(), Some("a b\""));
        assert_eq!(a.word().ok().flatten().as_deref(), Some("c"));
        let mut a = Args::new("block_job_cancel", "block_job_cancel", b"-x d");
        assert_eq!(
            a.flag(b'f', b"").map_err(|Fail(s)| s),
            Err("block_job_cancel: unsupported option -x\nTry \"help block_job_cancel\" for more information\n".into())
        );
    }
}

//! The HMP command table, and QEMU 7.2's rules for parsing a command line against it,
//! for `help` and for TAB completion.
//!
//! Only commands vmscope implements are listed; anything else is `unknown command`, as for
//! a QEMU built without it.

use super::readline::{is_space, Completions};
use crate::monitor::block::hmp::BlockHmp;

/// What a command does (the HMP front end runs it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Help,
    /// `info` without a subcommand lists the subcommands.
    InfoHelp,
    InfoStatus,
    InfoVersion,
    InfoName,
    InfoKvm,
    InfoCpus,
    InfoChardev,
    InfoRegisters,
    InfoQtree,
    InfoMtree,
    SystemReset,
    SystemPowerdown,
    Stop,
    Cont,
    Quit,
    /// The block commands (`monitor::block`), which parse their own arguments.
    Block(BlockHmp),
}

/// The arguments a command takes (QEMU's `args_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Args {
    None,
    /// `S?`: the rest of the line, optional.
    OptionalRest,
    /// `info registers`'s `cpustate_all:-a,vcpu:i?`, checked here and interpreted by the
    /// command (see [`super::args::registers`]); the argument is the rest of the line.
    Registers,
    /// `info mtree`'s `-f`/`-d`/`-o`/`-D` flags (see [`super::args::mtree_flags`]); the
    /// argument is the rest of the line.
    MtreeFlags,
}

pub(crate) struct HmpCommand {
    /// Name and aliases, `|`-separated, as `help` prints them.
    pub(crate) name: &'static str,
    pub(crate) params: &'static str,
    pub(crate) help: &'static str,
    pub(crate) args: Args,
    pub(crate) action: Action,
    pub(crate) sub_table: Option<&'static [HmpCommand]>,
}

impl HmpCommand {
    fn matches(&self, word: &[u8]) -> bool {
        self.name.split('|').any(|alias| alias.as_bytes() == word)
    }
}

/// Sorted by name, as QEMU sorts its table (it is the order of `help`).
pub(crate) static COMMANDS: &[HmpCommand] = &[
    HmpCommand {
        name: "block_job_cancel",
        params: "[-f] device",
        help: "stop an active background block operation (use -f\n\t\t\t if you want to abort the operation immediately\n\t\t\t instead of keep running until data is in sync)",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::BlockJobCancel),
        sub_table: None,
    },
    HmpCommand {
        name: "block_job_complete",
        params: "device",
        help: "stop an active background block operation",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::BlockJobComplete),
        sub_table: None,
    },
    HmpCommand {
        name: "block_job_pause",
        params: "device",
        help: "pause an active background block operation",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::BlockJobPause),
        sub_table: None,
    },
    HmpCommand {
        name: "block_job_resume",
        params: "device",
        help: "resume a paused background block operation",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::BlockJobResume),
        sub_table: None,
    },
    HmpCommand {
        name: "block_job_set_speed",
        params: "device speed",
        help: "set maximum speed for a background block operation",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::BlockJobSetSpeed),
        sub_table: None,
    },
    HmpCommand {
        name: "block_stream",
        params: "device [speed [base]]",
        help: "copy data from a backing file into a block device",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::BlockStream),
        sub_table: None,
    },
    HmpCommand {
        name: "commit",
        params: "device|all",
        help: "commit changes to the disk images (if -snapshot is used) or backing files",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::Commit),
        sub_table: None,
    },
    HmpCommand {
        name: "cont|c",
        params: "",
        help: "resume emulation",
        args: Args::None,
        action: Action::Cont,
        sub_table: None,
    },
    HmpCommand {
        name: "help|?",
        params: "[cmd]",
        help: "show the help",
        args: Args::OptionalRest,
        action: Action::Help,
        sub_table: None,
    },
    HmpCommand {
        name: "info",
        params: "[subcommand]",
        help: "show various information about the system state",
        args: Args::None,
        action: Action::InfoHelp,
        sub_table: Some(INFO_COMMANDS),
    },
    HmpCommand {
        name: "quit|q",
        params: "",
        help: "quit the emulator",
        args: Args::None,
        action: Action::Quit,
        sub_table: None,
    },
    HmpCommand {
        name: "snapshot_blkdev",
        params: "[-n] device [new-image-file] [format]",
        help: "initiates a live snapshot\n\t\t\tof device. If a new image file is specified, the\n\t\t\tnew image file will become the new root image.\n\t\t\tIf format is specified, the snapshot file will\n\t\t\tbe created in that format.\n\t\t\tThe default format is qcow2.  The -n flag requests QEMU\n\t\t\tto reuse the image found in new-image-file, instead of\n\t\t\trecreating it from scratch.",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::SnapshotBlkdev),
        sub_table: None,
    },
    HmpCommand {
        name: "stop|s",
        params: "",
        help: "stop emulation",
        args: Args::None,
        action: Action::Stop,
        sub_table: None,
    },
    HmpCommand {
        name: "system_powerdown",
        params: "",
        help: "send system power down event",
        args: Args::None,
        action: Action::SystemPowerdown,
        sub_table: None,
    },
    HmpCommand {
        name: "system_reset",
        params: "",
        help: "reset the system",
        args: Args::None,
        action: Action::SystemReset,
        sub_table: None,
    },
];

pub(crate) static INFO_COMMANDS: &[HmpCommand] = &[
    HmpCommand {
        name: "block",
        params: "[-n] [-v] [device]",
        help: "show info of one block device or all block devices (-n: show named nodes; -v: show details)",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::InfoBlock),
        sub_table: None,
    },
    HmpCommand {
        name: "block-jobs",
        params: "",
        help: "show progress of ongoing block device operations",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::InfoBlockJobs),
        sub_table: None,
    },
    HmpCommand {
        name: "blockstats",
        params: "",
        help: "show block device statistics",
        args: Args::OptionalRest,
        action: Action::Block(BlockHmp::InfoBlockstats),
        sub_table: None,
    },
    HmpCommand {
        name: "chardev",
        params: "",
        help: "show the character devices",
        args: Args::None,
        action: Action::InfoChardev,
        sub_table: None,
    },
    HmpCommand {
        name: "cpus",
        params: "",
        help: "show infos for each CPU",
        args: Args::None,
        action: Action::InfoCpus,
        sub_table: None,
    },
    HmpCommand {
        name: "kvm",
        params: "",
        help: "show KVM information",
        args: Args::None,
        action: Action::InfoKvm,
        sub_table: None,
    },
    HmpCommand {
        name: "mtree",
        params: "[-f][-d][-o][-D]",
        help: "show memory tree (-f: dump flat view for address spaces;-d: dump dispatch tree, valid with -f only);-o: dump region owners/parents;-D: dump disabled regions",
        args: Args::MtreeFlags,
        action: Action::InfoMtree,
        sub_table: None,
    },
    HmpCommand {
        name: "name",
        params: "",
        help: "show the current VM name",
        args: Args::None,
        action: Action::InfoName,
        sub_table: None,
    },
    HmpCommand {
        name: "qtree",
        params: "",
        help: "show device tree",
        args: Args::None,
        action: Action::InfoQtree,
        sub_table: None,
    },
    HmpCommand {
        name: "registers",
        params: "[-a|vcpu]",
        help: "show the cpu registers (-a: show register info for all cpus; vcpu: specific vCPU to query; show the current CPU's registers if no argument is specified)",
        args: Args::Registers,
        action: Action::InfoRegisters,
        sub_table: None,
    },
    HmpCommand {
        name: "status",
        params: "",
        help: "show the current VM status (running|paused)",
        args: Args::None,
        action: Action::InfoStatus,
        sub_table: None,
    },
    HmpCommand {
        name: "version",
        params: "",
        help: "show the version of QEMU",
        args: Args::None,
        action: Action::InfoVersion,
        sub_table: None,
    },
];

/// A command line, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Nothing but blanks.
    Blank,
    /// Not runnable; the text (lines ending in `\n`) says why.
    Error(Vec<u8>),
    Command {
        command: &'static HmpCommand,
        /// The `S?` argument, when given.
        argument: Option<Vec<u8>>,
    },
}

impl std::fmt::Debug for HmpCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for HmpCommand {
    fn eq(&self, other: &HmpCommand) -> bool {
        self.name == other.name
    }
}

impl Eq for HmpCommand {}

fn skip_spaces(line: &[u8], mut pos: usize) -> usize {
    while pos < line.len() && is_space(line[pos]) {
        pos += 1;
    }
    pos
}

/// Parses `line` against the table.
pub(crate) fn parse(line: &[u8]) -> Parsed {
    let (command, pos) = match find_command(line, 0, COMMANDS) {
        Ok(Some(found)) => found,
        Ok(None) => return Parsed::Blank,
        Err(text) => return Parsed::Error(text),
    };
    let rest = skip_spaces(line, pos);
    let argument = match command.args {
        Args::OptionalRest => (rest < line.len()).then(|| line[rest..].to_vec()),
        Args::MtreeFlags => {
            if let Err(first) = super::args::mtree_flags(&line[rest..]) {
                let mut text = format!("{first}\nTry \"help ").into_bytes();
                text.extend_from_slice(trim_end(&line[..pos]));
                text.extend_from_slice(b"\" for more information\n");
                return Parsed::Error(text);
            }
            Some(line[rest..].to_vec())
        }
        Args::Registers => {
            if let Err(first) = super::args::registers(&line[rest..]) {
                let mut text = format!("{first}\nTry \"help ").into_bytes();
                text.extend_from_slice(trim_end(&line[..pos]));
                text.extend_from_slice(b"\" for more information\n");
                return Parsed::Error(text);
            }
            Some(line[rest..].to_vec())
        }
        Args::None => {
            if rest < line.len() {
                // The command name as the table spells it (with aliases), then QEMU's hint
                // quoting the line up to the command (trailing blanks dropped).
                let mut end = pos;
                while end > 0 && is_space(line[end - 1]) {
                    end -= 1;
                }
                let mut text = format!(
                    "{}: extraneous characters at the end of line\nTry \"help ",
                    command.name
                )
                .into_bytes();
                text.extend_from_slice(&line[..end]);
                text.extend_from_slice(b"\" for more information\n");
                return Parsed::Error(text);
            }
            None
        }
    };
    Parsed::Command { command, argument }
}

fn trim_end(mut text: &[u8]) -> &[u8] {
    while let [rest @ .., last] = text {
        if !is_space(*last) {
            break;
        }
        text = rest;
    }
    text
}

/// Finds the (sub)command starting at `pos`; returns it and the position after its name
/// and following blanks. The error text quotes the line from its start to the end of the
/// unknown name, as QEMU does (`unknown command: 'info foo'`).
fn find_command(
    line: &[u8],
    pos: usize,
    table: &'static [HmpCommand],
) -> Result<Option<(&'static HmpCommand, usize)>, Vec<u8>> {
    let start = skip_spaces(line, pos);
    if start == line.len() {
        return Ok(None);
    }
    let mut end = start;
    while end < line.len() && line[end] != b'/' && !is_space(line[end]) {
        end += 1;
    }
    // QEMU copies at most 255 bytes of the name.
    let name = &line[start..end.min(start + 255)];
    let Some(command) = table.iter().find(|c| c.matches(name)) else {
        let mut text = b"unknown command: '".to_vec();
        text.extend_from_slice(&line[..end]);
        text.extend_from_slice(b"'\n");
        return Err(text);
    };
    let after = skip_spaces(line, end);
    if let Some(sub_table) = command.sub_table {
        if after < line.len() {
            return find_command(line, after, sub_table);
        }
    }
    Ok(Some((command, after)))
}

/// Splits `text` into words the way QEMU's `parse_cmdline` does (double quotes with `\n`
/// `\r` `\\` `\'` `\"` escapes); `None` where QEMU gives up (bad quoting, over 16 words).
fn split_words(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    const MAX_WORDS: usize = 16;
    const MAX_WORD: usize = 1023;
    let mut words = Vec::new();
    let mut pos = 0;
    loop {
        pos = skip_spaces(text, pos);
        if pos == text.len() {
            return Some(words);
        }
        if words.len() >= MAX_WORDS {
            return None;
        }
        let mut word = Vec::new();
        if text[pos] == b'"' {
            pos += 1;
            while pos < text.len() && text[pos] != b'"' {
                let mut c = text[pos];
                if c == b'\\' {
                    c = match text.get(pos + 1)? {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        c @ (b'\\' | b'\'' | b'"') => *c,
                        _ => return None,
                    };
                    pos += 1;
                }
                if word.len() < MAX_WORD {
                    word.push(c);
                }
                pos += 1;
            }
            if pos == text.len() {
                return None;
            }
            pos += 1;
        } else {
            while pos < text.len() && !is_space(text[pos]) {
                if word.len() < MAX_WORD {
                    word.push(text[pos]);
                }
                pos += 1;
            }
        }
        words.push(word);
    }
}

/// `help [words]`: the help lines, QEMU's format (`name params -- help`).
pub(crate) fn help_text(argument: Option<&[u8]>) -> Vec<u8> {
    let words = match argument {
        Some(text) => match split_words(text) {
            Some(words) => words,
            None => return Vec::new(),
        },
        None => Vec::new(),
    };
    let mut out = Vec::new();
    help_dump(&mut out, COMMANDS, &words, 0);
    out
}

fn help_line(out: &mut Vec<u8>, prefix: &[Vec<u8>], command: &HmpCommand) {
    for word in prefix {
        out.extend_from_slice(word);
        out.push(b' ');
    }
    out.extend_from_slice(
        format!("{} {} -- {}\n", command.name, command.params, command.help).as_bytes(),
    );
}

fn help_dump(out: &mut Vec<u8>, table: &[HmpCommand], words: &[Vec<u8>], index: usize) {
    let Some(word) = words.get(index) else {
        for command in table {
            help_line(out, &words[..index], command);
        }
        return;
    };
    match table.iter().find(|c| c.matches(word)) {
        Some(command) => match command.sub_table {
            Some(sub_table) => help_dump(out, sub_table, words, index + 1),
            None => help_line(out, &words[..index], command),
        },
        None => {
            out.extend_from_slice(b"unknown command: '");
            out.extend_from_slice(&words[..=index].join(&b' '));
            out.extend_from_slice(b"'\n");
        }
    }
}

/// TAB completion of the line before the cursor.
pub(crate) fn complete(before_cursor: &[u8]) -> Completions {
    let mut result = Completions {
        word_len: 0,
        candidates: Vec::new(),
    };
    let Some(mut words) = split_words(before_cursor) else {
        return result;
    };
    // A trailing blank means the next word is being started.
    if before_cursor.last().is_some_and(|&b| is_space(b)) {
        words.push(Vec::new());
    }
    complete_in(&mut result, COMMANDS, &words);
    result
}

fn complete_in(result: &mut Completions, table: &'static [HmpCommand], words: &[Vec<u8>]) {
    if words.len() <= 1 {
        let prefix = words.first().map(Vec::as_slice).unwrap_or(b"");
        result.word_len = prefix.len();
        for command in table {
            for alias in command.name.split('|') {
                if alias.as_bytes().starts_with(prefix) {
                    result.candidates.push(alias.as_bytes().to_vec());
                }
            }
        }
        return;
    }
    let Some(command) = table.iter().find(|c| c.matches(&words[0])) else {
        return;
    };
    if let Some(sub_table) = command.sub_table {
        complete_in(result, sub_table, &words[1..]);
    } else if command.action == Action::Help {
        // `help` completes command names from the same table.
        complete_in(result, table, &words[1..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &[u8]) -> (&'static str, Option<Vec<u8>>) {
        match parse(line) {
            Parsed::Command { command, argument } => (command.name, argument),
            other => panic!("{other:?}"),
        }
    }

    fn error(line: &[u8]) -> String {
        match parse(line) {
            Parsed::Error(text) => String::from_utf8_lossy(&text).into_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn table_is_sorted_like_qemus() {
        for table in [COMMANDS, INFO_COMMANDS] {
            let names: Vec<&str> = table.iter().map(|c| c.name).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(parse(b""), Parsed::Blank);
        assert_eq!(parse(b"  \t"), Parsed::Blank);
        assert_eq!(command(b"stop"), ("stop|s", None));
        assert_eq!(command(b"s"), ("stop|s", None));
        assert_eq!(command(b"  c  "), ("cont|c", None));
        assert_eq!(command(b"info  status  "), ("status", None));
        assert_eq!(command(b"info"), ("info", None));
        assert_eq!(
            command(b"help info  x"),
            ("help|?", Some(b"info  x".to_vec()))
        );
        assert_eq!(command(b"?"), ("help|?", None));
        // QEMU 7.2 texts.
        assert_eq!(error(b"foo"), "unknown command: 'foo'\n");
        assert_eq!(error(b"  bar baz"), "unknown command: '  bar'\n");
        assert_eq!(error(b"info foo"), "unknown command: 'info foo'\n");
        assert_eq!(error(b"info st"), "unknown command: 'info st'\n");
        assert_eq!(
            parse(b"\xff\xfe\x80abc"),
            Parsed::Error(b"unknown command: '\xff\xfe\x80abc'\n".to_vec())
        );
        assert_eq!(
            error(b"stop x"),
            "stop|s: extraneous characters at the end of line\nTry \"help stop\" for more information\n"
        );
        assert_eq!(
            error(b"info status x"),
            "status: extraneous characters at the end of line\nTry \"help info status\" for more information\n"
        );
        assert_eq!(
            error(b"  cont   x"),
            "cont|c: extraneous characters at the end of line\nTry \"help   cont\" for more information\n"
        );
        assert_eq!(
            error(b"stop/x"),
            "stop|s: extraneous characters at the end of line\nTry \"help stop\" for more information\n"
        );
    }

    fn help_line_of(name: &str) -> String {
        String::from_utf8(help_text(Some(name.as_bytes()))).unwrap()
    }

    #[test]
    fn help_texts() {
        let help = |arg: &[u8]| String::from_utf8(help_text(Some(arg))).unwrap();
        assert_eq!(help(b"stop"), "stop|s  -- stop emulation\n");
        assert_eq!(
            help(b"system_powerdown"),
            "system_powerdown  -- send system power down event\n"
        );
        assert_eq!(help(b"?"), "help|? [cmd] -- show the help\n");
        assert_eq!(
            help(b" info  status "),
            "info status  -- show the current VM status (running|paused)\n"
        );
        assert_eq!(
            help(b"info status x"),
            "info status  -- show the current VM status (running|paused)\n"
        );
        assert_eq!(help(b"info  x"), "unknown command: 'info x'\n");
        assert_eq!(help(b"foo bar"), "unknown command: 'foo'\n");
        assert_eq!(help(b"\"unterminated"), "");
        let all = String::from_utf8(help_text(None)).unwrap();
        let all = &all[all.find("cont|c").unwrap()..];
        assert_eq!(
            all.replace(&help_line_of("snapshot_blkdev"), ""),
            "cont|c  -- resume emulation\n\
             help|? [cmd] -- show the help\n\
             info [subcommand] -- show various information about the system state\n\
             quit|q  -- quit the emulator\n\
             stop|s  -- stop emulation\n\
             system_powerdown  -- send system power down event\n\
             system_reset  -- reset the system\n"
        );
    }

    #[test]
    fn completion() {
        let names = |line: &[u8]| {
            let c = complete(line);
            let mut names: Vec<String> = c
                .candidates
                .iter()
                .map(|n| String::from_utf8(n.clone()).unwrap())
                .collect();
            names.sort();
            (c.word_len, names)
        };
        assert_eq!(names(b"qu"), (2, vec!["quit".to_string()]));
        assert_eq!(
            names(b"s"),
            (
                1,
                vec![
                    "s".into(),
                    "snapshot_blkdev".into(),
                    "stop".into(),
                    "system_powerdown".into(),
                    "system_reset".into()
                ]
            )
        );
        assert_eq!(names(b"info st"), (2, vec!["status".to_string()]));
        assert_eq!(
            names(b"info "),
            (
                0,
                vec![
                    "block".into(),
                    "block-jobs".into(),
                    "blockstats".into(),
                    "chardev".into(),
                    "cpus".into(),
                    "kvm".into(),
                    "mtree".into(),
                    "name".into(),
                    "qtree".into(),
                    "registers".into(),
                    "status".into(),
                    "version".into()
                ]
            )
        );
        assert_eq!(names(b"help in"), (2, vec!["info".to_string()]));
        assert_eq!(names(b"help info s"), (1, vec!["status".to_string()]));
        assert_eq!(names(b"stop ").1, Vec::<String>::new());
        assert_eq!(names(b"").1.len(), 19);
    }
}

//! QMP request handling as QEMU 7.2's `qmp_dispatch` does it: request validation, command
//! lookup, argument type checks (before any side effect), and the reply objects.

use super::qobject::{QDict, QObject};
use crate::monitor::block::qmp::BlockQmp;
use crate::monitor::commands::{CommandError, ErrorClass, MonitorCommands, VcpuInfo};
use crate::monitor::hmp::run_line_for_text;
use crate::monitor::{QEMU_PACKAGE, QEMU_VERSION_TRIPLE};

/// The type of one argument, as QAPI names it in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArgType {
    Str,
    Int,
    /// A list of `QMPCapability` names.
    CapabilityList,
}

struct Param {
    name: &'static str,
    ty: ArgType,
    required: bool,
}

/// What a command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    QmpCapabilities,
    QueryVersion,
    QueryCommands,
    QueryStatus,
    QueryName,
    QueryKvm,
    QueryCpusFast,
    Stop,
    Cont,
    Quit,
    SystemReset,
    SystemPowerdown,
    HumanMonitorCommand,
    QueryChardev,
    QueryQmpSchema,
    /// The block commands (`monitor::block`), which check their own arguments.
    Block(crate::monitor::block::qmp::BlockQmp),
}

struct QmpCommand {
    name: &'static str,
    params: &'static [Param],
    action: Action,
}

/// The commands vmscope implements, in the order QEMU 7.2's `query-commands` lists them
/// (the reverse of its registration order). Anything else is `CommandNotFound`.
static COMMANDS: &[QmpCommand] = &[
    QmpCommand {
        name: "human-monitor-command",
        params: &[
            Param {
                name: "command-line",
                ty: ArgType::Str,
                required: true,
            },
            Param {
                name: "cpu-index",
                ty: ArgType::Int,
                required: false,
            },
        ],
        action: Action::HumanMonitorCommand,
    },
    QmpCommand {
        name: "cont",
        params: &[],
        action: Action::Cont,
    },
    QmpCommand {
        name: "stop",
        params: &[],
        action: Action::Stop,
    },
    QmpCommand {
        name: "query-name",
        params: &[],
        action: Action::QueryName,
    },
    QmpCommand {
        name: "query-kvm",
        params: &[],
        action: Action::QueryKvm,
    },
    QmpCommand {
        name: "system_powerdown",
        params: &[],
        action: Action::SystemPowerdown,
    },
    QmpCommand {
        name: "system_reset",
        params: &[],
        action: Action::SystemReset,
    },
    QmpCommand {
        name: "query-cpus-fast",
        params: &[],
        action: Action::QueryCpusFast,
    },
    QmpCommand {
        name: "query-qmp-schema",
        params: &[],
        action: Action::QueryQmpSchema,
    },
    QmpCommand {
        name: "quit",
        params: &[],
        action: Action::Quit,
    },
    QmpCommand {
        name: "query-commands",
        params: &[],
        action: Action::QueryCommands,
    },
    QmpCommand {
        name: "query-version",
        params: &[],
        action: Action::QueryVersion,
    },
    QmpCommand {
        name: "qmp_capabilities",
        params: &[Param {
            name: "enable",
            ty: ArgType::CapabilityList,
            required: false,
        }],
        action: Action::QmpCapabilities,
    },
    QmpCommand {
        name: "transaction",
        params: &[],
        action: Action::Block(BlockQmp::Transaction),
    },
    QmpCommand {
        name: "query-chardev",
        params: &[],
        action: Action::QueryChardev,
    },
    QmpCommand {
        name: "block-job-complete",
        params: &[],
        action: Action::Block(BlockQmp::BlockJobComplete),
    },
    QmpCommand {
        name: "block-job-resume",
        params: &[],
        action: Action::Block(BlockQmp::BlockJobResume),
    },
    QmpCommand {
        name: "block-job-pause",
        params: &[],
        action: Action::Block(BlockQmp::BlockJobPause),
    },
    QmpCommand {
        name: "block-job-cancel",
        params: &[],
        action: Action::Block(BlockQmp::BlockJobCancel),
    },
    QmpCommand {
        name: "block-job-set-speed",
        params: &[],
        action: Action::Block(BlockQmp::BlockJobSetSpeed),
    },
    QmpCommand {
        name: "block-stream",
        params: &[],
        action: Action::Block(BlockQmp::BlockStream),
    },
    QmpCommand {
        name: "block-commit",
        params: &[],
        action: Action::Block(BlockQmp::BlockCommit),
    },
    QmpCommand {
        name: "blockdev-snapshot-sync",
        params: &[],
        action: Action::Block(BlockQmp::BlockdevSnapshotSync),
    },
    QmpCommand {
        name: "query-block-jobs",
        params: &[],
        action: Action::Block(BlockQmp::QueryBlockJobs),
    },
    QmpCommand {
        name: "query-blockstats",
        params: &[],
        action: Action::Block(BlockQmp::QueryBlockstats),
    },
    QmpCommand {
        name: "query-block",
        params: &[],
        action: Action::Block(BlockQmp::QueryBlock),
    },
    QmpCommand {
        name: "query-status",
        params: &[],
        action: Action::QueryStatus,
    },
];

/// Per-connection negotiation state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Session {
    /// `qmp_capabilities` succeeded: all commands are available and events are sent.
    pub(crate) command_mode: bool,
    pub(crate) oob_enabled: bool,
}

/// The `version` object of the greeting and of `query-version`.
pub(crate) fn version_info() -> QDict {
    let (major, minor, micro) = QEMU_VERSION_TRIPLE;
    QDict::new()
        .with(
            "qemu",
            QDict::new()
                .with("major", major)
                .with("minor", minor)
                .with("micro", micro),
        )
        .with("package", QEMU_PACKAGE)
}

/// The greeting sent on every new connection.
pub(crate) fn greeting() -> QObject {
    QObject::Dict(
        QDict::new().with(
            "QMP",
            QDict::new()
                .with("version", version_info())
                .with("capabilities", QObject::List(vec!["oob".into()])),
        ),
    )
}

fn error_object(error: &CommandError) -> QObject {
    QObject::Dict(
        QDict::new()
            .with("class", error.class.as_str())
            .with("desc", error.desc.as_str()),
    )
}

/// `{"error": {…}}` (plus `id` when the request had one).
pub(crate) fn error_response(error: &CommandError, id: Option<&QObject>) -> QObject {
    let mut rsp = QDict::new().with("error", error_object(error));
    if let Some(id) = id {
        rsp.put("id", id.clone());
    }
    QObject::Dict(rsp)
}

/// Handles one parsed request and returns the reply.
pub(crate) fn dispatch(
    commands: &MonitorCommands,
    session: &mut Session,
    request: QObject,
) -> QObject {
    let QObject::Dict(dict) = request else {
        return error_response(
            &CommandError::generic("QMP input must be a JSON object"),
            None,
        );
    };
    let id = dict.get("id");
    let result = check_request(&dict, session.oob_enabled)
        .and_then(|(name, oob)| run(commands, session, &dict, name, oob));
    match result {
        Ok(ret) => {
            let mut rsp = QDict::new().with("return", ret);
            if let Some(id) = id {
                rsp.put("id", id.clone());
            }
            QObject::Dict(rsp)
        }
        Err(mut error) => {
            if !session.command_mode && error.class == ErrorClass::CommandNotFound {
                // QEMU's more useful message before negotiation.
                error.desc = "Expecting capabilities negotiation with 'qmp_capabilities'".into();
            }
            error_response(&error, id)
        }
    }
}

/// QEMU's `qmp_dispatch_check_obj`: members checked in QDict order. Returns the command
/// name and whether it came as `exec-oob`.
fn check_request(dict: &QDict, allow_oob: bool) -> Result<(&str, bool), CommandError> {
    let mut exec_key: Option<&str> = None;
    for (key, value) in dict.iter_qemu_order() {
        match key.as_str() {
            "execute" | "exec-oob" if key == "execute" || allow_oob => {
                if !matches!(value, QObject::String(_)) {
                    return Err(CommandError::generic(format!(
                        "QMP input member '{key}' must be a string"
                    )));
                }
                if let Some(previous) = exec_key {
                    return Err(CommandError::generic(format!(
                        "QMP input member '{key}' clashes with '{previous}'"
                    )));
                }
                exec_key = Some(key);
            }
            "arguments" => {
                if !matches!(value, QObject::Dict(_)) {
                    return Err(CommandError::generic(
                        "QMP input member 'arguments' must be an object",
                    ));
                }
            }
            "id" => {}
            _ => {
                return Err(CommandError::generic(format!(
                    "QMP input member '{key}' is unexpected"
                )))
            }
        }
    }
    let Some(key) = exec_key else {
        return Err(CommandError::generic("QMP input lacks member 'execute'"));
    };
    let Some(QObject::String(name)) = dict.get(key) else {
        unreachable!("checked above");
    };
    Ok((name, key == "exec-oob"))
}

fn not_found(name: &str) -> CommandError {
    CommandError {
        class: ErrorClass::CommandNotFound,
        desc: format!("The command {name} has not been found"),
    }
}

fn run(
    commands: &MonitorCommands,
    session: &mut Session,
    dict: &QDict,
    name: &str,
    oob: bool,
) -> Result<QObject, CommandError> {
    let command = COMMANDS
        .iter()
        .find(|c| c.name == name)
        .filter(|c| session.command_mode || c.action == Action::QmpCapabilities)
        .ok_or_else(|| not_found(name))?;
    if oob {
        // None of vmscope's commands may run out of band (QEMU allows it only for a few
        // migration and test commands).
        return Err(CommandError::generic(format!(
            "The command {name} does not support OOB"
        )));
    }
    let empty = QDict::new();
    let args = match dict.get("arguments") {
        Some(QObject::Dict(args)) => args,
        _ => &empty,
    };
    if let Action::Block(block) = command.action {
        return crate::monitor::block::qmp::execute(commands, block, args);
    }
    check_arguments(command.params, args)?;
    execute(commands, session, command.action, args)
}

fn type_error(name: &str, expected: &str) -> CommandError {
    CommandError::generic(format!(
        "Invalid parameter type for '{name}', expected: {expected}"
    ))
}

/// QAPI's input visitor checks: each parameter in schema order (missing, wrong type),
/// then any member nobody asked for.
fn check_arguments(params: &[Param], args: &QDict) -> Result<(), CommandError> {
    for param in params {
        let Some(value) = args.get(param.name) else {
            if param.required {
                return Err(CommandError::generic(format!(
                    "Parameter '{}' is missing",
                    param.name
                )));
            }
            continue;
        };
        match (param.ty, value) {
            (ArgType::Str, QObject::String(_)) | (ArgType::Int, QObject::Int(_)) => {}
            (ArgType::Str, _) => return Err(type_error(param.name, "string")),
            (ArgType::Int, _) => return Err(type_error(param.name, "integer")),
            (ArgType::CapabilityList, QObject::List(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let element = format!("{}[{i}]", param.name);
                    match item {
                        QObject::String(s) if s == "oob" => {}
                        QObject::String(s) => {
                            // QEMU 7.2 names a list element 'null' in this one message.
                            return Err(CommandError::generic(format!(
                                "Parameter 'null' does not accept value '{s}'"
                            )));
                        }
                        _ => return Err(type_error(&element, "string")),
                    }
                }
            }
            (ArgType::CapabilityList, _) => return Err(type_error(param.name, "array")),
        }
    }
    if let Some((key, _)) = args
        .iter_qemu_order()
        .find(|(key, _)| !params.iter().any(|p| p.name == key))
    {
        return Err(CommandError::generic(format!(
            "Parameter '{key}' is unexpected"
        )));
    }
    Ok(())
}

fn unit(result: Result<(), CommandError>) -> Result<QObject, CommandError> {
    result.map(|()| QObject::Dict(QDict::new()))
}

fn execute(
    commands: &MonitorCommands,
    session: &mut Session,
    action: Action,
    args: &QDict,
) -> Result<QObject, CommandError> {
    match action {
        Action::QmpCapabilities => {
            if session.command_mode {
                return Err(CommandError {
                    class: ErrorClass::CommandNotFound,
                    desc: "Capabilities negotiation is already complete, command ignored".into(),
                });
            }
            // Every listed capability has been checked to be `oob`, which is offered.
            let oob = matches!(args.get("enable"), Some(QObject::List(l)) if !l.is_empty());
            session.oob_enabled = oob;
            session.command_mode = true;
            Ok(QObject::Dict(QDict::new()))
        }
        Action::QueryVersion => Ok(QObject::Dict(version_info())),
        Action::QueryCommands => Ok(QObject::List(
            COMMANDS
                .iter()
                .map(|c| QObject::Dict(QDict::new().with("name", c.name)))
                .collect(),
        )),
        Action::QueryStatus => {
            let status = commands.query_status();
            Ok(QObject::Dict(
                QDict::new()
                    .with("running", status.running)
                    .with("singlestep", status.singlestep)
                    .with("status", status.status.as_str()),
            ))
        }
        Action::QueryName => {
            let mut info = QDict::new();
            if let Some(name) = commands.query_name() {
                info.put("name", name);
            }
            Ok(QObject::Dict(info))
        }
        Action::QueryKvm => {
            let (enabled, present) = commands.query_kvm();
            Ok(QObject::Dict(
                QDict::new()
                    .with("enabled", enabled)
                    .with("present", present),
            ))
        }
        Action::QueryCpusFast => Ok(QObject::List(
            commands
                .query_cpus_fast()
                .iter()
                .map(cpu_info_fast)
                .collect(),
        )),
        Action::QueryChardev => Ok(QObject::List(
            commands
                .query_chardev()
                .into_iter()
                .map(|c| {
                    QObject::Dict(
                        QDict::new()
                            .with("label", c.label)
                            .with("filename", c.filename)
                            .with("frontend-open", c.frontend_open),
                    )
                })
                .collect(),
        )),
        Action::QueryQmpSchema => {
            let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
            super::schema::query_qmp_schema(&names).ok_or_else(|| {
                CommandError::generic("vmscope's built-in QMP schema data are unreadable")
            })
        }
        Action::Stop => unit(commands.stop()),
        Action::Cont => unit(commands.cont()),
        Action::Quit => unit(commands.quit()),
        Action::SystemReset => unit(commands.system_reset()),
        Action::SystemPowerdown => unit(commands.system_powerdown()),
        Action::Block(block) => crate::monitor::block::qmp::execute(commands, block, args),
        Action::HumanMonitorCommand => {
            let mut current_cpu = 0;
            if let Some(QObject::Int(index)) = args.get("cpu-index") {
                let count = commands.query_cpus_fast().len() as i64;
                if !(0..count).contains(index) {
                    return Err(CommandError::generic(
                        "Parameter 'cpu-index' expects a CPU number",
                    ));
                }
                current_cpu = *index as u32;
            }
            let Some(QObject::String(line)) = args.get("command-line") else {
                unreachable!("checked by check_arguments");
            };
            let text = run_line_for_text(commands, line.as_bytes(), current_cpu);
            // The monitor's output path turns every newline into CRLF, also here.
            Ok(QObject::String(crlf(&String::from_utf8_lossy(&text))))
        }
    }
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// The QOM path QEMU 7.2's pc machine gives vCPU `index`: the first vCPU is the first
/// unattached device, then one other device is created before the remaining vCPUs.
fn cpu_qom_path(index: u32) -> String {
    let device = if index == 0 { 0 } else { index + 1 };
    format!("/machine/unattached/device[{device}]")
}

/// `CpuInfoFast` with QEMU's member insertion order.
fn cpu_info_fast(cpu: &VcpuInfo) -> QObject {
    let mut props = QDict::new();
    props.put("socket-id", cpu.socket_id);
    if let Some(die) = cpu.die_id {
        props.put("die-id", die);
    }
    props.put("core-id", cpu.core_id);
    props.put("thread-id", cpu.thread_in_core);
    QObject::Dict(
        QDict::new()
            .with("cpu-index", cpu.index)
            .with("qom-path", cpu_qom_path(cpu.index))
            .with("thread-id", cpu.thread_id)
            .with("props", props)
            .with("target", "x86_64"),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::events::EventListener;
    use super::super::json_reader::JsonReader;
    use super::super::json_writer::to_json;
    use super::*;
    use crate::monitor::commands::{SystemReset, VmControl};
    use crate::monitor::RunState;

    struct Vm(Mutex<RunState>);

    impl VmControl for Vm {
        fn run_state(&self) -> RunState {
            *self.0.lock().unwrap()
        }
        fn stop(&self) {
            let mut state = self.0.lock().unwrap();
            if *state == RunState::Running {
                *state = RunState::Paused;
            }
        }
        fn cont(&self) -> Result<(), String> {
            *self.0.lock().unwrap() = RunState::Running;
            Ok(())
        }
        fn quit(&self) {}
        fn system_reset(&self) -> Result<SystemReset, String> {
            Ok(SystemReset::Reset)
        }
        fn system_powerdown(&self) -> Result<(), String> {
            Ok(())
        }
        fn vcpus(&self) -> Vec<VcpuInfo> {
            vec![VcpuInfo {
                index: 0,
                thread_id: 42,
                socket_id: 0,
                die_id: None,
                core_id: 0,
                thread_in_core: 0,
            }]
        }
    }

    /// Collects events as JSON with the timestamp cut off.
    struct Events(Mutex<Vec<String>>);

    impl EventListener for Events {
        fn deliver(&self, event: &QObject) {
            let text = to_json(event, false);
            let event = &text[text.find("\"event\"").unwrap()..];
            self.0.lock().unwrap().push(event.to_string());
        }
    }

    /// Runs each request line through the reader and dispatcher; replies and events, in
    /// order, as text.
    fn session(requests: &str) -> Vec<String> {
        let commands = MonitorCommands::new(Arc::new(Vm(Mutex::new(RunState::Prelaunch))))
            .with_vm_name(Some("vm".into()));
        let events = Arc::new(Events(Mutex::new(Vec::new())));
        let listener: Arc<dyn EventListener> = events.clone();
        commands.events().subscribe(Arc::downgrade(&listener));
        let mut session = Session::default();
        let mut reader = JsonReader::new();
        let mut out = Vec::new();
        reader.feed(requests.as_bytes(), &mut |request| {
            let reply = match request {
                Ok(request) => dispatch(&commands, &mut session, request),
                Err(desc) => error_response(&CommandError::generic(desc), None),
            };
            out.append(&mut events.0.lock().unwrap());
            out.push(to_json(&reply, false));
        });
        out
    }

    #[test]
    fn negotiation_commands_and_errors_as_qemu_7_2() {
        assert_eq!(
            session(
                "{'execute': 'query-status'} {'execute': 'qmp_capabilities', 'id': 1} \
                 {'execute': 'qmp_capabilities'} {'execute': 'query-status'} \
                 {'execute': 'query-name'} {'execute': 'query-kvm'} {'execute': 'cont'} \
                 {'execute': 'stop', 'id': 'x'} {'execute': 'nope', 'id': [1]} \
                 {'execute': 'human-monitor-command', 'arguments': {'command-line': 'info status'}} \
                 {'execute': 'query-cpus-fast'} [1] {'id': 2} {'execute': 'quit'}"
            ),
            [
                r#"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#,
                r#"{"return": {}, "id": 1}"#,
                r#"{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}"#,
                r#"{"return": {"status": "prelaunch", "singlestep": false, "running": false}}"#,
                r#"{"return": {"name": "vm"}}"#,
                r#"{"return": {"enabled": true, "present": true}}"#,
                r#""event": "RESUME"}"#,
                r#"{"return": {}}"#,
                r#""event": "STOP"}"#,
                r#"{"return": {}, "id": "x"}"#,
                r#"{"id": [1], "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#,
                r#"{"return": "VM status: paused\r\n"}"#,
                r#"{"return": [{"thread-id": 42, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"}]}"#,
                r#"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}"#,
                r#"{"id": 2, "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}"#,
                r#""event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#,
                r#"{"return": {}}"#,
            ]
        );
    }

    #[test]
    fn argument_checks_come_before_side_effects() {
        let out = session(
            "{'execute': 'qmp_capabilities'} \
             {'execute': 'stop', 'arguments': {'now': true}} \
             {'execute': 'human-monitor-command', 'arguments': {}} \
             {'execute': 'human-monitor-command', 'arguments': {'command-line': 1}} \
             {'execute': 'human-monitor-command', 'arguments': {'command-line': 'stop', 'cpu-index': 3}}",
        );
        assert_eq!(
            &out[1..],
            [
                r#"{"error": {"class": "GenericError", "desc": "Parameter 'now' is unexpected"}}"#,
                r#"{"error": {"class": "GenericError", "desc": "Parameter 'command-line' is missing"}}"#,
                r#"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'command-line', expected: string"}}"#,
                r#"{"error": {"class": "GenericError", "desc": "Parameter 'cpu-index' expects a CPU number"}}"#,
            ]
        );
    }

    #[test]
    fn schema_describes_every_command() {
        for command in COMMANDS {
            assert!(
                super::super::schema::describes_command(command.name),
                "{} missing from schema_7_2.json (scripts/qmp-schema-subset.py)",
                command.name
            );
        }
    }

    #[test]
    fn system_powerdown_sends_powerdown_before_its_reply() {
        let out = session(
            "{'execute': 'qmp_capabilities'} {'execute': 'system_powerdown', 'id': 7} \
             {'execute': 'human-monitor-command', 'arguments': {'command-line': 'system_powerdown'}}",
        );
        assert_eq!(
            &out[1..],
            [
                r#""event": "POWERDOWN"}"#,
                r#"{"return": {}, "id": 7}"#,
                r#""event": "POWERDOWN"}"#,
                r#"{"return": ""}"#,
            ]
        );
    }

    #[test]
    fn greeting_shape() {
        let greeting = to_json(&greeting(), false);
        let expected = format!(
            r#"{{"QMP": {{"version": {{"qemu": {{"micro": 0, "minor": 2, "major": 7}}, "package": "vmscope {}"}}, "capabilities": ["oob"]}}}}"#,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(greeting, expected);
    }
}

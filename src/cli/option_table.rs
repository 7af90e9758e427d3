//! Every option QEMU 7.2's x86_64 system emulator knows, whether it takes an argument, and
//! what vmscope does with it. Options vmscope does not implement are still recognised, so
//! they get a "not supported yet" error naming them instead of QEMU's "invalid option".

/// What vmscope does with an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Parsed and mapped into the configuration.
    Implemented,
    /// Valid for QEMU; vmscope parses and validates it, then refuses it naming the subsystem
    /// that would provide it. (Help requests such as `-device help` still work.)
    NotYet(&'static str),
    /// QEMU 7.2 x86_64 itself refuses it ("Option not supported for this target").
    NotForTarget,
}

/// One command-line option.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// Name without the leading dash.
    pub name: &'static str,
    pub takes_arg: bool,
    pub support: Support,
}

const fn imp(name: &'static str, takes_arg: bool) -> OptionSpec {
    OptionSpec {
        name,
        takes_arg,
        support: Support::Implemented,
    }
}

const fn not_yet(name: &'static str, takes_arg: bool, what: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        takes_arg,
        support: Support::NotYet(what),
    }
}

const fn not_for_target(name: &'static str, takes_arg: bool) -> OptionSpec {
    OptionSpec {
        name,
        takes_arg,
        support: Support::NotForTarget,
    }
}

// Subsystem names used in "not supported yet by vmscope (...)".
const BLOCK: &str = "block devices";
const NET: &str = "networking";
const AUDIO: &str = "audio";
const MIGRATION: &str = "migration";
const TCG: &str = "TCG; vmscope runs on KVM";

/// The table, in QEMU's `-help` order.
pub static OPTIONS: &[OptionSpec] = &[
    imp("h", false),
    imp("help", false),
    imp("version", false),
    imp("machine", true),
    imp("M", true),
    imp("cpu", true),
    imp("accel", true),
    imp("smp", true),
    not_yet("numa", true, "NUMA"),
    not_yet("add-fd", true, "file descriptor passing"),
    not_yet("set", true, "-set"),
    not_yet("global", true, "global device properties"),
    imp("boot", true),
    imp("m", true),
    not_yet("mem-path", true, "memory backends"),
    not_yet("mem-prealloc", false, "memory backends"),
    not_yet("k", true, "keyboard layouts"),
    not_yet("audio-help", false, AUDIO),
    not_yet("audiodev", true, AUDIO),
    not_yet("audio", true, AUDIO),
    not_yet("device", true, "devices"),
    imp("name", true),
    not_yet("uuid", true, "SMBIOS UUID"),
    not_yet("fda", true, BLOCK),
    not_yet("fdb", true, BLOCK),
    imp("hda", true),
    imp("hdb", true),
    imp("hdc", true),
    imp("hdd", true),
    imp("cdrom", true),
    not_yet("blockdev", true, BLOCK),
    imp("drive", true),
    not_yet("mtdblock", true, BLOCK),
    not_yet("sd", true, BLOCK),
    not_yet("pflash", true, BLOCK),
    imp("snapshot", false),
    not_yet("fsdev", true, "9p file sharing"),
    not_yet("virtfs", true, "9p file sharing"),
    not_yet("iscsi", true, "iSCSI"),
    not_yet("usb", false, "USB"),
    not_yet("usbdevice", true, "USB"),
    imp("display", true),
    imp("nographic", false),
    not_yet("spice", true, "SPICE"),
    not_yet("portrait", false, "display rotation"),
    not_yet("rotate", true, "display rotation"),
    imp("vga", true),
    not_yet("full-screen", false, "full-screen display"),
    not_for_target("g", true),
    imp("vnc", true),
    not_yet("win2k-hack", false, "-win2k-hack"),
    not_yet("no-fd-bootchk", false, "floppy boot"),
    not_yet("no-acpi", false, "ACPI control"),
    imp("no-hpet", false),
    not_yet("acpitable", true, "extra ACPI tables"),
    not_yet("smbios", true, "SMBIOS"),
    not_yet("nic", true, NET),
    not_yet("netdev", true, NET),
    not_yet("net", true, NET),
    imp("chardev", true),
    not_yet("tpmdev", true, "TPM"),
    imp("bios", true),
    imp("L", true),
    not_yet("fw_cfg", true, "fw_cfg files"),
    imp("kernel", true),
    imp("append", true),
    imp("initrd", true),
    not_yet("dtb", true, "device trees"),
    not_yet("compat", true, "-compat"),
    imp("serial", true),
    imp("parallel", true),
    imp("monitor", true),
    imp("qmp", true),
    imp("qmp-pretty", true),
    imp("mon", true),
    imp("debugcon", true),
    imp("pidfile", true),
    not_yet("singlestep", false, TCG),
    not_yet("preconfig", false, "-preconfig"),
    imp("S", false),
    not_yet("overcommit", true, "-overcommit"),
    not_yet("gdb", true, "gdb stub"),
    not_yet("s", false, "gdb stub"),
    not_yet("d", true, "debug logging"),
    not_yet("D", true, "debug logging"),
    not_yet("dfilter", true, "debug logging"),
    not_yet("seed", true, TCG),
    imp("enable-kvm", false),
    not_for_target("xen-domid", true),
    not_for_target("xen-attach", false),
    not_for_target("xen-domid-restrict", false),
    imp("no-reboot", false),
    imp("no-shutdown", false),
    not_yet("action", true, "-action"),
    not_yet("loadvm", true, "snapshots"),
    imp("daemonize", false),
    not_yet("option-rom", true, "option ROMs"),
    imp("rtc", true),
    not_yet("icount", true, TCG),
    not_yet("watchdog-action", true, "watchdogs"),
    not_yet("echr", true, "mux escape character"),
    not_for_target("semihosting", false),
    not_for_target("semihosting-config", true),
    not_for_target("prom-env", true),
    not_for_target("old-param", false),
    not_yet("incoming", true, MIGRATION),
    not_yet("only-migratable", false, MIGRATION),
    imp("nodefaults", false),
    not_yet("chroot", true, "privilege dropping"),
    not_yet("runas", true, "privilege dropping"),
    not_yet("sandbox", true, "seccomp sandbox"),
    not_yet("readconfig", true, "configuration files"),
    imp("no-user-config", false),
    not_yet("trace", true, "tracing"),
    not_yet("plugin", true, TCG),
    not_yet("qtest", true, "qtest"),
    not_yet("qtest-log", true, "qtest"),
    not_yet("async-teardown", false, "-async-teardown"),
    not_yet("msg", true, "-msg"),
    not_yet("dump-vmstate", true, MIGRATION),
    not_yet("enable-sync-profile", false, "sync profiling"),
    not_yet("object", true, "user-creatable objects"),
];

/// QEMU's `lookup_opt` name matching: `--foo` is `-foo`; `arg` starts with `-`.
pub fn lookup(arg: &str) -> Option<&'static OptionSpec> {
    let name = arg.strip_prefix('-')?;
    let name = name.strip_prefix('-').unwrap_or(name);
    OPTIONS.iter().find(|o| o.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_double_dash_are_the_same_option() {
        assert_eq!(lookup("-accel").unwrap().name, "accel");
        assert_eq!(lookup("--accel").unwrap().name, "accel");
        assert!(lookup("---accel").is_none());
        assert!(lookup("-").is_none());
        assert!(lookup("--").is_none());
        assert!(lookup("-foo").is_none());
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in OPTIONS.iter().enumerate() {
            for b in &OPTIONS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }
}

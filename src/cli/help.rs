//! `-version` and `-help` texts, in QEMU's layout (scripts and libguestfs read the version
//! number and option names from them). `-help` lists only what vmscope implements.

/// The QEMU version vmscope behaves as.
pub const QEMU_VERSION: &str = "7.2.0";

/// `-version` output.
pub fn version_text() -> String {
    format!(
        "QEMU emulator version {QEMU_VERSION} (vmscope {})\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The option lines of `-help`, grouped under QEMU's headings.
const SECTIONS: &[(&str, &[&str])] = &[
    (
        "Standard options:",
        &[
            "-h or -help     display this help and exit",
            "-version        display version information and exit",
            "-machine [type=]name[,prop[=value][,...]]\n                selects emulated machine ('-machine help' for list)\n                property accel=accel1[:accel2[:...]] selects accelerator\n                supported accelerators are kvm or tcg (vmscope runs on kvm)\n                graphics=on|off has no effect (vmscope emulates no display)",
            "-cpu cpu        select CPU ('-cpu help' for list)",
            "-accel [accel=]accelerator[,prop[=value][,...]]\n                select accelerator (kvm; use 'help' for a list)\n                kernel-irqchip=on controls accelerated irqchip support (default=on)",
            "-smp [[cpus=]n][,maxcpus=maxcpus][,sockets=sockets][,dies=dies][,cores=cores][,threads=threads]\n                set the number of initial CPUs to 'n' [default=1]\n                maxcpus= maximum number of total CPUs\n                sockets= number of sockets on the machine board\n                dies= number of dies in one socket\n                cores= number of cores in one die\n                threads= number of threads in one core",
            "-m [size=]megs[,slots=n,maxmem=size]\n                configure guest RAM\n                size: initial amount of guest memory\n                a suffix of \"M\" or \"G\" selects mega- or gigabytes (default: MiB)",
            "-name string1[,process=string2][,debug-threads=on|off]\n                set the name of the guest",
            "-device help    list the devices that can be added (none yet)",
        ],
    ),
    (
        "Block device options:",
        &[
            "-hda/-hdb file  use 'file' as hard disk 0/1 image",
            "-hdc/-hdd file  use 'file' as hard disk 2/3 image",
            "-cdrom file     use 'file' as CD-ROM image",
            "-drive [file=file][,if=type][,bus=n][,unit=m][,media=d][,index=i]\n       [,cache=writethrough|writeback|none|directsync|unsafe][,format=f]\n       [,snapshot=on|off][,rerror=report][,werror=report][,id=name]\n       [,aio=threads|native|io_uring]\n       [,readonly=on|off][,discard=ignore|unmap][,detect-zeroes=on|off|unmap]\n                use 'file' as a drive image (raw or qcow2; if=ide or none)",
            "-snapshot       write to temporary files instead of disk image files",
        ],
    ),
    (
        "Display options:",
        &[
            "-display none   select display backend type (vmscope emulates no display;\n                other types are accepted with a warning)",
            "-nographic      disable graphical output and redirect serial I/Os to console",
            "-vga [std|cirrus|vmware|qxl|virtio|none]\n                accepted with a warning: vmscope emulates no display",
            "-vnc <display>  accepted with a warning: vmscope emulates no display",
        ],
    ),
    (
        "i386 target only:",
        &["-no-hpet        HPET disabled (vmscope's pc machine has no HPET)"],
    ),
    (
        "Linux/Multiboot boot specific:",
        &[
            "-kernel bzImage use 'bzImage' as kernel image",
            "-append cmdline use 'cmdline' as kernel command line",
            "-initrd file    use 'file' as initial ram disk",
        ],
    ),
    (
        "Debug/Expert options:",
        &[
            "-chardev backend,id=id[,mux=on|off][,logfile=PATH]\n                backends: null, stdio[,signal=on|off], file,path=PATH[,append=on|off],\n                pipe,path=PATH, vc,\n                socket,path=PATH|host=HOST,port=PORT[,server=on|off][,wait=on|off]\n                       [,telnet=on|off][,reconnect=seconds]",
            "-serial dev     redirect the serial port to char device 'dev'",
            "-parallel none  no parallel port (vmscope has none)",
            "-monitor dev    redirect the monitor to char device 'dev'",
            "-qmp dev        like -monitor but opens in 'control' mode",
            "-qmp-pretty dev like -qmp but uses pretty JSON formatting",
            "-mon [chardev=]name[,mode=readline|control][,pretty[=on|off]]",
            "-pidfile file   write PID to 'file'",
            "-S              freeze CPU at startup (use 'c' to start execution)",
            "-enable-kvm     enable KVM full virtualization support",
            "-no-reboot      exit instead of rebooting",
            "-no-shutdown    stop before shutdown",
            "-daemonize      daemonize QEMU after initializing",
            "-nodefaults     don't create default devices",
            "-no-user-config\n                do not load default user-provided config files at startup",
        ],
    ),
];

/// `-help` output; `program` is the name in the usage line.
pub fn help_text(program: &str) -> String {
    let mut out = version_text();
    out.push_str(&format!(
        "usage: {program} [options] [disk_image]\n\n'disk_image' is a raw hard disk image for IDE hard disk 0 (not supported yet by vmscope)\n\n"
    ));
    for (i, (heading, lines)) in SECTIONS.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(heading);
        out.push('\n');
        for line in *lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(
        "\nDuring emulation, the following keys are useful:\n\
         When using -nographic, press 'ctrl-a h' to get some help.\n\n\
         vmscope: a KVM virtual machine monitor that runs qemu-system-x86_64 command lines.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::option_table::{lookup, Support};

    #[test]
    fn version_line_matches_qemu_layout() {
        let v = version_text();
        let mut lines = v.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!(
                "QEMU emulator version 7.2.0 (vmscope {})",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(
            lines.next().unwrap(),
            "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers"
        );
    }

    #[test]
    fn help_lists_only_implemented_options() {
        let help = help_text("qemu-system-x86_64");
        assert!(help.contains("\nusage: qemu-system-x86_64 [options] [disk_image]\n"));
        for line in help.lines() {
            let Some(word) = line.split_whitespace().next() else {
                continue;
            };
            if !word.starts_with('-') {
                continue;
            }
            // `-hda/-hdb` names two options, as in QEMU's text.
            for (i, name) in word.split('/').enumerate() {
                let name = if i == 0 {
                    name.to_string()
                } else {
                    format!("-{name}")
                };
                let spec = lookup(&name).unwrap_or_else(|| panic!("{name} is not an option"));
                // `-device help` works although no device can be added yet.
                if name != "-device" {
                    assert_eq!(spec.support, Support::Implemented, "{name}");
                }
            }
        }
        for name in [
            "-nodefaults",
            "-no-user-config",
            "-no-hpet",
            "-kernel",
            "-qmp",
        ] {
            assert!(
                help.contains(&format!("\n{name} ")) || help.contains(&format!("\n{name}\n")),
                "{name}"
            );
        }
    }
}

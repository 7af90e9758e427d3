//! The reference for the differential tests: QEMU 7.2's ide-cd, driven register by register
//! through its qtest protocol (`-qtest stdio`, CPU stopped with `-S`), so no guest is needed.
//! The drive is `-drive if=ide,index=2,media=cdrom` (secondary master, ports 0x170-0x177).
//! PIO only: the byte count limit and the final task file are observable from the ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// QEMU 7.2 (`VMSCOPE_QEMU` overrides the path, as for the integration tests).
fn qemu_binary() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("VMSCOPE_QEMU").unwrap_or_else(|_| "/usr/bin/qemu-system-x86_64".into()),
    );
    let version = Command::new(&path)
        .arg("-version")
        .output()
        .unwrap_or_else(|e| panic!("no reference QEMU at {}: {e}", path.display()));
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(
        text.starts_with("QEMU emulator version 7.2"),
        "{} is not QEMU 7.2: {text}",
        path.display()
    );
    path
}

const BASE: u16 = 0x170;
const STATUS_BSY: u8 = 0x80;
const STATUS_DRQ: u8 = 0x08;

/// The task file and data after a packet command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub status: u8,
    pub error: u8,
    pub sector_count: u8,
    pub data: Vec<u8>,
}

pub struct QemuCdrom {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    qmp: Option<BufReader<UnixStream>>,
    qmp_path: PathBuf,
}

impl QemuCdrom {
    /// QEMU with a CD-ROM drive holding `image` (raw), or empty.
    pub fn start(image: Option<&Path>) -> QemuCdrom {
        static N: AtomicU64 = AtomicU64::new(0);
        let qmp_path = std::env::temp_dir().join(format!(
            "vmscope-atapi-qmp-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let drive = match image {
            Some(path) => format!(
                "if=ide,index=2,media=cdrom,format=raw,file={}",
                path.display()
            ),
            None => "if=ide,index=2,media=cdrom".to_string(),
        };
        let mut child = Command::new(qemu_binary())
            .args(["-machine", "pc", "-accel", "tcg", "-S", "-display", "none"])
            .args(["-nodefaults", "-qtest", "stdio", "-qtest-log", "/dev/null"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(["-drive", &drive])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start QEMU");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        QemuCdrom {
            child,
            stdin,
            stdout,
            qmp: None,
            qmp_path,
        }
    }

    fn command(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to qtest");
        self.stdin.flush().unwrap();
        loop {
            let mut reply = String::new();
            let n = self.stdout.read_line(&mut reply).expect("read from qtest");
            assert!(n > 0, "QEMU exited during '{line}'");
            if reply.starts_with("OK") {
                return reply.trim().to_string();
            }
            assert!(!reply.starts_with("FAIL"), "qtest '{line}': {reply}");
        }
    }

    fn value(reply: &str) -> u32 {
        let hex = reply.split_whitespace().nth(1).expect("qtest value");
        u32::from_str_radix(hex.trim_start_matches("0x"), 16).expect("qtest hex")
    }

    pub fn inb(&mut self, port: u16) -> u8 {
        Self::value(&self.command(&format!("inb {port:#x}"))) as u8
    }

    pub fn outb(&mut self, port: u16, v: u8) {
        self.command(&format!("outb {port:#x} {v:#x}"));
    }

    fn inw(&mut self, port: u16) -> u16 {
        Self::value(&self.command(&format!("inw {port:#x}"))) as u16
    }

    fn outw(&mut self, port: u16, v: u16) {
        self.command(&format!("outw {port:#x} {v:#x}"));
    }

    fn wait_not_busy(&mut self) -> u8 {
        for _ in 0..10_000 {
            let status = self.inb(BASE + 7);
            if status & STATUS_BSY == 0 {
                return status;
            }
        }
        panic!("QEMU's drive stays busy");
    }

    /// Reads everything the device offers in DRQ phases, then the final task file.
    fn collect(&mut self) -> Observed {
        let mut data = Vec::new();
        loop {
            let status = self.wait_not_busy();
            if status & STATUS_DRQ == 0 {
                break;
            }
            let n = usize::from(self.inb(BASE + 4)) | usize::from(self.inb(BASE + 5)) << 8;
            for _ in 0..n / 2 {
                data.extend_from_slice(&self.inw(BASE).to_le_bytes());
            }
            if n % 2 == 1 {
                // QEMU never hands out the last byte of an odd PIO transfer through 16-bit
                // reads: DRQ stays set until a DEVICE RESET.
                break;
            }
        }
        Observed {
            status: self.inb(BASE + 7),
            error: self.inb(BASE + 1),
            sector_count: self.inb(BASE + 2),
            data,
        }
    }

    /// Sends one packet command by PIO with this byte count limit.
    pub fn packet(&mut self, cdb: &[u8; 12], byte_count_limit: u16) -> Observed {
        self.outb(BASE + 6, 0xa0);
        self.outb(BASE + 1, 0); // PIO
        self.outb(BASE + 4, byte_count_limit as u8);
        self.outb(BASE + 5, (byte_count_limit >> 8) as u8);
        self.outb(BASE + 7, 0xa0);
        let status = self.wait_not_busy();
        if status & STATUS_DRQ == 0 {
            // Refused before the packet phase.
            return self.collect();
        }
        for pair in cdb.chunks(2) {
            self.outw(BASE, u16::from_le_bytes([pair[0], pair[1]]));
        }
        self.collect()
    }

    /// IDENTIFY PACKET DEVICE.
    pub fn identify_packet(&mut self) -> [u16; 256] {
        self.outb(BASE + 6, 0xa0);
        self.outb(BASE + 7, 0xa1);
        self.wait_not_busy();
        let mut words = [0u16; 256];
        for w in words.iter_mut() {
            *w = self.inw(BASE);
        }
        words
    }

    /// ATA DEVICE RESET (QEMU's `ide_reset` for this drive).
    pub fn device_reset(&mut self) {
        self.outb(BASE + 6, 0xa0);
        self.outb(BASE + 7, 0x08);
        self.wait_not_busy();
    }

    /// Sends a QMP command and returns its reply line.
    pub fn qmp(&mut self, command: &str) -> String {
        if self.qmp.is_none() {
            let stream = UnixStream::connect(&self.qmp_path).expect("connect QMP");
            let mut reader = BufReader::new(stream);
            let mut greeting = String::new();
            reader.read_line(&mut greeting).unwrap();
            self.qmp = Some(reader);
            self.qmp("{\"execute\":\"qmp_capabilities\"}");
        }
        let reader = self.qmp.as_mut().unwrap();
        writeln!(reader.get_mut(), "{command}").unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("QMP reply");
            assert!(!line.is_empty(), "QMP closed");
            if line.contains("\"return\"") || line.contains("\"error\"") {
                return line;
            }
        }
    }
}

impl Drop for QemuCdrom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = Vec::new();
        let _ = self.stdout.read_to_end(&mut rest);
        let _ = std::fs::remove_file(&self.qmp_path);
    }
}

//! Assembles a VM from the configuration: KVM VM and vCPUs, memory map, boot, run state.
//!
//! The [`Machine`] owns the KVM objects and the vCPU threads. vCPU threads never change the
//! run state themselves: they report [`MachineEvent`]s, and the main loop calls
//! [`Machine::handle_events`], so pausing, resetting and shutting down happen on one thread.

pub mod acpi;
pub mod boot;
pub mod cpu_features;
pub mod cpuid;
mod describe;
pub mod e820;
pub mod firmware;
pub mod gate;
mod inspect;
pub mod irq_routing;
pub mod layout;
pub mod regs;
pub mod vcpu;

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::block::drive::DriveSet;
use crate::config::{Config, KernelBoot};
use crate::hw::bus::PioBus;
use crate::hw::i8042::{
    ResetTrigger, I8042, I8042_BASE, I8042_PORT_COUNT, KEYBOARD_IRQ, MOUSE_IRQ,
};
use crate::hw::ide::{self, atapi::Atapi, PiixIde};
use crate::hw::irq::KvmIrqLine;
use crate::hw::mmio::MmioBus;
use crate::hw::pc::chipset::{Chipset, ChipsetParts};
use crate::hw::pc::debugcon::DebugCon;
use crate::hw::pc::piix4_pm::DIRECT_BOOT_PM_BASE;
use crate::hw::pc::rtc::{CmosFacts, Rtc, RTC_IRQ};
use crate::hw::pc::rtc_clock::RtcTimeSource;
use crate::hw::pci::{devfn, PciFunction};
use crate::hw::pm::{Gpe0Block, PowerManagement, GPE0_IO_BASE, GPE0_IO_LEN};
use crate::hw::serial::{IrqLine, RxSpace, SerialPort, COM1_BASE, COM1_IRQ, UART_PORT_COUNT};
use crate::hw::virtual_clock::VirtualClock;
use crate::monitor::RunState;
use boot::BootEntry;
use cpuid::CpuTopology;
use e820::E820Entry;
use firmware::{BiosRom, FirmwareError, ShadowSlots};
use gate::VcpuGate;
use irq_routing::GsiRouting;
use layout::{RamSplit, KVM_IDENTITY_MAP_START, KVM_TSS_START};

/// What a vCPU (or a device on a vCPU thread) asks the main loop to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineEvent {
    /// ACPI soft-off.
    PowerOff,
    /// ACPI S4: the guest saved itself to disk; the machine turns off.
    SuspendToDisk,
    /// i8042 reset or triple fault.
    Reset,
    /// KVM could not run or emulate the guest.
    InternalError { vcpu: u32, detail: String },
}

/// Delivers [`MachineEvent`]s to the main loop and wakes it through an eventfd.
pub struct EventSink {
    sender: Mutex<Sender<MachineEvent>>,
    wake: EventFd,
}

thread_local! {
    /// Set when this thread (a vCPU, inside a device handler) asked for a reset or poweroff:
    /// the vCPU must not run further guest instructions until the main loop acted, as a CPU
    /// stops on QEMU (SeaBIOS's reset code is followed by a deliberate triple fault).
    static STOP_REQUESTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread asked for a reset or poweroff since the last call.
pub(crate) fn take_stop_request() -> bool {
    STOP_REQUESTED.with(|flag| flag.replace(false))
}

impl EventSink {
    pub fn send(&self, event: MachineEvent) {
        if matches!(
            event,
            MachineEvent::Reset | MachineEvent::PowerOff | MachineEvent::SuspendToDisk
        ) {
            STOP_REQUESTED.with(|flag| flag.set(true));
        }
        // The receiver lives as long as the machine; after it is gone nobody listens anyway.
        let _ = self.sender.lock().unwrap().send(event);
        let _ = self.wake.write(1);
    }
}

/// State the vCPU threads share with the main loop.
pub struct Shared {
    pub gate: VcpuGate,
    pub pio: PioBus,
    /// Memory-mapped device ranges (PCI memory BARs).
    pub mmio: MmioBus,
    pub memory: GuestMemoryMmap,
    /// Where the boot vCPU starts after power-on and every reset.
    pub boot_entry: Mutex<BootEntry>,
    pub events: Arc<EventSink>,
}

/// What the guest did, for the monitors' events (QEMU's SHUTDOWN, RESET and STOP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestNotice {
    /// The guest shut the machine down; `reason` is QEMU's `ShutdownCause` name
    /// (`guest-shutdown`, or `guest-reset` under `-no-reboot`).
    Shutdown { reason: &'static str },
    /// The guest reset the machine.
    Reset,
    /// The guest entered S4 (QEMU's SUSPEND_DISK), before its Shutdown.
    SuspendDisk,
    /// The VM stopped because of what the guest did (poweroff under `-no-shutdown`, an
    /// emulation failure).
    Stopped,
}

/// What the process should do after the main loop handled machine events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    KeepRunning,
    Exit(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("failed to initialize kvm: {0}")]
    KvmOpen(#[source] kvm_ioctls::Error),
    #[error("KVM: {what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot set up guest memory: {0}")]
    Memory(String),
    #[error("{0}")]
    Boot(#[from] boot::BootError),
    #[error("{0}")]
    Regs(#[from] regs::RegsError),
    #[error("{0}")]
    Ports(#[from] crate::hw::bus::PortConflict),
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("{0}")]
    Firmware(#[from] FirmwareError),
    #[error("{0}")]
    Chipset(#[from] crate::hw::pc::chipset::ChipsetError),
    #[error("{0}")]
    Ide(#[from] crate::hw::ide::piix::IdeAttachError),
    #[error("{count} isa-debugcon port(s) configured but {given} output(s) given")]
    DebugconOutputs { count: usize, given: usize },
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    CpuFeature(#[from] cpu_features::UnknownFeature),
    #[error("{0}")]
    Routing(#[from] irq_routing::RoutingError),
    #[error("cannot start vCPU thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("CPU#{0} not available")]
    NoSuchVcpu(u32),
}

/// The ACPI SCI's ISA IRQ (QEMU's PIIX4 PM is wired to GSI 9).
const SCI_IRQ: u32 = 9;

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> MachineError {
    move |source| MachineError::Kvm { what, source }
}

/// A VM built from a [`Config`].
pub struct Machine {
    vm: Arc<VmFd>,
    /// Registering guest RAM with KVM is the slowest step of start-up on some hosts, and the
    /// guest needs it only once it runs: it proceeds on a helper thread while the main loop
    /// already serves the monitors, and is waited for before the first vCPU runs.
    memory_registration: Mutex<Option<JoinHandle<Result<(), MachineError>>>>,
    shared: Arc<Shared>,
    vcpus: Vec<vcpu::Vcpu>,
    /// A second handle on each vCPU, by index, for register reads by the monitor.
    inspectors: Vec<VcpuFd>,
    threads: Vec<JoinHandle<()>>,
    /// Host thread id of each vCPU thread, by vCPU index (`query-cpus-fast`).
    vcpu_thread_ids: Vec<i64>,
    events: Mutex<Receiver<MachineEvent>>,
    serial: Arc<SerialPort>,
    kernel_boot: Option<KernelBoot>,
    /// The i440FX/PIIX chipset, reset with the machine. Its host bridge owns the PAM
    /// shadowing (`firmware::ShadowSlots`) and through it the BIOS ROM mapping.
    chipset: Chipset,
    /// The ACPI PM registers: the power button, and reset with the machine.
    pm: Arc<PowerManagement>,
    split: RamSplit,
    e820: Vec<E820Entry>,
    rsdp_addr: u64,
    /// Direct kernel boot: the ACPI tables, written again on reset (firmware boot gets them
    /// from fw_cfg and installs them itself on every boot).
    direct_boot_acpi: Option<acpi::AcpiTables>,
    no_reboot: bool,
    no_shutdown: bool,
    run_state: Mutex<RunState>,
    /// Interrupt controller and PIT state right after creation, restored on reset.
    initial_irqchips: Vec<kvm_bindings::kvm_irqchip>,
    initial_pit: kvm_bindings::kvm_pit_state2,
    /// The drives the disk controllers use.
    drives: Arc<DriveSet>,
    /// Reset with the machine (SeaBIOS probes it again at every boot).
    i8042: Arc<I8042>,
    /// KVM's interrupt routes, where MSI-X vectors get theirs.
    irq_routing: Arc<GsiRouting>,
    /// What `info qtree` / `info mtree` need beyond the fields above (see `describe`).
    describe: describe::DescribeFacts,
}

impl Machine {
    /// Creates the VM, its memory, devices and vCPUs, and loads the kernel. Nothing runs until
    /// [`Machine::start`]. Serial output goes to `serial_output`; `serial_rx_space` is called
    /// when the guest drained the serial receive FIFO.
    pub fn new(
        config: &Config,
        serial_output: Box<dyn Write + Send>,
        serial_rx_space: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Machine, MachineError> {
        Machine::with_debugcons(
            config,
            serial_output,
            serial_rx_space,
            Vec::new(),
            Arc::new(DriveSet::default()),
        )
    }

    /// [`Machine::new`] with one output per `config.debugcons` entry, in order, and the
    /// opened drives (`config.drives`) for the disk controllers.
    pub fn with_debugcons(
        config: &Config,
        serial_output: Box<dyn Write + Send>,
        serial_rx_space: Box<dyn Fn() + Send + Sync>,
        debugcon_outputs: Vec<Box<dyn Write + Send>>,
        drives: Arc<DriveSet>,
    ) -> Result<Machine, MachineError> {
        if debugcon_outputs.len() != config.debugcons.len() {
            return Err(MachineError::DebugconOutputs {
                count: config.debugcons.len(),
                given: debugcon_outputs.len(),
            });
        }
        // Without -kernel the machine runs firmware; read it before creating anything.
        let bios = match &config.kernel_boot {
            Some(_) => {
                if let Some(name) = &config.firmware {
                    // QEMU runs this firmware before the kernel; vmscope enters the kernel
                    // directly. The file must still be loadable, as on QEMU.
                    BiosRom::load(&firmware::find_bios(name, &config.data_dirs))?;
                    eprintln!(
                        "{}: warning: -bios {} is not run: vmscope enters -kernel directly",
                        crate::program_name(),
                        name.display()
                    );
                }
                None
            }
            None => {
                let name = config
                    .firmware
                    .clone()
                    .unwrap_or_else(|| firmware::DEFAULT_BIOS.into());
                let path = firmware::find_bios(&name, &config.data_dirs);
                Some(BiosRom::load(&path)?)
            }
        };
        let kvm = Kvm::new().map_err(MachineError::KvmOpen)?;
        let vm = Arc::new(kvm.create_vm().map_err(kvm_err("creating the VM"))?);
        vm.set_tss_address(KVM_TSS_START as usize)
            .map_err(kvm_err("setting the TSS address"))?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_START)
            .map_err(kvm_err("setting the identity map address"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("creating the in-kernel irqchip"))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_err("creating the in-kernel PIT"))?;
        let irq_routing = Arc::new(GsiRouting::new(vm.clone())?);

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("reading supported CPUID"))?;
        let split = RamSplit::for_ram_size(config.memory.size);
        let (memory, memory_registration) = create_memory(&vm, &split)?;
        let e820 = e820::memory_map(&split, cpuid::is_amd_model(&supported, config.cpu.kind));

        let (sender, events) = mpsc::channel();
        let wake =
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(MachineError::EventFd)?;
        let event_sink = Arc::new(EventSink {
            sender: Mutex::new(sender),
            wake,
        });

        let serial_irq =
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(MachineError::EventFd)?;
        vm.register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(kvm_err("wiring the COM1 interrupt"))?;
        let serial = Arc::new(SerialPort::new(
            IrqLine(serial_irq),
            RxSpace(serial_rx_space),
            serial_output,
        ));

        let mut pio = PioBus::new();
        pio.register(COM1_BASE, UART_PORT_COUNT, serial.clone())?;
        let reset_events = event_sink.clone();
        let i8042 = Arc::new(I8042::new(
            ResetTrigger(Box::new(move || reset_events.send(MachineEvent::Reset))),
            Arc::new(KvmIrqLine::new(vm.clone(), KEYBOARD_IRQ)),
            Arc::new(KvmIrqLine::new(vm.clone(), MOUSE_IRQ)),
        ));
        pio.register(I8042_BASE, I8042_PORT_COUNT, i8042.clone())?;
        let poweroff_events = event_sink.clone();
        let pm_block = Arc::new(PowerManagement::new(Box::new(move || {
            poweroff_events.send(MachineEvent::PowerOff)
        })));
        // The SCI is ISA IRQ 9, level-triggered (the MADT's override says active high).
        let sci_vm = vm.clone();
        let sci_events = event_sink.clone();
        pm_block.connect_sci(Box::new(move |level| {
            if let Err(e) = sci_vm.set_irq_line(SCI_IRQ, level) {
                sci_events.send(MachineEvent::InternalError {
                    vcpu: 0,
                    detail: format!("KVM: driving the ACPI SCI: {e}"),
                });
            }
        }));
        pm_block
            .start_overflow_timer()
            .map_err(MachineError::Thread)?;
        let s4_events = event_sink.clone();
        pm_block.connect_suspend_to_disk(Box::new(move || {
            s4_events.send(MachineEvent::SuspendToDisk)
        }));
        pio.register(
            GPE0_IO_BASE,
            GPE0_IO_LEN,
            Arc::new(Gpe0Block(pm_block.clone())),
        )?;
        for (debugcon, output) in config.debugcons.iter().zip(debugcon_outputs) {
            pio.register(debugcon.iobase, 1, Arc::new(DebugCon::new(output)))?;
        }

        let topology = CpuTopology::new(&config.smp);
        // One past the highest APIC id any possible vCPU can have (ids have holes when a
        // topology level is not a power of two): what QEMU reports as the CPU maximum.
        let apic_id_limit = (0..config.smp.max_cpus)
            .map(|i| topology.apic_id(i))
            .max()
            .map_or(1, |id| id + 1);
        let firmware_boot = bios.is_some();
        let bios_size = bios.as_ref().map(|rom| layout::HIGH_RAM_START - rom.base());
        if let Some(rom) = &bios {
            rom.register(&vm)?;
        }
        let shadow = Arc::new(ShadowSlots::new(vm.clone(), &memory, bios)?);
        let apic_ids: Vec<u32> = (0..config.smp.cpus).map(|i| topology.apic_id(i)).collect();
        // The tables list every possible vCPU (-smp maxcpus), the absent ones disabled.
        let possible_apic_ids: Vec<u32> = (0..config.smp.max_cpus.max(config.smp.cpus))
            .map(|i| topology.apic_id(i))
            .collect();
        let acpi_tables = acpi::AcpiTables::build(&acpi::AcpiFacts {
            split: &split,
            apic_ids: &possible_apic_ids,
            present: apic_ids.len(),
        });
        // Firmware places and links the tables itself (fw_cfg); direct boot gets them
        // written into the BIOS area.
        let (acpi_files, direct_boot_acpi) = if firmware_boot {
            (acpi_tables.fw_cfg_files(), None)
        } else {
            (Vec::new(), Some(acpi_tables))
        };
        let fw_cfg = firmware::fw_cfg_items(&firmware::FwCfgFacts {
            acpi_files,
            split: &split,
            e820: firmware::qemu_e820(&split, &e820),
            cpus: config.smp.cpus as u16,
            apic_id_limit: apic_id_limit as u16,
            nographic: config.nographic,
            reboot_timeout: config.boot.reboot_timeout,
            boot_menu: config.boot.menu,
            splash_time: config.boot.splash_time,
        })
        .build(memory.clone());
        // The RTC's IRQ 8, an edge through an irqfd like COM1's.
        let rtc_irq =
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(MachineError::EventFd)?;
        vm.register_irqfd(&rtc_irq, RTC_IRQ)
            .map_err(kvm_err("wiring the RTC interrupt"))?;
        let virtual_clock = Arc::new(VirtualClock::new());
        let rtc = Arc::new(Rtc::new(
            &CmosFacts {
                ram_below_4g: split.below_4g,
                ram_above_4g: split.above_4g,
                cpus: config.smp.cpus,
                boot_order: config.boot.order.clone(),
            },
            Box::new(move || {
                let _ = rtc_irq.write(1);
            }),
            RtcTimeSource::new(config.rtc, virtual_clock.clone()),
        ));
        rtc.start_ticker().map_err(MachineError::Thread)?;
        let cf9_events = event_sink.clone();
        let port92_events = event_sink.clone();
        // The PIIX3 IDE function (00:01.1) with the drives at IDE positions; its channels
        // interrupt on ISA IRQs 14 and 15 as level lines.
        let ide = Arc::new(PiixIde::from_drives(
            &drives,
            [
                Arc::new(KvmIrqLine::new(vm.clone(), ide::PRIMARY_IRQ)),
                Arc::new(KvmIrqLine::new(vm.clone(), ide::SECONDARY_IRQ)),
            ],
            &memory,
            &|drive| Ok(Box::new(Atapi::new(drive))),
        )?);
        ide.register_legacy_ports(&mut pio)?;
        for (index, value) in ide.cmos_bytes() {
            rtc.set_cmos_data(index, value);
        }
        let chipset = Chipset::install(
            &mut pio,
            ChipsetParts {
                ram_below_4g: split.below_4g,
                // Direct kernel boot has no firmware to open the BIOS area: it starts as
                // SeaBIOS would leave it for a kernel, all RAM, PM block at 0x600.
                initial_pam: if firmware_boot {
                    [0; 7]
                } else {
                    [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]
                },
                shadow: shadow.clone(),
                pm_block: pm_block.clone(),
                pm_preset_base: (!firmware_boot).then_some(DIRECT_BOOT_PM_BASE),
                on_reset: Box::new(move || cf9_events.send(MachineEvent::Reset)),
                on_fast_reset: Box::new(move || port92_events.send(MachineEvent::Reset)),
                fw_cfg,
                rtc: rtc.clone(),
                extra_functions: vec![(devfn(1, 1), ide.clone() as Arc<dyn PciFunction>)],
            },
        )?;
        ide.attach_io_space(chipset.io_space.clone());
        if let Some(error) = shadow.take_error() {
            return Err(MachineError::Memory(error));
        }
        let remap_events = event_sink.clone();
        shadow.report_errors_to(Box::new(move |detail| {
            remap_events.send(MachineEvent::InternalError { vcpu: 0, detail })
        }));

        let rsdp_addr = match &direct_boot_acpi {
            None => 0,
            Some(tables) => tables
                .write_to(&memory)
                .map_err(|e| MachineError::Memory(e.to_string()))?,
        };

        let boot_entry = match &config.kernel_boot {
            Some(kernel_boot) => boot::load_kernel(&memory, kernel_boot, &split, &e820, rsdp_addr)?,
            None => BootEntry::ResetVector,
        };

        let mut vcpus = Vec::new();
        let mut inspectors = Vec::new();
        for (index, &apic_id) in apic_ids.iter().enumerate() {
            let fd = vm
                .create_vcpu(u64::from(apic_id))
                .map_err(kvm_err("creating a vCPU"))?;
            let (table, warnings) = cpuid::vcpu_cpuid(&supported, &config.cpu, &topology, apic_id)?;
            if index == 0 {
                for warning in warnings {
                    eprintln!("{}: {warning}", crate::program_name());
                }
            }
            fd.set_cpuid2(&table).map_err(kvm_err("setting CPUID"))?;
            regs::wire_local_apic(&fd)?;
            let initial_lapic = fd.get_lapic().map_err(kvm_err("reading the local APIC"))?;
            if index == 0 {
                regs::set_boot_state(&fd, &memory, boot_entry)?;
            } else {
                regs::set_power_on_edx(&fd)?;
            }
            inspectors.push(inspect::inspector(&vm, &fd)?);
            vcpus.push(vcpu::Vcpu {
                index: index as u32,
                fd,
                initial_lapic,
            });
        }

        let initial_irqchips = [
            KVM_IRQCHIP_PIC_MASTER,
            KVM_IRQCHIP_PIC_SLAVE,
            KVM_IRQCHIP_IOAPIC,
        ]
        .into_iter()
        .map(|chip_id| {
            let mut chip = kvm_bindings::kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            vm.get_irqchip(&mut chip).map(|()| chip)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(kvm_err("reading the interrupt controllers"))?;
        let initial_pit = vm.get_pit2().map_err(kvm_err("reading the PIT"))?;

        let shared = Arc::new(Shared {
            gate: VcpuGate::new(vcpus.len(), virtual_clock),
            pio,
            mmio: MmioBus::new(),
            memory,
            boot_entry: Mutex::new(boot_entry),
            events: event_sink,
        });
        Ok(Machine {
            vm,
            memory_registration: Mutex::new(Some(memory_registration)),
            shared,
            vcpus,
            inspectors,
            threads: Vec::new(),
            vcpu_thread_ids: Vec::new(),
            events: Mutex::new(events),
            serial,
            kernel_boot: config.kernel_boot.clone(),
            chipset,
            pm: pm_block,
            split,
            e820,
            rsdp_addr,
            direct_boot_acpi,
            no_reboot: config.no_reboot,
            no_shutdown: config.no_shutdown,
            run_state: Mutex::new(RunState::Prelaunch),
            initial_irqchips,
            initial_pit,
            drives,
            i8042,
            irq_routing,
            describe: describe::DescribeFacts {
                bios_size,
                debugcons: config.debugcons.clone(),
                cpus: config.smp.cpus,
                ide,
                rtc,
            },
        })
    }

    /// Starts the vCPU threads; they run at once unless `paused` (`-S`).
    pub fn start(&mut self, paused: bool) -> Result<(), MachineError> {
        for vcpu in self.vcpus.drain(..) {
            let shared = self.shared.clone();
            let (tid_sender, tid) = mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("CPU {}/KVM", vcpu.index))
                .spawn(move || {
                    // SAFETY: gettid has no preconditions and cannot fail.
                    let _ = tid_sender.send(i64::from(unsafe { libc::gettid() }));
                    vcpu::run(vcpu, shared)
                })
                .map_err(MachineError::Thread)?;
            self.threads.push(handle);
            // The thread sends its id first thing; 0 only if it died before that.
            self.vcpu_thread_ids.push(tid.recv().unwrap_or(0));
        }
        if !paused {
            self.resume().map_err(MachineError::Start)?;
        }
        Ok(())
    }

    /// KVM's interrupt routing, for devices with MSI-X vectors.
    pub fn irq_routing(&self) -> &Arc<GsiRouting> {
        &self.irq_routing
    }

    /// The drives the machine's disk controllers use.
    pub fn drives(&self) -> &Arc<DriveSet> {
        &self.drives
    }

    /// The host thread id of each vCPU thread, by vCPU index (empty before `start`).
    pub fn vcpu_thread_ids(&self) -> &[i64] {
        &self.vcpu_thread_ids
    }

    /// The COM1 UART, for wiring its input to a chardev.
    pub fn serial(&self) -> Arc<SerialPort> {
        self.serial.clone()
    }

    /// Readable when [`Machine::handle_events`] has work.
    pub fn event_fd(&self) -> RawFd {
        self.shared.events.wake.as_raw_fd()
    }

    pub fn run_state(&self) -> RunState {
        *self.run_state.lock().unwrap()
    }

    /// Pauses every vCPU (monitor `stop`).
    pub fn pause(&self) {
        let mut state = self.run_state.lock().unwrap();
        self.shared.gate.close();
        if *state == RunState::Running {
            *state = RunState::Paused;
        }
    }

    /// Waits until guest RAM is registered with KVM (once; later calls return at once).
    fn wait_for_memory(&self) -> Result<(), MachineError> {
        let pending = self.memory_registration.lock().unwrap().take();
        match pending {
            Some(handle) => handle.join().unwrap_or_else(|_| {
                Err(MachineError::Memory("registration thread panicked".into()))
            }),
            None => Ok(()),
        }
    }

    /// Resumes the vCPUs (monitor `cont`).
    pub fn resume(&self) -> Result<(), String> {
        self.wait_for_memory().map_err(|e| e.to_string())?;
        let mut state = self.run_state.lock().unwrap();
        match *state {
            RunState::InternalError => {
                return Err("Resetting the Virtual Machine is required".into())
            }
            RunState::Shutdown => {
                // QEMU resets a machine powered off under -no-shutdown before running it again.
                drop(state);
                self.reset_machine().map_err(|e| e.to_string())?;
                state = self.run_state.lock().unwrap();
            }
            _ => {}
        }
        *state = RunState::Running;
        self.shared.gate.open();
        Ok(())
    }

    /// Acts on everything the vCPUs reported since the last call, telling `notify` what the
    /// guest did, in the order QEMU reports it.
    pub fn handle_events(&self, notify: &mut dyn FnMut(GuestNotice)) -> Next {
        let _ = self.shared.events.wake.read();
        loop {
            let Ok(event) = self.events.lock().unwrap().try_recv() else {
                break;
            };
            if event == MachineEvent::SuspendToDisk {
                notify(GuestNotice::SuspendDisk);
            }
            match event {
                MachineEvent::PowerOff | MachineEvent::SuspendToDisk => {
                    notify(GuestNotice::Shutdown {
                        reason: "guest-shutdown",
                    });
                    if !self.no_shutdown {
                        return Next::Exit(0);
                    }
                    self.shared.gate.close();
                    *self.run_state.lock().unwrap() = RunState::Shutdown;
                    notify(GuestNotice::Stopped);
                }
                MachineEvent::Reset => {
                    if self.no_reboot {
                        notify(GuestNotice::Shutdown {
                            reason: "guest-reset",
                        });
                        return Next::Exit(0);
                    }
                    if let Err(e) = self.reset_machine() {
                        eprintln!("{}: reset failed: {e}", crate::program_name());
                        return Next::Exit(1);
                    }
                    notify(GuestNotice::Reset);
                }
                MachineEvent::InternalError { detail, .. } => {
                    if *self.run_state.lock().unwrap() == RunState::InternalError {
                        continue;
                    }
                    eprintln!("{detail}");
                    self.shared.gate.close();
                    *self.run_state.lock().unwrap() = RunState::InternalError;
                    notify(GuestNotice::Stopped);
                }
            }
        }
        Next::KeepRunning
    }

    /// A system reset: devices and vCPUs back to power-on state, the kernel reloaded (RAM
    /// itself is not cleared, as on QEMU), then running again if it was running.
    pub fn reset_machine(&self) -> Result<(), MachineError> {
        let was_open = self.shared.gate.is_open();
        self.shared.gate.close();
        for chip in &self.initial_irqchips {
            self.vm
                .set_irqchip(chip)
                .map_err(kvm_err("resetting the interrupt controllers"))?;
        }
        self.vm
            .set_pit2(&self.initial_pit)
            .map_err(kvm_err("resetting the PIT"))?;
        // A remap KVM refuses is reported as an internal error (see `report_errors_to`).
        self.chipset.reset();
        self.i8042.reset();
        self.pm.reset();
        if let Some(tables) = &self.direct_boot_acpi {
            tables
                .write_to(&self.shared.memory)
                .map_err(|e| MachineError::Memory(e.to_string()))?;
        }
        if let Some(kernel_boot) = &self.kernel_boot {
            let entry = boot::load_kernel(
                &self.shared.memory,
                kernel_boot,
                &self.split,
                &self.e820,
                self.rsdp_addr,
            )?;
            *self.shared.boot_entry.lock().unwrap() = entry;
        }
        self.shared.gate.request_reset();
        let mut state = self.run_state.lock().unwrap();
        if matches!(*state, RunState::Shutdown | RunState::InternalError) {
            *state = RunState::Paused;
        }
        if was_open {
            self.shared.gate.open();
        }
        Ok(())
    }

    /// Presses the ACPI power button (monitor `system_powerdown`): the guest sees PWRBTN_STS
    /// and an SCI if it enabled the button, and nothing otherwise, as on QEMU.
    pub fn press_power_button(&self) {
        self.pm.press_power_button();
    }

    /// Stops and joins every vCPU thread.
    pub fn shutdown(&mut self) {
        // The registration thread uses the VM and the RAM mapping: let it finish first.
        let _ = self.wait_for_memory();
        self.shared.gate.terminate();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Allocates guest RAM and hands each region to KVM on a helper thread (see
/// [`Machine::memory_registration`]).
fn create_memory(
    vm: &Arc<VmFd>,
    split: &RamSplit,
) -> Result<(GuestMemoryMmap, JoinHandle<Result<(), MachineError>>), MachineError> {
    let ranges: Vec<(GuestAddress, usize)> = split
        .ranges()
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect();
    let memory =
        GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MachineError::Memory(e.to_string()))?;
    // The BIOS area 0xC0000-0xFFFFF is left out: its slots follow the i440FX PAM
    // registers (see `firmware`).
    let mut descriptors = Vec::new();
    for (slot, start, len) in firmware::ram_slots(split) {
        let host = memory
            .get_host_address(GuestAddress(start))
            .map_err(|e| MachineError::Memory(e.to_string()))?;
        descriptors.push(kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: start,
            memory_size: len,
            userspace_addr: host as u64,
        });
    }
    let vm = vm.clone();
    let registration = std::thread::Builder::new()
        .name("memory setup".into())
        .spawn(move || {
            for descriptor in descriptors {
                // SAFETY: each region is a live anonymous mapping owned by the machine's
                // guest memory, which outlives this thread (the machine joins it before it is
                // dropped), and the slots do not overlap.
                unsafe { vm.set_user_memory_region(descriptor) }
                    .map_err(kvm_err("registering guest memory"))?;
            }
            Ok(())
        })
        .map_err(MachineError::Thread)?;
    Ok((memory, registration))
}

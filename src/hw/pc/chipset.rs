//! Puts the `pc` chipset together on the port bus: PCI configuration ports with the
//! i440FX, PIIX3 and PIIX4 PM functions (and the PIIX4's APM ports), the movable I/O
//! space, fw_cfg, the RTC and port 0x92.

use std::sync::Arc;

use super::apm::{Apm, APM_IO_BASE, APM_IO_LEN};
use super::fw_cfg::{FwCfg, FW_CFG_IO_BASE, FW_CFG_IO_LEN};
use super::i440fx::I440fx;
use super::pam::{ShadowControl, PAM_REGISTER_COUNT};
use super::piix3::Piix3;
use super::piix4_pm::Piix4Pm;
use super::port92::{Port92, PORT92};
use super::rtc::{Rtc, RTC_IO_BASE, RTC_IO_LEN};
use crate::hw::bus::{PioBus, PortConflict};
use crate::hw::pci::{
    devfn, IoSpace, PciBus, PciConfigPorts, PciFunction, PCI_CONFIG_ADDRESS, PCI_CONFIG_PORT_COUNT,
};
use crate::hw::pm::PowerManagement;

/// What the chipset is built from.
pub struct ChipsetParts {
    pub ram_below_4g: u64,
    /// PAM registers at power-on (see [`I440fx::new`]).
    pub initial_pam: [u8; PAM_REGISTER_COUNT],
    pub shadow: Arc<dyn ShadowControl>,
    /// The ACPI PM register block and where it starts enabled, if anywhere.
    pub pm_block: Arc<PowerManagement>,
    pub pm_preset_base: Option<u16>,
    /// Called when the guest resets through port 0xCF9.
    pub on_reset: Box<dyn Fn() + Send + Sync>,
    /// Called when the guest resets through port 0x92.
    pub on_fast_reset: Box<dyn Fn() + Send + Sync>,
    pub fw_cfg: FwCfg,
    pub rtc: Arc<Rtc>,
    /// More PCI functions on bus 0 (IDE, virtio, ...), by devfn; 00:00.0, 00:01.0 and
    /// 00:01.3 are the chipset's own.
    pub extra_functions: Vec<(u8, Arc<dyn PciFunction>)>,
}

/// The installed chipset, kept for system reset.
pub struct Chipset {
    pub pci: Arc<PciBus>,
    pub config_ports: Arc<PciConfigPorts>,
    pub io_space: Arc<IoSpace>,
    pub port92: Arc<Port92>,
    /// For routing PCI INTx to ISA IRQs ([`Piix3::intx_irq`]).
    pub piix3: Arc<Piix3>,
}

/// The chipset could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum ChipsetError {
    #[error("{0}")]
    Ports(#[from] PortConflict),
    #[error("PCI slot {:02x}.{} is taken", .0 >> 3, .0 & 7)]
    SlotTaken(u8),
}

impl Chipset {
    pub fn install(pio: &mut PioBus, parts: ChipsetParts) -> Result<Chipset, ChipsetError> {
        let io_space = Arc::new(IoSpace::new());
        pio.set_fallback(io_space.clone());
        let mut pci = PciBus::new();
        pci.add(
            devfn(0, 0),
            Arc::new(I440fx::new(
                parts.ram_below_4g,
                parts.initial_pam,
                parts.shadow,
            )),
        );
        let piix3 = Arc::new(Piix3::new());
        pci.add(devfn(1, 0), piix3.clone());
        pci.add(
            devfn(1, 3),
            Arc::new(Piix4Pm::new(
                io_space.clone(),
                parts.pm_block.clone(),
                parts.pm_preset_base,
            )),
        );
        for (slot, function) in parts.extra_functions {
            if !pci.add(slot, function) {
                return Err(ChipsetError::SlotTaken(slot));
            }
        }
        let pci = Arc::new(pci);
        let config_ports = Arc::new(PciConfigPorts::new(pci.clone(), parts.on_reset));
        pio.register(
            PCI_CONFIG_ADDRESS,
            PCI_CONFIG_PORT_COUNT,
            config_ports.clone(),
        )?;
        pio.register(FW_CFG_IO_BASE, FW_CFG_IO_LEN, Arc::new(parts.fw_cfg))?;
        pio.register(RTC_IO_BASE, RTC_IO_LEN, parts.rtc)?;
        pio.register(APM_IO_BASE, APM_IO_LEN, Arc::new(Apm::new(parts.pm_block)))?;
        let port92 = Arc::new(Port92::new(parts.on_fast_reset));
        pio.register(PORT92, 1, port92.clone())?;
        Ok(Chipset {
            pci,
            config_ports,
            io_space,
            port92,
            piix3,
        })
    }

    /// System reset: PCI functions (PAM, PM base) and the configuration address back to
    /// power-on values. The CMOS keeps its contents, as with a battery.
    pub fn reset(&self) {
        self.config_ports.reset();
        self.pci.reset();
        self.port92.reset();
    }
}

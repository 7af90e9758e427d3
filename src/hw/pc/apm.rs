//! The PIIX4 APM registers at 0xB2 (control, APMC) and 0xB3 (status, APMS). Writing the
//! FADT's ACPI_ENABLE / ACPI_DISABLE values to APMC switches the PM block's SCI_EN, which is
//! how an OS enters ACPI mode (SeaBIOS's FADT names 0xB2 as SMI_CMD with 0xF1/0xF0). Other
//! values would raise an SMI, which a machine without SMM (KVM here, as QEMU's `smm=off`)
//! does not have.

use std::sync::{Arc, Mutex};

use crate::hw::bus::PioDevice;
use crate::hw::pm::PowerManagement;

pub const APM_IO_BASE: u16 = 0xb2;
pub const APM_IO_LEN: u16 = 2;
const ACPI_ENABLE: u8 = 0xf1;
const ACPI_DISABLE: u8 = 0xf0;

pub struct Apm {
    /// APMC, APMS.
    registers: Mutex<[u8; 2]>,
    pm: Arc<PowerManagement>,
}

impl Apm {
    pub fn new(pm: Arc<PowerManagement>) -> Apm {
        Apm {
            registers: Mutex::new([0; 2]),
            pm,
        }
    }
}

impl PioDevice for Apm {
    fn read(&self, offset: u16, data: &mut [u8]) {
        let registers = self.registers.lock().unwrap();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = registers
                .get(usize::from(offset) + i)
                .copied()
                .unwrap_or(0xff);
        }
    }

    fn write(&self, offset: u16, data: &[u8]) {
        let mut registers = self.registers.lock().unwrap();
        for (i, byte) in data.iter().enumerate() {
            if let Some(register) = registers.get_mut(usize::from(offset) + i) {
                *register = *byte;
            }
        }
        if offset == 0 {
            match data[0] {
                ACPI_ENABLE => self.pm.set_sci_enabled(true),
                ACPI_DISABLE => self.pm.set_sci_enabled(false),
                _ => {}
            }
        }
    }
}

/// The APM ports under QEMU's region name.
pub fn io_regions() -> Vec<crate::hw::describe::PortRegion> {
    vec![crate::hw::describe::PortRegion::new(
        "apm-io",
        APM_IO_BASE,
        APM_IO_LEN,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm1_control(pm: &PowerManagement) -> u16 {
        let mut data = [0u8; 2];
        pm.read(4, &mut data);
        u16::from_le_bytes(data)
    }

    #[test]
    fn acpi_enable_and_disable_switch_sci_en() {
        let pm = Arc::new(PowerManagement::new(Box::new(|| {})));
        let apm = Apm::new(pm.clone());
        assert_eq!(pm1_control(&pm) & 1, 0);
        apm.write(0, &[ACPI_ENABLE]);
        assert_eq!(pm1_control(&pm) & 1, 1);
        apm.write(1, &[0x5a]);
        let mut status = [0u8];
        apm.read(1, &mut status);
        assert_eq!(status[0], 0x5a);
        apm.write(0, &[0x42]);
        assert_eq!(pm1_control(&pm) & 1, 1, "other commands leave it");
        apm.write(0, &[ACPI_DISABLE]);
        assert_eq!(pm1_control(&pm) & 1, 0);
        let mut control = [0u8];
        apm.read(0, &mut control);
        assert_eq!(control[0], ACPI_DISABLE);
    }
}

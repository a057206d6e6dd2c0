//! The virtio-mmio version 2 transport (virtio 1.2 §4.2): the 0x200-byte
//! register window of one device, its status state machine, feature
//! negotiation and per-queue configuration.
//!
//! The one idea: the shell hands every trapped access here as
//! (offset, size, value) and looks at [`VirtioMmio::irq_level`] afterwards;
//! everything a guest can write is checked here, and a device only ever
//! runs once the driver has set DRIVER_OK and while no error is latched.
//! Errors latch DEVICE_NEEDS_RESET (§2.1.2) until the driver writes 0 to
//! Status. Control registers take only 32-bit aligned accesses (§4.2.2.2
//! requires them of the driver; anything else is ignored and reads 0), the
//! configuration space at 0x100 takes 8/16/32/64-bit accesses as Linux's
//! `vm_get`/`vm_set` issue them.

use super::queue::Queue;
use super::{feature, Device, DeviceError};
use crate::guest_mem::GuestMemory;
use crate::persist::{PersistError, QueueState, TransportState};

/// The most queues a device here has (net and console have two).
pub const MAX_QUEUES: usize = 2;
/// The size of one device's register window.
pub const WINDOW_SIZE: u64 = 0x200;
/// "virt", little-endian (§4.2.2).
pub const MAGIC: u32 = 0x7472_6976;
/// The modern virtio-mmio layout.
pub const VERSION: u32 = 2;
/// VendorID: any value will do (Linux only reports it); "TSRA".
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"TSRA");

/// Register offsets (§4.2.2, table "MMIO Device Register Layout").
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const QUEUE_RESET: u64 = 0x0c0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (§2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
    /// The bits a driver may set.
    pub const DRIVER_BITS: u8 = ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | FAILED;
}

/// InterruptStatus bits (§4.2.2).
pub mod interrupt {
    pub const USED_BUFFER: u32 = 1;
    pub const CONFIG_CHANGE: u32 = 2;
}

/// Ring features the queue code implements, offered by every device.
const RING_FEATURES: u64 =
    feature::VERSION_1 | feature::RING_INDIRECT_DESC | feature::RING_EVENT_IDX;

/// One virtio-mmio device: registers, queues and the device behind them.
pub struct VirtioMmio<D: Device> {
    device: D,
    status: u8,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The driver set a bit in a feature word above 63: never offered.
    driver_features_beyond_64: bool,
    negotiated: u64,
    queue_sel: u32,
    queues: [Queue; MAX_QUEUES],
    interrupt_status: u32,
    last_error: Option<DeviceError>,
}

impl<D: Device> VirtioMmio<D> {
    pub fn new(device: D) -> Self {
        let sizes = device.queue_max_sizes();
        let queues = core::array::from_fn(|i| Queue::new(sizes.get(i).copied().unwrap_or(0)));
        VirtioMmio {
            device,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_beyond_64: false,
            negotiated: 0,
            queue_sel: 0,
            queues,
            interrupt_status: 0,
            last_error: None,
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The features offered to the driver.
    pub fn offered_features(&self) -> u64 {
        (self.device.device_features() & feature::DEVICE_SPECIFIC) | RING_FEATURES
    }

    /// The features the driver accepted, once FEATURES_OK was accepted.
    pub fn negotiated_features(&self) -> u64 {
        self.negotiated
    }

    pub fn status(&self) -> u8 {
        self.status
    }

    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// The level of the device's interrupt line: high while any
    /// InterruptStatus bit is unacknowledged (§4.2.3.4).
    pub fn irq_level(&self) -> bool {
        self.interrupt_status != 0
    }

    /// The most recent error that latched DEVICE_NEEDS_RESET, for logs.
    pub fn last_error(&self) -> Option<DeviceError> {
        self.last_error
    }

    /// Whether the device may consume buffers: DRIVER_OK set (§2.1.2) and
    /// neither DEVICE_NEEDS_RESET nor FAILED.
    pub fn is_live(&self) -> bool {
        self.status & status::DRIVER_OK != 0
            && self.status & (status::DEVICE_NEEDS_RESET | status::FAILED) == 0
    }

    fn queue_count(&self) -> usize {
        self.device.queue_max_sizes().len().min(MAX_QUEUES)
    }

    fn selected_index(&self) -> Option<usize> {
        let count = self.queue_count();
        usize::try_from(self.queue_sel).ok().filter(|&i| i < count)
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        let index = self.selected_index()?;
        self.queues.get_mut(index)
    }

    fn selected_queue_ref(&self) -> Option<&Queue> {
        self.queues.get(self.selected_index()?)
    }

    /// A guest read of `size` bytes at `offset` in the window. Reads touch
    /// no guest memory; `_mem` keeps the signature symmetric with `write`.
    pub fn read(&self, offset: u64, size: u8, _mem: &dyn GuestMemory) -> u64 {
        let size = usize::from(size);
        if offset >= reg::CONFIG {
            return self.read_config(offset - reg::CONFIG, size);
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return 0;
        }
        let value: u32 = match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let offered = self.offered_features();
                match self.device_features_sel {
                    0 => offered as u32,
                    1 => (offered >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => self
                .selected_queue_ref()
                .map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self
                .selected_queue_ref()
                .map_or(0, |q| u32::from(q.is_ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => u32::from(self.status),
            // No shared memory regions: length -1 and base all-ones (§4.2.2).
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            // The configuration never changes under the driver.
            reg::CONFIG_GENERATION => 0,
            // Write-only registers, QueueReset (RING_RESET is not offered)
            // and unknown offsets.
            _ => 0,
        };
        u64::from(value)
    }

    fn read_config(&self, offset: u64, size: usize) -> u64 {
        let mut bytes = [0u8; 8];
        let in_window = offset
            .checked_add(size as u64)
            .is_some_and(|end| end <= WINDOW_SIZE - reg::CONFIG);
        if let (Some(buf), true) = (bytes.get_mut(..size), in_window) {
            if matches!(size, 1 | 2 | 4 | 8) {
                self.device.read_config(offset, buf);
            }
        }
        u64::from_le_bytes(bytes)
    }

    /// A guest write of `size` bytes of `value` at `offset` in the window.
    pub fn write(&mut self, offset: u64, size: u8, value: u64, mem: &mut dyn GuestMemory) {
        let size = usize::from(size);
        if offset >= reg::CONFIG {
            self.write_config(offset - reg::CONFIG, size, value);
            return;
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let value = value as u32;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => self.write_queue_num(value),
            reg::QUEUE_READY => self.write_queue_ready(value, mem),
            reg::QUEUE_NOTIFY => self.notify(value, mem),
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => self.write_status(value, mem),
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_address(offset, value),
            // Read-only registers, SHMSel, QueueReset and unknown offsets.
            _ => {}
        }
    }

    fn write_config(&mut self, offset: u64, size: usize, value: u64) {
        let bytes = value.to_le_bytes();
        let in_window = offset
            .checked_add(size as u64)
            .is_some_and(|end| end <= WINDOW_SIZE - reg::CONFIG);
        if let (Some(data), true) = (bytes.get(..size), in_window) {
            if matches!(size, 1 | 2 | 4 | 8) {
                self.device.write_config(offset, data);
            }
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        // §2.2.1: features are fixed once FEATURES_OK is set.
        if self.status & status::FEATURES_OK != 0 {
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            _ => self.driver_features_beyond_64 |= value != 0,
        }
    }

    fn write_queue_num(&mut self, value: u32) {
        let Some(queue) = self.selected_queue() else {
            return;
        };
        // §4.2.2.2: QueueNum is not touched while QueueReady is set.
        if queue.is_ready() {
            return;
        }
        // The driver MUST write a size no larger than QueueNumMax
        // (§4.2.2.2) and a split ring's size is a power of two (§2.7). The
        // spec leaves the device's reaction open; a ring whose size the
        // device and driver disagree on cannot work, so this is the error
        // state "that a reset is needed" of §2.1.2: the size is refused and
        // DEVICE_NEEDS_RESET latched.
        if let Err(e) = queue.set_size(value) {
            self.needs_reset(e.into());
        }
    }

    fn write_queue_ready(&mut self, value: u32, mem: &dyn GuestMemory) {
        let negotiated = self.negotiated;
        let Some(queue) = self.selected_queue() else {
            return;
        };
        match value {
            0 => queue.disable(),
            1 if !queue.is_ready() => {
                queue.set_ring_features(
                    negotiated & feature::RING_EVENT_IDX != 0,
                    negotiated & feature::RING_INDIRECT_DESC != 0,
                );
                // Rings the device cannot use (misaligned, outside RAM) are
                // the same kind of error as a bad size.
                if let Err(e) = queue.enable(mem) {
                    self.needs_reset(e.into());
                }
            }
            _ => {}
        }
    }

    fn write_queue_address(&mut self, offset: u64, value: u32) {
        let Some(queue) = self.selected_queue() else {
            return;
        };
        if queue.is_ready() {
            return;
        }
        let set = |old: u64| -> u64 {
            if offset.is_multiple_of(8) {
                (old & !0xffff_ffff) | u64::from(value)
            } else {
                (old & 0xffff_ffff) | (u64::from(value) << 32)
            }
        };
        match offset & !4 {
            reg::QUEUE_DESC_LOW => queue.set_desc_table(set(queue.desc_table())),
            reg::QUEUE_DRIVER_LOW => queue.set_avail_ring(set(queue.avail_ring())),
            _ => queue.set_used_ring(set(queue.used_ring())),
        }
    }

    fn write_status(&mut self, value: u32, mem: &mut dyn GuestMemory) {
        if value == 0 {
            self.reset();
            return;
        }
        // Bits above the eight defined ones mean nothing; ignore the write.
        let Ok(requested) = u8::try_from(value) else {
            return;
        };
        let old = self.status;
        let requested = requested & status::DRIVER_BITS;
        // §2.1.1: the driver MUST NOT clear a status bit.
        if old & status::DRIVER_BITS & !requested != 0 {
            return;
        }
        let mut new = requested | (old & status::DEVICE_NEEDS_RESET);
        let added = new & !old;
        // §2.2.2 / §3.1.1: the device refuses FEATURES_OK for a feature set
        // it cannot accept, and §4.2.3.1 / Linux's vm_finalize_features:
        // a version 2 device needs VIRTIO_F_VERSION_1.
        if added & status::FEATURES_OK != 0 && !self.accept_features(new) {
            new &= !status::FEATURES_OK;
        }
        if added & status::DRIVER_OK != 0 && new & status::FEATURES_OK == 0 {
            new &= !status::DRIVER_OK;
        }
        self.status = new;
        if new & !old & status::DRIVER_OK != 0 {
            self.start(mem);
        }
    }

    fn accept_features(&mut self, new_status: u8) -> bool {
        let introduced = status::ACKNOWLEDGE | status::DRIVER;
        let ok = new_status & introduced == introduced
            && !self.driver_features_beyond_64
            && self.driver_features & !self.offered_features() == 0
            && self.driver_features & feature::VERSION_1 != 0;
        if ok {
            self.negotiated = self.driver_features;
        }
        ok
    }

    /// DRIVER_OK: the ring features now apply to every queue, and buffers
    /// made available before (whose notifications were ignored) are served.
    fn start(&mut self, mem: &mut dyn GuestMemory) {
        let event_idx = self.negotiated & feature::RING_EVENT_IDX != 0;
        let indirect = self.negotiated & feature::RING_INDIRECT_DESC != 0;
        for q in &mut self.queues {
            q.set_ring_features(event_idx, indirect);
        }
        for index in 0..self.queue_count() {
            self.notify(index as u32, mem);
        }
    }

    /// QueueNotify: without VIRTIO_F_NOTIFICATION_DATA the value is the
    /// queue index (§4.2.3.3). Ignored before DRIVER_OK (§2.1.2), after an
    /// error, and for queues that do not exist or are not ready.
    fn notify(&mut self, value: u32, mem: &mut dyn GuestMemory) {
        let count = self.queue_count();
        let Some(index) = u16::try_from(value)
            .ok()
            .filter(|&i| usize::from(i) < count)
        else {
            return;
        };
        if !self
            .queues
            .get(usize::from(index))
            .is_some_and(Queue::is_ready)
        {
            return;
        }
        self.run(mem, |device, queues, mem| device.notify(index, queues, mem));
    }

    /// Run device work that may consume buffers (a notification, or the
    /// shell delivering input), then raise the used-buffer interrupt if a
    /// queue asks for it. Nothing runs unless [`is_live`](Self::is_live);
    /// an error latches DEVICE_NEEDS_RESET. `None` when it did not run or
    /// failed.
    pub fn run<R>(
        &mut self,
        mem: &mut dyn GuestMemory,
        work: impl FnOnce(&mut D, &mut [Queue], &mut dyn GuestMemory) -> Result<R, DeviceError>,
    ) -> Option<R> {
        if !self.is_live() {
            return None;
        }
        let count = self.queue_count();
        let queues = self.queues.get_mut(..count).unwrap_or(&mut []);
        let result = work(&mut self.device, queues, mem);
        // Chains completed before a failure are still the driver's.
        let mut signal_error = None;
        for q in self.queues.iter_mut().take(count) {
            match q.needs_notification(mem) {
                Ok(true) => self.interrupt_status |= interrupt::USED_BUFFER,
                Ok(false) => {}
                Err(e) => signal_error = Some(DeviceError::Queue(e)),
            }
        }
        match (result, signal_error) {
            (Ok(r), None) => Some(r),
            (Err(e), _) | (Ok(_), Some(e)) => {
                self.needs_reset(e);
                None
            }
        }
    }

    /// Latch DEVICE_NEEDS_RESET; after DRIVER_OK the driver also gets a
    /// configuration change notification (§2.1.2).
    fn needs_reset(&mut self, error: DeviceError) {
        self.last_error = Some(error);
        self.status |= status::DEVICE_NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt_status |= interrupt::CONFIG_CHANGE;
        }
    }

    /// The registers a driver configured, for the persistent state region
    /// (`crate::persist`).
    pub fn snapshot(&self) -> TransportState {
        let mut queues = [QueueState::default(); MAX_QUEUES];
        for (d, q) in queues.iter_mut().zip(self.queues.iter()) {
            *d = q.snapshot();
        }
        TransportState {
            device_id: self.device.device_id(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            driver_features_beyond_64: self.driver_features_beyond_64,
            negotiated: self.negotiated,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt_status,
            queues,
        }
    }

    /// Take over this device from a previous device-model generation: its
    /// saved registers (`st`, untrusted) are checked as the driver's own
    /// writes would be (the device type, status bits a driver or an error
    /// can set, features this device offers, queues `Queue::restore`
    /// accepts) and only then applied; on an error nothing changes. A live
    /// device then serves every chain the driver made available and the
    /// device had not completed (its notification may have died with the
    /// old generation), and raises a used-buffer interrupt, which costs a
    /// driver at most a look at its rings.
    pub fn restore(
        &mut self,
        st: &TransportState,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), PersistError> {
        let refuse = PersistError::Refused;
        if st.device_id != self.device.device_id() {
            return Err(PersistError::DevicesDiffer);
        }
        if st.status & !(status::DRIVER_BITS | status::DEVICE_NEEDS_RESET) != 0 {
            return Err(refuse("status"));
        }
        if st.interrupt_status & !(interrupt::USED_BUFFER | interrupt::CONFIG_CHANGE) != 0 {
            return Err(refuse("interrupt status"));
        }
        let features_ok = st.status & status::FEATURES_OK != 0;
        let accepted = st.negotiated & !self.offered_features() == 0
            && st.negotiated & feature::VERSION_1 != 0
            && st.negotiated == st.driver_features
            && !st.driver_features_beyond_64;
        if features_ok && !accepted || !features_ok && st.negotiated != 0 {
            return Err(refuse("features"));
        }
        if st.status & status::DRIVER_OK != 0 && !features_ok {
            return Err(refuse("status"));
        }
        let mut queues = self.queues.clone();
        let count = self.queue_count();
        for (i, (q, saved)) in queues.iter_mut().zip(st.queues.iter()).enumerate() {
            if i >= count {
                if *saved != QueueState::default() && saved.ready {
                    return Err(refuse("queue"));
                }
                continue;
            }
            q.restore(saved, mem).map_err(|_| refuse("queue"))?;
            q.set_ring_features(
                st.negotiated & feature::RING_EVENT_IDX != 0,
                st.negotiated & feature::RING_INDIRECT_DESC != 0,
            );
        }
        // Act.
        self.status = st.status;
        self.device_features_sel = st.device_features_sel;
        self.driver_features_sel = st.driver_features_sel;
        self.driver_features = st.driver_features;
        self.driver_features_beyond_64 = st.driver_features_beyond_64;
        self.negotiated = st.negotiated;
        self.queue_sel = st.queue_sel;
        self.interrupt_status = st.interrupt_status;
        self.queues = queues;
        self.last_error = None;
        if self.is_live() {
            self.interrupt_status |= interrupt::USED_BUFFER;
            for index in 0..count {
                self.notify(index as u32, mem);
            }
        }
        Ok(())
    }

    /// Status written 0 (§4.2.2.1: InterruptStatus and every QueueReady
    /// cleared).
    fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_beyond_64 = false;
        self.negotiated = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
    }
}

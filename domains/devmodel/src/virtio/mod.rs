//! virtio-mmio devices (to be written).

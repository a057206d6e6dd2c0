//! The emulated PL011 UART (to be written).

//! The system description: parser, validation and guest device-tree
//! generation, shared by the kernel's dom0less builder, domB and xtask.
//!
//! The one idea: a system description is read and checked by exactly one
//! piece of code, wherever it runs. The kernel (building every domain
//! itself, as Xen's dom0less does), the deprivileged boot domain (building
//! them through control hypercalls, as Xen's hyperlaunch does) and the host
//! tools (refusing a bad image before it is packed) all call
//! [`config::parse_system`] and [`guest_dt::build_guest_dt_with`], so what
//! the build accepts is what boots. Nothing here allocates or panics on bad
//! input, and nothing needs the kernel: a service domain links this crate,
//! not `tessera-kernel`.
//!
//! - [`dtb`]: checked reading of untrusted device-tree blobs;
//! - [`config`]: the validated `SystemConfig` (Xen's dom0less bindings
//!   plus Tessera's extensions);
//! - [`fdt_writer`]: an allocation-free FDT writer;
//! - [`guest_dt`]: the device tree each domain receives in x0.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod config;
pub mod dtb;
pub mod fdt_writer;
pub mod guest_dt;

//! Host tests for the virtual GICv3: a Linux-style bring-up, SGIs, PPIs,
//! SPI routing, the list-register loan, and a random access sequence that
//! must never panic.

use super::*;
use tessera_ipc::platform::{GICD_BASE, GICR_BASE, GICR_STRIDE, VTIMER_INTID};

const SGI_BASE: u64 = 0x1_0000;
const DIST: Frame = Frame::Dist;

fn rd(vcpu: usize) -> Frame {
    Frame::Redist { vcpu }
}

fn r32(g: &mut Vgic, frame: Frame, off: u64) -> u32 {
    g.mmio_read(frame, off, 4).expect("read") as u32
}

fn w32(g: &mut Vgic, frame: Frame, off: u64, v: u32) -> u32 {
    g.mmio_write(frame, off, 4, u64::from(v)).expect("write")
}

/// What drivers/irqchip/irq-gic-v3.c does at boot, in order, for every CPU.
fn linux_boot(g: &mut Vgic) {
    // gic_validate_dist_version
    assert_eq!(r32(g, DIST, 0xFFE8) & 0xF0, 0x30);
    // gic_init_bases
    let typer = r32(g, DIST, 0x4);
    let lines = ((typer & 0x1F) + 1) * 32;
    assert_eq!(lines, NR_INTIDS);
    assert_eq!(typer & (1 << 17), 0, "no LPIs");
    assert_eq!(r32(g, DIST, 0xC), 0, "GICD_TYPER2");
    let _iidr = r32(g, DIST, 0x8);
    // gic_dist_init
    w32(g, DIST, 0x0, 0);
    assert_eq!(r32(g, DIST, 0x0) & (1 << 31), 0, "RWP");
    for i in (32..lines).step_by(32) {
        w32(g, DIST, 0x80 + u64::from(i / 8), !0);
    }
    for i in (32..lines).step_by(16) {
        w32(g, DIST, 0xC00 + u64::from(i / 4), 0);
    }
    for i in (32..lines).step_by(4) {
        w32(g, DIST, 0x400 + u64::from(i), 0xA0A0_A0A0);
    }
    for i in (32..lines).step_by(32) {
        w32(g, DIST, 0x380 + u64::from(i / 8), !0);
        w32(g, DIST, 0x180 + u64::from(i / 8), !0);
    }
    // ARE_NS | EnableGrp1A | EnableGrp1
    w32(g, DIST, 0x0, 0x13);
    assert_eq!(r32(g, DIST, 0x0) & (1 << 31), 0, "RWP");
    for i in 32..u64::from(lines) {
        g.mmio_write(DIST, 0x6000 + i * 8, 8, 0).expect("irouter");
    }
    for cpu in 0..g.nr_vcpus() {
        // gic_iterate_rdists / __gic_populate_rdist
        let mut ipa = GICR_BASE;
        let frame = loop {
            let (frame, off) = g.decode(ipa).expect("redistributor");
            assert_eq!(off, 0);
            assert_eq!(r32(g, frame, 0xFFE8) & 0xF0, 0x30);
            let typer = g.mmio_read(frame, 0x8, 8).expect("GICR_TYPER");
            if typer >> 32 == cpu as u64 {
                break frame;
            }
            assert_eq!(typer & (1 << 4), 0, "ran past Last");
            ipa += GICR_STRIDE;
        };
        assert_eq!(frame, rd(cpu));
        // gic_enable_redist(true)
        let waker = r32(g, frame, 0x14);
        w32(g, frame, 0x14, waker & !(1 << 1));
        assert_eq!(r32(g, frame, 0x14) & (1 << 2), 0, "ChildrenAsleep");
        // gic_cpu_init / gic_cpu_config
        w32(g, frame, SGI_BASE + 0x80, !0);
        w32(g, frame, SGI_BASE + 0x380, !0);
        w32(g, frame, SGI_BASE + 0x180, !0);
        for i in (0..32).step_by(4) {
            w32(g, frame, SGI_BASE + 0x400 + i, 0xA0A0_A0A0);
        }
        assert_eq!(r32(g, frame, 0x0) & (1 << 3), 0, "GICR_CTLR.RWP");
        // IPIs are enabled as they are requested (enable_percpu_irq).
        w32(g, frame, SGI_BASE + 0x100, 0xFFFF);
    }
}

#[test]
fn linux_boot_leaves_a_consistent_gic() {
    let mut g = Vgic::new(4);
    linux_boot(&mut g);
    // ARE and DS read as one, the group enables as written.
    assert_eq!(r32(&mut g, DIST, 0x0), 0x53);
    assert_eq!(r32(&mut g, DIST, 0x4), 0x2 | (9 << 19));
    assert_eq!(r32(&mut g, DIST, 0x80 + 4), !0);
    assert_eq!(r32(&mut g, DIST, 0x400 + 40), 0xA0A0_A0A0);
    assert_eq!(r32(&mut g, DIST, 0xC08), 0);
    assert_eq!(g.mmio_read(DIST, 0x6000 + 95 * 8, 8), Ok(0));
    for v in 0..4 {
        assert_eq!(r32(&mut g, rd(v), SGI_BASE + 0x100), 0xFFFF);
        assert!(!g.has_deliverable(v));
    }
    // A device SPI routed to CPU 0 by default.
    assert_eq!(g.mmio_write(DIST, 0x100 + 4, 4, 1 << 1), Ok(0));
    assert_eq!(g.inject(3, 33), Some(0));
    assert_eq!(g.next_deliverable(0), Some((33, 0xA0)));
}

#[test]
fn gicr_typer_describes_each_vcpu_and_last_marks_the_end() {
    for n in 1..=MAX_VCPUS_PER_DOMAIN {
        let mut g = Vgic::new(n);
        for v in 0..n {
            let typer = g.mmio_read(rd(v), 0x8, 8).unwrap();
            assert_eq!(typer >> 32, v as u64, "Affinity_Value is Aff0 = n");
            assert_eq!((typer >> 8) & 0xFFFF, v as u64, "Processor_Number");
            assert_eq!(typer & (1 << 4) != 0, v == n - 1, "Last");
            assert_eq!(typer & 0b11, 0, "no PLPIS/VLPIS");
            let lo = g.mmio_read(rd(v), 0x8, 4).unwrap();
            let hi = g.mmio_read(rd(v), 0xC, 4).unwrap();
            assert_eq!(hi << 32 | lo, typer);
        }
        assert_eq!(g.mmio_read(rd(n), 0x8, 8), Err(VgicError::BadVcpu));
    }
}

#[test]
fn decode_maps_frames_and_rejects_everything_else() {
    let g = Vgic::new(2);
    assert_eq!(g.decode(GICD_BASE), Some((DIST, 0)));
    assert_eq!(g.decode(GICD_BASE + 0xFFFC), Some((DIST, 0xFFFC)));
    assert_eq!(g.decode(GICD_BASE + 0x1_0000), None);
    assert_eq!(g.decode(GICD_BASE - 1), None);
    assert_eq!(g.decode(GICR_BASE), Some((rd(0), 0)));
    assert_eq!(
        g.decode(GICR_BASE + SGI_BASE + 0x100),
        Some((rd(0), SGI_BASE + 0x100))
    );
    assert_eq!(
        g.decode(GICR_BASE + GICR_STRIDE + 0x14),
        Some((rd(1), 0x14))
    );
    assert_eq!(g.decode(GICR_BASE + 2 * GICR_STRIDE), None, "no third vCPU");
    assert_eq!(g.decode(0), None);
    assert_eq!(g.decode(u64::MAX), None);
    assert_eq!(
        g.decode_ipa(crate::addr::Ipa(GICR_BASE + 0x14)),
        Some((rd(0), 0x14))
    );
}

#[test]
fn waker_handshake() {
    let mut g = Vgic::new(2);
    // Reset: asleep, children asleep.
    assert_eq!(r32(&mut g, rd(1), 0x14), 0b110);
    w32(&mut g, rd(1), 0x14, 0);
    assert_eq!(r32(&mut g, rd(1), 0x14), 0);
    // ChildrenAsleep is read-only: writing it alone changes nothing.
    w32(&mut g, rd(1), 0x14, 1 << 2);
    assert_eq!(r32(&mut g, rd(1), 0x14), 0);
    w32(&mut g, rd(1), 0x14, 1 << 1);
    assert_eq!(r32(&mut g, rd(1), 0x14), 0b110);
    assert_eq!(r32(&mut g, rd(0), 0x14), 0b110, "other vCPUs untouched");
}

fn enable_all(g: &mut Vgic) {
    w32(g, DIST, 0x0, 0x2);
    for v in 0..g.nr_vcpus() {
        w32(g, rd(v), SGI_BASE + 0x100, !0);
    }
    for w in 1..=SPI_WORDS as u64 {
        w32(g, DIST, 0x100 + 4 * w, !0);
    }
}

#[test]
fn sgi1r_target_list() {
    let mut g = Vgic::new(4);
    enable_all(&mut g);
    // INTID 3 to Aff0 1 and 2 of cluster 0.0.0.
    let mask = g.write_sgi1r(0, 3 << 24 | 0b0110);
    assert_eq!(mask, 0b0110);
    assert_eq!(g.next_deliverable(1), Some((3, 0)));
    assert_eq!(g.next_deliverable(2), Some((3, 0)));
    assert!(!g.has_deliverable(0));
    assert!(!g.has_deliverable(3));
    assert_eq!(r32(&mut g, rd(1), SGI_BASE + 0x200), 1 << 3);
    // A target list naming absent vCPUs hits nobody.
    assert_eq!(g.write_sgi1r(0, 1 << 24 | 0xFF00), 0);
    // Another cluster (Aff1 = 1), another range (RS = 1) or Aff3 != 0: nobody.
    assert_eq!(g.write_sgi1r(0, 1 << 16 | 0b1), 0);
    assert_eq!(g.write_sgi1r(0, 1 << 44 | 0b1), 0);
    assert_eq!(g.write_sgi1r(0, 1 << 48 | 0b1), 0);
    // A sender that does not exist sends nothing.
    assert_eq!(g.write_sgi1r(4, 0b1), 0);
    assert_eq!(g.write_sgi1r(usize::MAX, 1 << 40), 0);
}

#[test]
fn sgi1r_broadcast_excludes_sender() {
    let mut g = Vgic::new(4);
    enable_all(&mut g);
    let mask = g.write_sgi1r(2, 1 << 40 | 5 << 24 | 0b1);
    assert_eq!(mask, 0b1011);
    for v in [0, 1, 3] {
        assert_eq!(g.next_deliverable(v), Some((5, 0)));
    }
    assert!(!g.has_deliverable(2));
}

#[test]
fn sgi_groups_gate_sgi0r_and_sgi1r() {
    let mut g = Vgic::new(2);
    w32(&mut g, DIST, 0x0, 0x3);
    w32(&mut g, rd(1), SGI_BASE + 0x100, 0xFFFF);
    // Make SGI 7 Group 0 on vCPU 1.
    w32(&mut g, rd(1), SGI_BASE + 0x80, !(1 << 7));
    assert_eq!(g.write_sgi1r(0, 7 << 24 | 0b10), 0);
    assert_eq!(g.write_sgi0r(0, 7 << 24 | 0b10), 0b10);
    let (intid, lr) = g.next_lr_value(1).unwrap();
    assert_eq!(intid, 7);
    assert_eq!(lr & (1 << 60), 0, "Group 0 LR");
    assert!(!g.is_group1(1, 7));
}

#[test]
fn ppi27_injection_needs_enable_and_group() {
    let mut g = Vgic::new(2);
    assert_eq!(g.inject(1, VTIMER_INTID), None, "disabled");
    assert!(!g.has_deliverable(1));
    assert_eq!(r32(&mut g, rd(1), SGI_BASE + 0x200), 1 << 27, "but pending");
    assert_eq!(
        w32(&mut g, rd(1), SGI_BASE + 0x100, 1 << 27),
        0,
        "group still off"
    );
    assert_eq!(w32(&mut g, DIST, 0x0, 0x2), 0b10, "vCPU 1 now has it");
    assert_eq!(g.next_deliverable(1), Some((VTIMER_INTID, 0)));
    assert!(!g.has_deliverable(0), "PPIs are private");
    assert_eq!(g.inject(0, VTIMER_INTID), None, "vCPU 0 has it disabled");
    w32(&mut g, rd(0), SGI_BASE + 0x100, 1 << 27);
    assert_eq!(g.inject(0, VTIMER_INTID), Some(0));
    assert_eq!(g.inject(2, VTIMER_INTID), None, "no vCPU 2");
    assert_eq!(g.inject(0, NR_INTIDS), None, "no such INTID");
    assert_eq!(g.inject(0, u32::MAX), None);
}

#[test]
fn priority_orders_delivery_and_ties_go_to_lowest_intid() {
    let mut g = Vgic::new(1);
    enable_all(&mut g);
    g.mmio_write(DIST, 0x400 + 40, 1, 0x80).unwrap();
    g.mmio_write(DIST, 0x400 + 50, 1, 0x40).unwrap();
    g.mmio_write(DIST, 0x400 + 60, 1, 0x40).unwrap();
    g.mmio_write(rd(0), SGI_BASE + 0x400 + 27, 1, 0x47).unwrap();
    for intid in [60, 40, 50, 27] {
        g.inject(0, intid);
    }
    // 0x47 is stored as 0x40 (five priority bits), so it ties with 50 and 60
    // and wins as the lowest INTID.
    assert_eq!(g.mmio_read(rd(0), SGI_BASE + 0x400 + 27, 1), Ok(0x40));
    let mut order = [0; 4];
    for slot in &mut order {
        let (intid, _) = g.next_deliverable(0).unwrap();
        g.mark_in_lr(0, intid);
        *slot = intid;
    }
    assert_eq!(order, [27, 50, 60, 40]);
    assert_eq!(g.next_deliverable(0), None);
    // Byte and word views of IPRIORITYR agree.
    assert_eq!(r32(&mut g, DIST, 0x400 + 48), 0x0040_0000);
}

#[test]
fn lr_value_bit_layout_round_trips() {
    let lr = Vgic::lr_value(27, 0xA0);
    assert_eq!(lr, 0b01 << 62 | 1 << 60 | 0xA0 << 48 | 27);
    assert!(!Vgic::lr_is_hw(lr));
    assert_eq!(Vgic::lr_decode(lr), (27, LrState::Pending));
    assert_eq!(Vgic::lr_decode(0), (0, LrState::Invalid));
    assert_eq!(Vgic::lr_decode(0b10 << 62 | 95), (95, LrState::Active));
    assert_eq!(
        Vgic::lr_decode(0b11 << 62 | 1 << 61 | 5),
        (5, LrState::PendingActive)
    );
    for intid in [0, 15, 31, 32, 95, 1019] {
        for prio in [0u8, 0x08, 0xF8, 0xFF] {
            let lr = Vgic::lr_value(intid, prio);
            assert_eq!(Vgic::lr_decode(lr), (intid, LrState::Pending));
            assert_eq!((lr >> 48) as u8, prio);
        }
    }
}

#[test]
fn in_flight_retrigger_is_remembered() {
    let mut g = Vgic::new(1);
    enable_all(&mut g);
    assert_eq!(g.inject(0, 40), Some(0));
    g.mark_in_lr(0, 40);
    assert!(!g.has_deliverable(0), "never in two LRs");
    assert_eq!(
        r32(&mut g, DIST, 0x204) & (1 << 8),
        1 << 8,
        "ISPENDR shows the LR"
    );
    g.lr_sync(0, 40, LrState::Active);
    assert_eq!(r32(&mut g, DIST, 0x204) & (1 << 8), 0);
    assert_eq!(
        r32(&mut g, DIST, 0x304) & (1 << 8),
        1 << 8,
        "ISACTIVER shows the LR"
    );
    assert_eq!(g.inject(0, 40), None, "re-trigger while in flight");
    assert!(!g.has_deliverable(0));
    g.lr_retired(0, 40);
    assert_eq!(g.next_deliverable(0), Some((40, 0)));
    // Without a re-trigger, retirement leaves nothing behind.
    g.mark_in_lr(0, 40);
    g.lr_sync(0, 40, LrState::Invalid);
    assert!(!g.has_deliverable(0));
    assert_eq!(r32(&mut g, DIST, 0x304), 0);
    // Bad arguments are ignored.
    g.mark_in_lr(5, 3);
    g.lr_retired(0, u32::MAX);
    g.lr_sync(usize::MAX, 0, LrState::Pending);
}

/// The lost-tick case: the virtual timer fires again while its previous
/// copy is active in a list register. The trigger must go into that register
/// (active -> active and pending), not stay latched in the model, where only
/// a later guest exit would find it.
#[test]
fn retrigger_folds_into_an_active_lr() {
    let mut g = Vgic::new(1);
    enable_all(&mut g);
    assert_eq!(g.inject(0, 27), Some(0));
    let (intid, prio) = g.next_deliverable(0).unwrap();
    let pending = Vgic::lr_value(intid, prio);
    g.mark_in_lr(0, 27);
    // Nothing latched: nothing to fold.
    let active = lr::with_state(pending, LrState::Active);
    assert_eq!(g.fold_retrigger(0, 27, || active), None);
    // Triggered again while the guest handles it.
    assert_eq!(g.inject(0, 27), None);
    let folded = g
        .fold_retrigger(0, 27, || active)
        .expect("folded into the LR");
    assert_eq!(Vgic::lr_decode(folded), (27, LrState::PendingActive));
    assert_eq!(
        folded & !(0b11 << 62),
        active & !(0b11 << 62),
        "only the state changes"
    );
    assert_eq!(g.fold_retrigger(0, 27, || folded), None, "consumed");
    // The register now carries it: retiring leaves nothing in the model.
    g.lr_retired(0, 27);
    assert!(!g.has_deliverable(0));
    assert_eq!(r32(&mut g, rd(0), SGI_BASE + 0x200) & (1 << 27), 0);

    // A trigger that finds the register still pending merges with it.
    assert_eq!(g.inject(0, 27), Some(0));
    g.mark_in_lr(0, 27);
    assert_eq!(g.inject(0, 27), None);
    assert_eq!(g.fold_retrigger(0, 27, || pending), None);
    g.lr_retired(0, 27);
    assert!(!g.has_deliverable(0), "merged, not delivered twice");

    // A register that no longer holds the interrupt (or has retired) leaves
    // the trigger latched for `lr_retired`.
    assert_eq!(g.inject(0, 27), Some(0));
    g.mark_in_lr(0, 27);
    assert_eq!(g.inject(0, 27), None);
    assert_eq!(g.fold_retrigger(0, 27, || Vgic::lr_value(30, 0)), None);
    assert_eq!(
        g.fold_retrigger(0, 27, || lr::with_state(pending, LrState::Invalid)),
        None
    );
    g.lr_retired(0, 27);
    assert_eq!(g.next_deliverable(0), Some((27, prio)));
    // Bad arguments change nothing.
    assert_eq!(g.fold_retrigger(3, 27, || active), None);
    assert_eq!(g.fold_retrigger(0, u32::MAX, || active), None);
}

#[test]
fn enable_disable_and_kick_masks() {
    let mut g = Vgic::new(4);
    w32(&mut g, DIST, 0x0, 0x2);
    g.mmio_write(DIST, 0x6000 + 40 * 8, 8, 2).unwrap();
    assert_eq!(g.inject(0, 40), None, "disabled");
    assert_eq!(
        w32(&mut g, DIST, 0x104, 1 << 8),
        1 << 2,
        "enabling kicks vCPU 2"
    );
    assert_eq!(g.next_deliverable(2), Some((40, 0)));
    assert_eq!(r32(&mut g, DIST, 0x184), 1 << 8, "ICENABLER reads enables");
    assert_eq!(w32(&mut g, DIST, 0x184, 1 << 8), 0);
    assert!(!g.has_deliverable(2));
    assert_eq!(r32(&mut g, DIST, 0x104), 0);
    // Still pending; ICPENDR clears it.
    assert_eq!(r32(&mut g, DIST, 0x204), 1 << 8);
    w32(&mut g, DIST, 0x284, 1 << 8);
    assert_eq!(r32(&mut g, DIST, 0x204), 0);
    // ISPENDR makes it pending again and kicks the target.
    w32(&mut g, DIST, 0x104, 1 << 8);
    assert_eq!(w32(&mut g, DIST, 0x204, 1 << 8), 1 << 2);
    // Turning the group off hides everything; back on kicks again.
    assert_eq!(w32(&mut g, DIST, 0x0, 0), 0);
    assert!(!g.has_deliverable(2));
    assert_eq!(w32(&mut g, DIST, 0x0, 0x2), 1 << 2);
    // Moving it to Group 0 hides it while only Group 1 is enabled.
    w32(&mut g, DIST, 0x84, !(1 << 8));
    assert!(!g.has_deliverable(2));
    assert_eq!(w32(&mut g, DIST, 0x0, 0x3), 1 << 2);
    assert_eq!(
        g.next_lr_value(2),
        Some((40, Vgic::lr_value(40, 0) & !(1 << 60)))
    );
}

#[test]
fn active_state_blocks_delivery_until_cleared() {
    let mut g = Vgic::new(1);
    enable_all(&mut g);
    w32(&mut g, rd(0), SGI_BASE + 0x300, 1 << 20);
    assert_eq!(g.inject(0, 20), None);
    assert_eq!(r32(&mut g, rd(0), SGI_BASE + 0x380), 1 << 20);
    assert_eq!(w32(&mut g, rd(0), SGI_BASE + 0x380, 1 << 20), 1);
    assert_eq!(g.next_deliverable(0), Some((20, 0)));
}

#[test]
fn irouter_routes_spis() {
    let mut g = Vgic::new(4);
    enable_all(&mut g);
    // Low half then high half, as a 32-bit guest writes it.
    g.mmio_write(DIST, 0x6000 + 33 * 8, 4, 3).unwrap();
    g.mmio_write(DIST, 0x6000 + 33 * 8 + 4, 4, 0).unwrap();
    assert_eq!(g.mmio_read(DIST, 0x6000 + 33 * 8, 8), Ok(3));
    assert_eq!(g.inject(0, 33), Some(3));
    assert_eq!(g.next_deliverable(3), Some((33, 0)));
    assert!(!g.has_deliverable(0));
    // Re-routing moves the pending interrupt and kicks the new target.
    assert_eq!(g.mmio_write(DIST, 0x6000 + 33 * 8, 8, 1), Ok(1 << 1));
    assert!(!g.has_deliverable(3));
    // Aff3 is RES0 (A3V == 0); a route naming no vCPU delivers nowhere.
    g.mmio_write(DIST, 0x6000 + 33 * 8, 8, 0xFF_0000_0001)
        .unwrap();
    assert_eq!(g.mmio_read(DIST, 0x6000 + 33 * 8 + 4, 4), Ok(0));
    g.mmio_write(DIST, 0x6000 + 33 * 8, 8, 0x100).unwrap();
    assert_eq!(g.inject(0, 33), None);
    assert!((0..4).all(|v| !g.has_deliverable(v)));
    // IRM = 1: the lowest awake vCPU, else vCPU 0.
    g.mmio_write(DIST, 0x6000 + 33 * 8, 8, 1 << 31).unwrap();
    assert_eq!(g.next_deliverable(0), Some((33, 0)));
    assert_eq!(w32(&mut g, rd(2), 0x14, 0), 1 << 2);
    assert_eq!(g.next_deliverable(2), Some((33, 0)));
    // IROUTER for INTIDs below 32 or beyond the SPIs is RAZ/WI.
    g.mmio_write(DIST, 0x6000 + 8, 8, 5).unwrap();
    assert_eq!(g.mmio_read(DIST, 0x6000 + 8, 8), Ok(0));
    g.mmio_write(DIST, 0x6000 + 96 * 8, 8, 5).unwrap();
    assert_eq!(g.mmio_read(DIST, 0x6000 + 96 * 8, 8), Ok(0));
}

#[test]
fn icfgr_and_line_levels() {
    let mut g = Vgic::new(1);
    enable_all(&mut g);
    assert_eq!(r32(&mut g, rd(0), SGI_BASE + 0xC00), 0xAAAA_AAAA);
    w32(&mut g, rd(0), SGI_BASE + 0xC00, 0);
    assert_eq!(
        r32(&mut g, rd(0), SGI_BASE + 0xC00),
        0xAAAA_AAAA,
        "SGIs stay edge"
    );
    // PPI 27 edge (Int_config[1]), Int_config[0] is RES0.
    w32(&mut g, rd(0), SGI_BASE + 0xC04, 0b11 << 22);
    assert_eq!(r32(&mut g, rd(0), SGI_BASE + 0xC04), 0b10 << 22);
    // gic_configure_irq's read-modify-write-readback on an SPI.
    let v = r32(&mut g, DIST, 0xC08) | 0b10 << 2;
    w32(&mut g, DIST, 0xC08, v);
    assert_eq!(r32(&mut g, DIST, 0xC08), v);

    // Level-sensitive SPI 34: pending exactly while the line is high.
    w32(&mut g, DIST, 0xC08, 0);
    assert_eq!(g.set_level(0, 34, true), Some(0));
    w32(&mut g, DIST, 0x284, 1 << 2);
    assert_eq!(
        g.next_deliverable(0),
        Some((34, 0)),
        "ICPENDR cannot clear a high line"
    );
    g.mark_in_lr(0, 34);
    assert!(!g.has_deliverable(0));
    g.lr_retired(0, 34);
    assert_eq!(g.next_deliverable(0), Some((34, 0)), "still high: again");
    g.mark_in_lr(0, 34);
    assert_eq!(g.set_level(0, 34, false), None);
    g.lr_retired(0, 34);
    assert!(!g.has_deliverable(0), "line dropped before EOI");

    // Edge-triggered PPI 27 latches on a rising edge only.
    assert_eq!(g.set_level(0, 27, true), Some(0));
    g.mark_in_lr(0, 27);
    g.lr_retired(0, 27);
    assert_eq!(g.set_level(0, 27, true), None, "no new edge");
    assert!(!g.has_deliverable(0));
    g.set_level(0, 27, false);
    assert_eq!(g.set_level(0, 27, true), Some(0));
    // SGIs have no line.
    assert_eq!(g.set_level(0, 1, true), None);
}

#[test]
fn bad_accesses_are_errors() {
    let mut g = Vgic::new(2);
    for size in [0, 3, 5, 6, 7, 9, 16, 255] {
        assert_eq!(g.mmio_read(DIST, 0, size), Err(VgicError::BadSize));
        assert_eq!(g.mmio_write(DIST, 0, size, 0), Err(VgicError::BadSize));
    }
    assert_eq!(g.mmio_read(DIST, 0x2, 4), Err(VgicError::Misaligned));
    assert_eq!(g.mmio_read(DIST, 0x6004, 8), Err(VgicError::Misaligned));
    assert_eq!(g.mmio_read(DIST, 0x1_0000, 4), Err(VgicError::BadOffset));
    assert_eq!(
        g.mmio_read(DIST, u64::MAX - 3, 4),
        Err(VgicError::BadOffset)
    );
    assert_eq!(g.mmio_read(rd(0), 0x2_0000, 4), Err(VgicError::BadOffset));
    assert_eq!(g.mmio_write(rd(2), 0, 4, 0), Err(VgicError::BadVcpu));
    assert_eq!(g.mmio_read(rd(usize::MAX), 0, 4), Err(VgicError::BadVcpu));
    // Widths the register does not have.
    assert_eq!(g.mmio_read(DIST, 0x0, 1), Err(VgicError::BadSize));
    assert_eq!(g.mmio_read(DIST, 0x0, 8), Err(VgicError::BadSize));
    assert_eq!(g.mmio_read(DIST, 0x100, 8), Err(VgicError::BadSize));
    assert_eq!(g.mmio_read(DIST, 0x400, 2), Err(VgicError::BadSize));
    assert_eq!(g.mmio_read(DIST, 0x400, 8), Err(VgicError::BadSize));
    assert_eq!(g.mmio_read(DIST, 0x6100, 2), Err(VgicError::BadSize));
    assert_eq!(g.mmio_read(rd(0), 0x8, 1), Err(VgicError::BadSize));
    assert_eq!(g.mmio_write(rd(0), 0x14, 2, 0), Err(VgicError::BadSize));
    // A refused write changes nothing.
    assert_eq!(g.mmio_write(DIST, 0x0, 8, 0x3), Err(VgicError::BadSize));
    assert_eq!(r32(&mut g, DIST, 0x0), 0x50);
}

#[test]
fn reserved_offsets_are_raz_wi() {
    let mut g = Vgic::new(2);
    let dist = [
        0x0C,
        0x10,
        0x40,
        0x48,
        0x7C,
        0x80,
        0x100,
        0x200,
        0x300, // word 0 (SGI/PPI) is in the redistributor
        0x100 + 4 * (1 + SPI_WORDS as u64),
        0x400,
        0x41C,
        0x400 + u64::from(NR_INTIDS),
        0x800,
        0x860,
        0xC00,
        0xC04,
        0xD04,
        0xE08,
        0xF00,
        0xF10,
        0xF20,
        0x1000,
        0x5FFC,
        0xFFCC,
        0xFFD4,
    ];
    for off in dist {
        assert_eq!(
            g.mmio_write(DIST, off, 4, u64::from(u32::MAX)),
            Ok(0),
            "{off:#x}"
        );
        assert_eq!(g.mmio_read(DIST, off, 4), Ok(0), "{off:#x}");
    }
    let redist = [
        0x0,
        0x10,
        0x40,
        0x70,
        0x78,
        0xA0,
        0xB0,
        0xC0,
        0x1000,
        0xFFCC,
        SGI_BASE + 0x84,
        SGI_BASE + 0x104,
        SGI_BASE + 0x420,
        SGI_BASE + 0xC08,
        SGI_BASE + 0xD00,
        SGI_BASE + 0xE00,
        SGI_BASE + 0xFFFC,
    ];
    for off in redist {
        assert_eq!(
            g.mmio_write(rd(1), off, 4, u64::from(u32::MAX)),
            Ok(0),
            "{off:#x}"
        );
        assert_eq!(g.mmio_read(rd(1), off, 4), Ok(0), "{off:#x}");
    }
    // Odd-sized probes of reserved space are fine too.
    assert_eq!(g.mmio_read(DIST, 0x2000, 8), Ok(0));
    assert_eq!(g.mmio_read(DIST, 0x2001, 1), Ok(0));
    assert_eq!(g.mmio_read(rd(0), 0x70, 8), Ok(0));
    // Read-only registers ignore writes.
    let typer = r32(&mut g, DIST, 0x4);
    w32(&mut g, DIST, 0x4, 0);
    assert_eq!(r32(&mut g, DIST, 0x4), typer);
    g.mmio_write(rd(0), 0x8, 8, 0).unwrap();
    assert_eq!(g.mmio_read(rd(0), 0x8, 8), Ok(0));
    assert_eq!(g.mmio_read(rd(1), 0x8, 8), Ok(1 << 32 | 1 << 8 | 1 << 4));
}

#[test]
fn id_registers() {
    let mut g = Vgic::new(1);
    for frame in [DIST, rd(0)] {
        assert_eq!(r32(&mut g, frame, 0xFFE8), 0x3B);
        let cidr: [u32; 4] = core::array::from_fn(|i| r32(&mut g, frame, 0xFFF0 + 4 * i as u64));
        assert_eq!(cidr, [0x0D, 0xF0, 0x05, 0xB1]);
        assert_eq!(
            r32(&mut g, frame, if frame == DIST { 0x8 } else { 0x4 }),
            0x5400_043B
        );
    }
}

#[test]
fn construction_clamps_and_validates() {
    static GIC: Vgic = Vgic::new(4);
    assert_eq!(GIC.nr_vcpus(), 4);
    assert_eq!(Vgic::new(0).nr_vcpus(), 1);
    assert_eq!(Vgic::new(usize::MAX).nr_vcpus(), MAX_VCPUS_PER_DOMAIN);
    assert_eq!(Vgic::try_new(0), Err(VgicError::BadVcpu));
    assert_eq!(
        Vgic::try_new(MAX_VCPUS_PER_DOMAIN + 1),
        Err(VgicError::BadVcpu)
    );
    assert_eq!(Vgic::try_new(3).map(|g| g.nr_vcpus()), Ok(3));
    assert!(!GIC.has_deliverable(0));
    assert!(!GIC.has_deliverable(usize::MAX));
}

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn random_access_sequences_never_panic() {
    const OFFSETS: [u64; 24] = [
        0x0, 0x4, 0x8, 0xC, 0x14, 0x80, 0x84, 0x100, 0x108, 0x180, 0x200, 0x284, 0x300, 0x38C,
        0x400, 0x45F, 0xC04, 0xC0C, 0x6100, 0x62F8, 0x62FC, 0xFFE8, 0x1_0100, 0x1_0C04,
    ];
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let nr = (rng.next() % 10) as usize;
        let mut g = Vgic::new(nr);
        let nr = g.nr_vcpus();
        let all = (1u32 << nr) - 1;
        for _ in 0..5_000 {
            let any_vcpu = (rng.next() % 8) as usize;
            let vcpu = rng.pick(&[0, 1, 2, 7, 8, 9, usize::MAX, any_vcpu]);
            let any_intid = (rng.next() % 100) as u32;
            let intid = rng.pick(&[0, 15, 27, 31, 32, 95, 96, 1023, u32::MAX, any_intid]);
            let frame = if rng.next().is_multiple_of(3) {
                DIST
            } else {
                rd(vcpu)
            };
            let offset = match rng.next() % 4 {
                0 => rng.next(),
                1 => rng.next() % 0x2_0000,
                2 => rng.pick(&OFFSETS),
                _ => rng.pick(&OFFSETS) + rng.next() % 8,
            };
            let size = rng.pick(&[0u8, 1, 2, 3, 4, 4, 4, 8, 8, 16]);
            let value = if rng.next().is_multiple_of(2) {
                rng.next()
            } else {
                u64::MAX
            };
            match rng.next() % 10 {
                0..=2 => {
                    if let Ok(mask) = g.mmio_write(frame, offset, size, value) {
                        assert_eq!(mask & !all, 0);
                    }
                }
                3 => {
                    if let Ok(v) = g.mmio_read(frame, offset, size) {
                        assert!(size == 8 || v >> (8 * u32::from(size)) == 0);
                    }
                }
                4 => {
                    let mask = g.write_sgi1r(vcpu, value);
                    assert_eq!(mask & !all, 0);
                    if value & (1 << 40) != 0 && vcpu < nr {
                        assert_eq!(mask & (1 << vcpu), 0, "sender excluded");
                    }
                }
                5 => {
                    if let Some(t) = g.inject(vcpu, intid) {
                        assert!(t < nr && g.has_deliverable(t));
                    }
                }
                6 => {
                    g.set_level(vcpu, intid, value & 1 != 0);
                }
                7 => g.mark_in_lr(vcpu, intid),
                8 => g.lr_retired(vcpu, intid),
                _ => {
                    if let Some((i, lr)) = g.next_lr_value(vcpu) {
                        assert!(i < NR_INTIDS);
                        assert_eq!(Vgic::lr_decode(lr), (i, LrState::Pending));
                        g.mark_in_lr(vcpu, i);
                        assert_ne!(g.next_deliverable(vcpu).map(|d| d.0), Some(i));
                    }
                }
            }
            for v in 0..=nr {
                assert_eq!(g.has_deliverable(v), g.next_deliverable(v).is_some());
            }
            assert!(!g.has_deliverable(nr));
        }
    }
}

//! vCPU placement: which pCPU each vCPU runs on, decided once, when its
//! domain is created (`tessera,pcpus`; docs/02, "Hyperlaunch properties").
//!
//! The one idea: a pinned domain *owns* its pCPUs. Its vCPU i runs on
//! `pins[i % pins.len()]`, and no vCPU of another domain is ever placed
//! there, so a partition pinned alone on a pCPU never waits for anyone's
//! time slice. Every other vCPU goes round robin over the pCPUs nobody owns
//! (with no pins at all, that is every pCPU: the placement of old). The
//! boot checks the whole description first ([`Placement::plan`]), so a pin
//! the board cannot honour refuses the image before any domain exists.
//!
//! A builder (domB, in hyperlaunch mode) creates the pinned domains itself,
//! later: the boot only reserves their pCPUs
//! ([`Placement::plan_for_builder`]), so the unpinned domains built before
//! them stay off, and each `CreateDomain` that carries pins is checked
//! against the board and the vCPUs already placed ([`Placement::check_pins`]);
//! a pin that cannot be honoured is an error code for the builder, not a
//! halt.

use core::fmt;

/// Most pCPUs a placement can describe (one bit each in a `u64`); the
/// system description's pins stay below this too
/// (`tessera_sysdesc::config::MAX_PCPUS`).
pub const MAX_PCPUS: usize = 64;

/// The board's pCPUs and which of them pinned domains own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pcpus: usize,
    /// Bit `p`: pCPU `p` is owned by a pinned domain (reserved at boot, or
    /// taken by a domain a builder created with pins).
    owned: u64,
    /// Bit `p`: pCPU `p` was reserved at boot for a domain of the
    /// description; it stays owned when that domain goes (its rebuild gets
    /// it back).
    reserved: u64,
    /// Per owned pCPU, the index of the domain that owns it (for messages).
    owner: [u8; MAX_PCPUS],
}

/// Why a system description's pins cannot be honoured on this board. The
/// domain numbers are indices into the description (`d<n + 1>` in logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementError {
    /// `domain` pins a vCPU to `pcpu`, which the board does not have.
    NoSuchPcpu {
        domain: usize,
        pcpu: u32,
        pcpus: usize,
    },
    /// `second` pins a vCPU to `pcpu`, which `first` already owns (the
    /// same domain twice when it lists the pCPU twice).
    PinnedTwice {
        pcpu: u32,
        first: usize,
        second: usize,
    },
    /// `domain` is not pinned, but pinned domains own every pCPU.
    NoFreePcpu { domain: usize, pcpus: usize },
}

impl PlacementError {
    /// The domain the error is about (the later one of two).
    pub fn domain(&self) -> usize {
        match *self {
            Self::NoSuchPcpu { domain, .. } | Self::NoFreePcpu { domain, .. } => domain,
            Self::PinnedTwice { second, .. } => second,
        }
    }

    /// The error as a sentence, with domains named by `name(index)`.
    pub fn named<'a, F: Fn(usize) -> &'a str>(self, name: F) -> NamedPlacementError<F> {
        NamedPlacementError { error: self, name }
    }
}

/// Why a builder's `CreateDomain` pins cannot be honoured now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// The board has no pCPU `pcpu` (it has `pcpus`).
    NoSuchPcpu { pcpu: u32, pcpus: usize },
    /// A vCPU of another domain is placed on `pcpu`.
    Taken { pcpu: u32 },
}

impl PinError {
    /// The code the builder sees: no such pCPU is `-ENXIO`, a taken one
    /// `-EBUSY`.
    pub fn errno(self) -> tessera_ipc::errno::Errno {
        match self {
            Self::NoSuchPcpu { .. } => tessera_ipc::errno::Errno::Enxio,
            Self::Taken { .. } => tessera_ipc::errno::Errno::Ebusy,
        }
    }
}

/// A [`PlacementError`] that can name its domains; see
/// [`PlacementError::named`].
pub struct NamedPlacementError<F> {
    error: PlacementError,
    name: F,
}

impl<'a, F: Fn(usize) -> &'a str> fmt::Display for NamedPlacementError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = |i: usize| DomainRef(i, (self.name)(i));
        match self.error {
            PlacementError::NoSuchPcpu {
                domain,
                pcpu,
                pcpus,
            } => {
                write!(
                    f,
                    "{}: tessera,pcpus pins a vCPU to pCPU {pcpu}, but the board has only ",
                    who(domain)
                )?;
                match pcpus {
                    0 | 1 => write!(f, "pCPU 0"),
                    n => write!(f, "pCPUs 0-{}", n - 1),
                }
            }
            PlacementError::PinnedTwice {
                pcpu,
                first,
                second,
            } if first == second => {
                write!(f, "{}: tessera,pcpus lists pCPU {pcpu} twice", who(second))
            }
            PlacementError::PinnedTwice {
                pcpu,
                first,
                second,
            } => write!(
                f,
                "{}: tessera,pcpus pins a vCPU to pCPU {pcpu}, which {} already owns \
                 (a pinned domain has its pCPUs to itself)",
                who(second),
                who(first)
            ),
            PlacementError::NoFreePcpu { domain, pcpus } => write!(
                f,
                "{} is not pinned, but pinned domains own all {pcpus} pCPUs: none is left \
                 for it (tessera,pcpus)",
                who(domain)
            ),
        }
    }
}

/// `d<id> "<name>"`, as the kernel and `cargo xtask check` name domains.
struct DomainRef<'a>(usize, &'a str);

impl fmt::Display for DomainRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{} {:?}", self.0 + 1, self.1)
    }
}

impl Placement {
    /// A board of `pcpus` pCPUs (at least 1, at most [`MAX_PCPUS`]) that no
    /// domain is pinned to.
    pub const fn unpinned(pcpus: usize) -> Self {
        let pcpus = if pcpus == 0 {
            1
        } else if pcpus > MAX_PCPUS {
            MAX_PCPUS
        } else {
            pcpus
        };
        Self {
            pcpus,
            owned: 0,
            reserved: 0,
            owner: [0; MAX_PCPUS],
        }
    }

    /// Checks every domain's pins (`tessera,pcpus`, in description order;
    /// empty for an unpinned domain) against a board of `pcpus` pCPUs:
    /// each pin is a pCPU the board has, no pCPU is owned twice, and if
    /// any domain is unpinned, some pCPU is left for it. The first problem,
    /// in description order, is the error.
    pub fn plan<'a, I>(pcpus: usize, domains: I) -> Result<Self, PlacementError>
    where
        I: IntoIterator<Item = &'a [u32]>,
        I::IntoIter: Clone,
    {
        let mut placement = Self::unpinned(pcpus);
        let domains = domains.into_iter();
        for (domain, pins) in domains.clone().enumerate() {
            placement.claim(domain, pins)?;
        }
        if placement.free() == 0 {
            if let Some(domain) = domains.clone().position(|pins| pins.is_empty()) {
                return Err(PlacementError::NoFreePcpu {
                    domain,
                    pcpus: placement.pcpus,
                });
            }
        }
        placement.reserved = placement.owned;
        Ok(placement)
    }

    /// Hyperlaunch: the kernel builds only the boot domain (description
    /// index `boot`), and a builder creates the others, asking for their
    /// pins then. The boot domain's pins are checked as [`Placement::plan`]
    /// checks them, and it must find a pCPU; every other pin the board can
    /// honour is reserved for its domain (first come, in description
    /// order), so no unpinned vCPU, the boot domain's included, is placed
    /// there. Pins that cannot be honoured are left for `CreateDomain` to
    /// refuse ([`Placement::check_pins`]), naming the builder's domain.
    pub fn plan_for_builder<'a, I>(
        pcpus: usize,
        domains: I,
        boot: usize,
    ) -> Result<Self, PlacementError>
    where
        I: IntoIterator<Item = &'a [u32]>,
        I::IntoIter: Clone,
    {
        let domains = domains.into_iter();
        let boot_pins = domains.clone().nth(boot).unwrap_or(&[]);
        let mut placement = Self::unpinned(pcpus);
        // The boot domain first and strictly: the kernel builds it now.
        placement.claim(boot, boot_pins)?;
        for (domain, pins) in domains.enumerate().filter(|&(i, _)| i != boot) {
            for &pin in pins {
                let p = pin as usize;
                if p < placement.pcpus && !placement.is_owned(p) {
                    placement.take(p, domain);
                }
            }
        }
        if boot_pins.is_empty() && placement.free() == 0 {
            return Err(PlacementError::NoFreePcpu {
                domain: boot,
                pcpus: placement.pcpus,
            });
        }
        placement.reserved = placement.owned;
        Ok(placement)
    }

    /// Description domain `domain` owns `pins`: each must be on the board
    /// and owned by no one yet (not even by the domain itself: a pCPU
    /// listed twice).
    fn claim(&mut self, domain: usize, pins: &[u32]) -> Result<(), PlacementError> {
        for &pin in pins {
            let p = pin as usize;
            if p >= self.pcpus {
                return Err(PlacementError::NoSuchPcpu {
                    domain,
                    pcpu: pin,
                    pcpus: self.pcpus,
                });
            }
            if self.is_owned(p) {
                return Err(PlacementError::PinnedTwice {
                    pcpu: pin,
                    first: usize::from(self.owner.get(p).copied().unwrap_or(0)),
                    second: domain,
                });
            }
            self.take(p, domain);
        }
        Ok(())
    }

    /// Marks pCPU `p` owned by description domain `domain`.
    fn take(&mut self, p: usize, domain: usize) {
        self.owned |= 1 << p;
        if let Some(slot) = self.owner.get_mut(p) {
            // Descriptions hold at most 16 domains; saturate anyway.
            *slot = u8::try_from(domain).unwrap_or(u8::MAX);
        }
    }

    /// Whether a domain created now may be pinned to `pins`: each is a pCPU
    /// the board has, and no vCPU is placed there yet (`occupied`, bit `p`:
    /// some vCPU is on pCPU `p`). A pCPU reserved at boot passes when its
    /// domain is not running, so a pinned domain can be built (and
    /// rebuilt) on it. The first pin that fails is the error.
    pub fn check_pins(&self, pins: &[u32], occupied: u64) -> Result<(), PinError> {
        for &pin in pins {
            let p = pin as usize;
            if p >= self.pcpus {
                return Err(PinError::NoSuchPcpu {
                    pcpu: pin,
                    pcpus: self.pcpus,
                });
            }
            if occupied & (1 << p) != 0 {
                return Err(PinError::Taken { pcpu: pin });
            }
        }
        Ok(())
    }

    /// A domain was created pinned to `pins` (checked with
    /// [`Placement::check_pins`]): it owns them while it lives, and no
    /// unpinned vCPU is placed there. `tag` names it in [`Placement::owner`].
    pub fn own(&mut self, pins: &[u32], tag: usize) {
        for &pin in pins {
            let p = pin as usize;
            if p < self.pcpus {
                self.take(p, tag);
            }
        }
    }

    /// A domain pinned to `pins` is gone: the pCPUs it took go back to the
    /// unpinned vCPUs, except those reserved at boot, which wait for their
    /// domain's rebuild.
    pub fn release(&mut self, pins: &[u32]) {
        for &pin in pins {
            let p = pin as usize;
            if p < self.pcpus && self.reserved & (1 << p) == 0 {
                self.owned &= !(1 << p);
            }
        }
    }

    /// How many pCPUs the board has.
    pub fn pcpus(&self) -> usize {
        self.pcpus
    }

    /// Whether a pinned domain owns pCPU `p`.
    pub fn is_owned(&self, p: usize) -> bool {
        p < MAX_PCPUS && self.owned & (1 << p) != 0
    }

    /// The description index of the domain that owns pCPU `p`, if one does.
    pub fn owner(&self, p: usize) -> Option<usize> {
        self.is_owned(p)
            .then(|| self.owner.get(p).map(|&d| usize::from(d)))
            .flatten()
    }

    /// How many pCPUs unpinned vCPUs share.
    pub fn free(&self) -> usize {
        (0..self.pcpus).filter(|&p| !self.is_owned(p)).count()
    }

    /// The pCPU for vCPU `index` of a domain pinned to `pins` (empty: not
    /// pinned) whose vCPUs are numbered from `first` system-wide. A pinned
    /// vCPU takes its pin (vCPUs beyond the list share it in turn); an
    /// unpinned one the `(first + index) % free`th pCPU nobody owns, so
    /// consecutive vCPUs spread out. `None` if the pin is not on the board
    /// or no pCPU is free.
    pub fn pcpu_of(&self, pins: &[u32], first: usize, index: usize) -> Option<usize> {
        if !pins.is_empty() {
            let pin = *pins.get(index % pins.len())? as usize;
            return (pin < self.pcpus).then_some(pin);
        }
        let free = self.free();
        if free == 0 {
            return None;
        }
        let nth = first.checked_add(index)? % free;
        (0..self.pcpus).filter(|&p| !self.is_owned(p)).nth(nth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = ["devmodel", "linux", "safety", "hmi"];

    fn plan(pcpus: usize, domains: &[&[u32]]) -> Result<Placement, PlacementError> {
        Placement::plan(pcpus, domains.iter().copied())
    }

    fn message(e: PlacementError) -> String {
        e.named(|i| NAMES.get(i).copied().unwrap_or("?"))
            .to_string()
    }

    /// Where each of `vcpus` vCPUs of every domain goes, numbering vCPUs
    /// system-wide in description order as the kernel allocates them.
    fn layout(p: &Placement, domains: &[(&[u32], usize)]) -> Vec<Vec<usize>> {
        let mut first = 0;
        domains
            .iter()
            .map(|&(pins, vcpus)| {
                let out = (0..vcpus)
                    .map(|i| p.pcpu_of(pins, first, i).unwrap())
                    .collect();
                first += vcpus;
                out
            })
            .collect()
    }

    #[test]
    fn without_pins_vcpus_go_round_robin_over_every_pcpu() {
        let p = plan(2, &[&[], &[], &[]]).unwrap();
        assert_eq!(p.free(), 2);
        assert_eq!(
            layout(&p, &[(&[], 1), (&[], 2), (&[], 1)]),
            [vec![0], vec![1, 0], vec![1]]
        );
        // The same as the placement before pinning existed: n % pCPUs.
        for n in 0..16 {
            assert_eq!(p.pcpu_of(&[], n, 0), Some(n % 2));
        }
        assert_eq!(Placement::unpinned(3).pcpu_of(&[], 4, 0), Some(1));
    }

    #[test]
    fn a_pinned_domain_owns_its_pcpus_and_the_rest_share_the_others() {
        // The automotive ECU: the safety partition alone on pCPU 2.
        let p = plan(3, &[&[], &[], &[2]]).unwrap();
        assert!(p.is_owned(2) && !p.is_owned(0) && !p.is_owned(1));
        assert_eq!(p.owner(2), Some(2));
        assert_eq!(p.owner(0), None);
        assert_eq!(p.free(), 2);
        assert_eq!(
            layout(&p, &[(&[], 1), (&[], 2), (&[2], 1)]),
            [vec![0], vec![1, 0], vec![2]]
        );
        // However many unpinned vCPUs there are, none lands on pCPU 2.
        assert!((0..64).all(|n| p.pcpu_of(&[], n, 0) != Some(2)));
        // Pinned first in the description: the others still avoid it.
        let p = plan(3, &[&[0], &[], &[]]).unwrap();
        assert_eq!(
            layout(&p, &[(&[0], 1), (&[], 1), (&[], 1)]),
            [vec![0], vec![2], vec![1]]
        );
    }

    #[test]
    fn vcpus_beyond_the_pins_share_them_in_turn() {
        let p = plan(4, &[&[1, 3], &[]]).unwrap();
        assert_eq!(
            layout(&p, &[(&[1, 3], 3), (&[], 2)]),
            [vec![1, 3, 1], vec![2, 0]]
        );
    }

    #[test]
    fn every_pcpu_may_be_pinned_when_every_domain_is() {
        let p = plan(2, &[&[0], &[1]]).unwrap();
        assert_eq!(p.free(), 0);
        assert_eq!(p.pcpu_of(&[1], 0, 0), Some(1));
        // A domain a builder creates later, unpinned, has nowhere to go.
        assert_eq!(p.pcpu_of(&[], 2, 0), None);
    }

    #[test]
    fn a_pin_beyond_the_board_is_refused_naming_the_domain() {
        let e = plan(2, &[&[], &[], &[2]]).unwrap_err();
        assert_eq!(
            e,
            PlacementError::NoSuchPcpu {
                domain: 2,
                pcpu: 2,
                pcpus: 2
            }
        );
        assert_eq!(e.domain(), 2);
        assert_eq!(
            message(e),
            "d3 \"safety\": tessera,pcpus pins a vCPU to pCPU 2, but the board has only pCPUs 0-1"
        );
        assert!(matches!(
            plan(8, &[&[63]]),
            Err(PlacementError::NoSuchPcpu { pcpu: 63, .. })
        ));
        assert_eq!(
            message(plan(1, &[&[1]]).unwrap_err()),
            "d1 \"devmodel\": tessera,pcpus pins a vCPU to pCPU 1, but the board has only pCPU 0"
        );
        // pcpu_of never places on a pCPU the board lacks either.
        assert_eq!(Placement::unpinned(2).pcpu_of(&[5], 0, 0), None);
    }

    #[test]
    fn two_domains_pinned_to_one_pcpu_are_refused() {
        let e = plan(4, &[&[], &[], &[1, 2], &[3, 2]]).unwrap_err();
        assert_eq!(
            e,
            PlacementError::PinnedTwice {
                pcpu: 2,
                first: 2,
                second: 3
            }
        );
        assert_eq!(e.domain(), 3);
        assert_eq!(
            message(e),
            "d4 \"hmi\": tessera,pcpus pins a vCPU to pCPU 2, which d3 \"safety\" already owns \
             (a pinned domain has its pCPUs to itself)"
        );
        // One domain listing a pCPU twice (the parser refuses it first).
        let e = plan(4, &[&[1, 1]]).unwrap_err();
        assert_eq!(
            message(e),
            "d1 \"devmodel\": tessera,pcpus lists pCPU 1 twice"
        );
    }

    #[test]
    fn an_unpinned_domain_with_no_pcpu_left_is_refused() {
        let e = plan(2, &[&[], &[0], &[1]]).unwrap_err();
        assert_eq!(
            e,
            PlacementError::NoFreePcpu {
                domain: 0,
                pcpus: 2
            }
        );
        assert_eq!(
            message(e),
            "d1 \"devmodel\" is not pinned, but pinned domains own all 2 pCPUs: none is left \
             for it (tessera,pcpus)"
        );
        // A bad pin is reported before the shortage it would cause.
        assert!(matches!(
            plan(2, &[&[], &[0], &[1], &[1]]),
            Err(PlacementError::PinnedTwice { .. })
        ));
    }

    #[test]
    fn a_builder_image_reserves_the_pins_of_the_domains_it_builds() {
        // domB (index 3, unpinned) builds a devmodel, a pinned safety
        // partition and a guest.
        let p = Placement::plan_for_builder(2, [&[][..], &[1], &[], &[]], 3).unwrap();
        assert!(p.is_owned(1), "kept for safety");
        assert_eq!(p.owner(1), Some(1));
        // domB and the unpinned domains built before safety stay off it.
        assert!((0..8).all(|n| p.pcpu_of(&[], n, 0) == Some(0)));
        // safety's create finds its pCPU free.
        assert_eq!(p.check_pins(&[1], 0b01), Ok(()));
    }

    #[test]
    fn a_builder_images_bad_pins_are_left_for_create_to_refuse() {
        // b pins beyond the board, c the pCPU a has: not the kernel's to
        // refuse at boot; a's pin is reserved, the rest stay free.
        let p = Placement::plan_for_builder(2, [&[][..], &[1], &[5], &[1]], 0).unwrap();
        assert!(p.is_owned(1) && !p.is_owned(0));
        assert_eq!(p.owner(1), Some(1), "first come");
        assert_eq!(
            p.check_pins(&[5], 0),
            Err(PinError::NoSuchPcpu { pcpu: 5, pcpus: 2 })
        );
        // Once a runs on pCPU 1, c's pin is taken.
        assert_eq!(p.check_pins(&[1], 0b10), Err(PinError::Taken { pcpu: 1 }));
        assert_eq!(
            PinError::Taken { pcpu: 1 }.errno(),
            tessera_ipc::errno::Errno::Ebusy
        );
        assert_eq!(
            PinError::NoSuchPcpu { pcpu: 5, pcpus: 2 }.errno(),
            tessera_ipc::errno::Errno::Enxio
        );
    }

    #[test]
    fn the_boot_domains_own_pins_are_checked_strictly() {
        assert_eq!(
            Placement::plan_for_builder(2, [&[][..], &[2]], 1),
            Err(PlacementError::NoSuchPcpu {
                domain: 1,
                pcpu: 2,
                pcpus: 2
            })
        );
        // Pinned itself, it wins its pCPU over a domain earlier in the tree.
        let p = Placement::plan_for_builder(2, [&[0][..], &[0]], 1).unwrap();
        assert_eq!(p.owner(0), Some(1));
        // Unpinned, it needs a pCPU the others' reservations leave.
        assert_eq!(
            Placement::plan_for_builder(2, [&[0][..], &[1], &[]], 2),
            Err(PlacementError::NoFreePcpu {
                domain: 2,
                pcpus: 2
            })
        );
    }

    #[test]
    fn a_builders_pinned_domain_owns_its_pcpus_while_it_lives() {
        let mut p = Placement::unpinned(3);
        assert_eq!(p.check_pins(&[2], 0b001), Ok(()));
        p.own(&[2], 4);
        assert_eq!(p.owner(2), Some(4));
        assert!((0..8).all(|n| p.pcpu_of(&[], n, 0) != Some(2)));
        p.release(&[2]);
        assert!(!p.is_owned(2), "gone: back to the unpinned vCPUs");
        // A pCPU reserved at boot stays reserved for the rebuild.
        let mut p = Placement::plan_for_builder(3, [&[][..], &[2]], 0).unwrap();
        p.own(&[2], 1);
        p.release(&[2]);
        assert!(p.is_owned(2));
        // Pins beyond the board are ignored by own/release.
        p.own(&[9], 1);
        p.release(&[9]);
        assert_eq!(p.free(), 2);
    }

    #[test]
    fn pins_must_be_on_the_board_and_free() {
        let p = Placement::unpinned(2);
        assert_eq!(
            p.check_pins(&[], u64::MAX),
            Ok(()),
            "unpinned: nothing to check"
        );
        assert_eq!(p.check_pins(&[0, 1], 0), Ok(()));
        assert_eq!(
            p.check_pins(&[0, 2], 0),
            Err(PinError::NoSuchPcpu { pcpu: 2, pcpus: 2 })
        );
        assert_eq!(
            p.check_pins(&[1, 0], 0b01),
            Err(PinError::Taken { pcpu: 0 })
        );
    }

    #[test]
    fn boards_are_clamped_to_what_a_placement_can_describe() {
        assert_eq!(Placement::unpinned(0).pcpus(), 1);
        assert_eq!(Placement::unpinned(1000).pcpus(), MAX_PCPUS);
        assert_eq!(Placement::unpinned(0).pcpu_of(&[], 7, 0), Some(0));
        assert_eq!(plan(1, &[]).unwrap().free(), 1);
        assert!(!Placement::unpinned(64).is_owned(64));
    }
}

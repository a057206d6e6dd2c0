//! A learning L2 switch joining up to [`MAX_PORTS`] net devices.
//!
//! The one idea: the switch only decides where a frame goes; it never
//! holds frames. Each call learns the source MAC's port and answers a port
//! set: the known port for a learned unicast destination, every other port
//! for broadcast, multicast and unknown destinations, and never the port a
//! frame came from. The MAC table is a fixed array; when it is full the
//! least recently seen station is forgotten (it will be flooded to, then
//! relearned).

/// The most ports a switch has (the port set is a byte).
pub const MAX_PORTS: usize = 8;

/// A set of ports to send a frame to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Destinations(u8);

impl Destinations {
    pub const NONE: Destinations = Destinations(0);

    fn only(port: usize) -> Self {
        Destinations(1u8.checked_shl(port as u32).unwrap_or(0))
    }

    pub fn contains(self, port: usize) -> bool {
        self.0 & Self::only(port).0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The ports, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_PORTS).filter(move |&p| self.contains(p))
    }
}

#[derive(Clone, Copy)]
struct Station {
    mac: [u8; 6],
    port: u8,
    last_seen: u64,
}

/// A switch with `PORTS` ports and a `TABLE`-entry MAC table.
pub struct Switch<const PORTS: usize, const TABLE: usize = 64> {
    stations: [Option<Station>; TABLE],
    clock: u64,
}

impl<const PORTS: usize, const TABLE: usize> Default for Switch<PORTS, TABLE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const PORTS: usize, const TABLE: usize> Switch<PORTS, TABLE> {
    pub const fn new() -> Self {
        const { assert!(PORTS >= 1 && PORTS <= MAX_PORTS, "1 to 8 ports") };
        Switch {
            stations: [None; TABLE],
            clock: 0,
        }
    }

    /// Every port but `except`.
    fn flood(except: usize) -> Destinations {
        let all = ((1u16 << PORTS) - 1) as u8;
        Destinations(all & !Destinations::only(except).0)
    }

    /// Where a frame that arrived on `src_port` goes. A frame too short to
    /// have addresses, or from a port the switch does not have, goes
    /// nowhere.
    pub fn forward(&mut self, src_port: usize, frame: &[u8]) -> Destinations {
        let (Some(dst), Some(src)) = (frame.get(0..6), frame.get(6..12)) else {
            return Destinations::NONE;
        };
        if src_port >= PORTS || frame.len() < 14 {
            return Destinations::NONE;
        }
        let mut dst_mac = [0u8; 6];
        dst_mac.copy_from_slice(dst);
        let mut src_mac = [0u8; 6];
        src_mac.copy_from_slice(src);
        self.clock += 1;
        // A group address is never a station's source.
        if src_mac[0] & 1 == 0 {
            self.learn(src_mac, src_port);
        }
        if dst_mac[0] & 1 != 0 {
            return Self::flood(src_port);
        }
        match self.lookup(dst_mac) {
            Some(port) if port == src_port => Destinations::NONE,
            Some(port) => Destinations::only(port),
            None => Self::flood(src_port),
        }
    }

    /// The port `mac` was last seen on.
    pub fn lookup(&self, mac: [u8; 6]) -> Option<usize> {
        self.stations
            .iter()
            .flatten()
            .find(|s| s.mac == mac)
            .map(|s| usize::from(s.port))
    }

    fn learn(&mut self, mac: [u8; 6], port: usize) {
        let station = Station {
            mac,
            port: port as u8,
            last_seen: self.clock,
        };
        let slot = match self
            .stations
            .iter()
            .position(|s| s.is_some_and(|s| s.mac == mac))
        {
            Some(known) => Some(known),
            None => self.stations.iter().position(Option::is_none).or_else(|| {
                // Full: forget the least recently seen station.
                self.stations
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.map_or(0, |s| s.last_seen))
                    .map(|(i, _)| i)
            }),
        };
        if let Some(entry) = slot.and_then(|i| self.stations.get_mut(i)) {
            *entry = Some(station);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> [u8; 60] {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
    const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc];
    const BROADCAST: [u8; 6] = [0xff; 6];

    fn ports(d: Destinations) -> Vec<usize> {
        d.iter().collect()
    }

    #[test]
    fn unknown_then_learned_unicast() {
        let mut sw = Switch::<3>::new();
        assert_eq!(ports(sw.forward(0, &frame(B, A))), [1, 2], "unknown: flood");
        assert_eq!(ports(sw.forward(1, &frame(A, B))), [0], "A was learned");
        assert_eq!(ports(sw.forward(0, &frame(B, A))), [1], "B was learned");
        assert_eq!(sw.lookup(A), Some(0));
        assert_eq!(sw.lookup(B), Some(1));
    }

    #[test]
    fn broadcast_and_multicast_flood_except_source() {
        let mut sw = Switch::<4>::new();
        assert_eq!(ports(sw.forward(2, &frame(BROADCAST, A))), [0, 1, 3]);
        let multicast = [0x01, 0x00, 0x5e, 0, 0, 1];
        assert_eq!(ports(sw.forward(1, &frame(multicast, B))), [0, 2, 3]);
    }

    #[test]
    fn never_back_to_the_source() {
        let mut sw = Switch::<2>::new();
        sw.forward(0, &frame(BROADCAST, A));
        sw.forward(0, &frame(BROADCAST, B));
        assert!(sw.forward(0, &frame(B, A)).is_empty());
        let one = Switch::<1>::new().forward(0, &frame(BROADCAST, A));
        assert!(one.is_empty());
    }

    #[test]
    fn stations_move_between_ports() {
        let mut sw = Switch::<3>::new();
        sw.forward(0, &frame(BROADCAST, A));
        sw.forward(2, &frame(BROADCAST, A));
        assert_eq!(sw.lookup(A), Some(2));
        assert_eq!(ports(sw.forward(1, &frame(A, B))), [2]);
    }

    #[test]
    fn full_table_replaces_least_recently_seen() {
        let mut sw = Switch::<3, 2>::new();
        sw.forward(0, &frame(BROADCAST, A));
        sw.forward(1, &frame(BROADCAST, B));
        sw.forward(0, &frame(BROADCAST, A)); // A is fresher than B
        sw.forward(2, &frame(BROADCAST, C)); // evicts B
        assert_eq!(sw.lookup(A), Some(0));
        assert_eq!(sw.lookup(B), None);
        assert_eq!(sw.lookup(C), Some(2));
    }

    #[test]
    fn group_sources_short_frames_and_bad_ports_are_not_learned() {
        let mut sw = Switch::<2>::new();
        sw.forward(0, &frame(B, BROADCAST));
        assert_eq!(sw.lookup(BROADCAST), None);
        assert!(sw.forward(0, &[0u8; 13]).is_empty());
        assert!(sw.forward(2, &frame(B, A)).is_empty());
        assert!(sw.forward(usize::MAX, &frame(B, A)).is_empty());
        assert_eq!(sw.lookup(A), None);
    }
}

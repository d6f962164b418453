//! Tracking: how tracked interfaces, scripts and backend health change an
//! instance's effective priority, or put it in FAULT (keepalived semantics).
//!
//! Each tracked object has a weight and an up/down status:
//! - weight 0: while the object is down the instance is in FAULT;
//! - weight > 0: added to the priority while the object is up;
//! - weight < 0: added to the priority while the object is down.
//!
//! The effective priority is the base priority plus the applicable
//! weights, clamped to 1..=254. The address owner (priority 255) ignores
//! weights (but not FAULT), as keepalived does. Pure: no I/O.

use super::PRIORITY_OWNER;

/// What a tracked object is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrackedKind {
    /// A network interface, by name.
    Interface(String),
    /// A `vrrp_script`, by name.
    Script(String),
    /// The backends of the instance's VIPs (fed by the daemon).
    Backends,
    /// The data plane's take-over of the VIPs (weight 0; down after a
    /// failed activation, for a while).
    Dataplane,
}

/// One tracked object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// What it is.
    pub kind: TrackedKind,
    /// Its weight (-254..=254; see the module docs).
    pub weight: i32,
    /// Its current status.
    pub up: bool,
}

/// The tracked objects of one instance and its base priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    base: u8,
    items: Vec<Tracked>,
}

/// The outcome of tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    /// A weight-0 object is down.
    pub fault: bool,
    /// Effective priority.
    pub priority: u8,
}

impl Tracking {
    /// Tracking for an instance of base priority `base`.
    pub fn new(base: u8, items: Vec<Tracked>) -> Tracking {
        Tracking { base, items }
    }

    /// The tracked objects.
    pub fn items(&self) -> &[Tracked] {
        &self.items
    }

    /// Set the status of every object of `kind`; returns whether anything
    /// changed.
    pub fn set(&mut self, kind: &TrackedKind, up: bool) -> bool {
        let mut changed = false;
        for t in self.items.iter_mut().filter(|t| &t.kind == kind) {
            if t.up != up {
                t.up = up;
                changed = true;
            }
        }
        changed
    }

    /// Current effect on the instance.
    pub fn effect(&self) -> Effect {
        let fault = self.items.iter().any(|t| t.weight == 0 && !t.up);
        if self.base == PRIORITY_OWNER {
            return Effect {
                fault,
                priority: PRIORITY_OWNER,
            };
        }
        let delta: i32 = self
            .items
            .iter()
            .map(|t| match (t.weight, t.up) {
                (w, true) if w > 0 => w,
                (w, false) if w < 0 => w,
                _ => 0,
            })
            .sum();
        let p = (i32::from(self.base) + delta).clamp(1, i32::from(PRIORITY_OWNER) - 1);
        Effect {
            fault,
            priority: u8::try_from(p).unwrap_or(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: TrackedKind, weight: i32, up: bool) -> Tracked {
        Tracked { kind, weight, up }
    }

    fn iface(n: &str) -> TrackedKind {
        TrackedKind::Interface(n.into())
    }

    #[test]
    fn weights_follow_keepalived_rules() {
        let mut t = Tracking::new(
            100,
            vec![
                item(iface("eth1"), -20, true),
                item(TrackedKind::Script("chk".into()), 10, true),
                item(TrackedKind::Backends, -50, true),
            ],
        );
        // positive weight counts while up
        assert_eq!(
            t.effect(),
            Effect {
                fault: false,
                priority: 110
            }
        );
        // negative weight counts while down
        assert!(t.set(&iface("eth1"), false));
        assert_eq!(t.effect().priority, 90);
        // positive weight stops counting when down
        assert!(t.set(&TrackedKind::Script("chk".into()), false));
        assert_eq!(t.effect().priority, 80);
        assert!(t.set(&TrackedKind::Backends, false));
        assert_eq!(t.effect().priority, 30);
        // no change reported for the same status
        assert!(!t.set(&TrackedKind::Backends, false));
    }

    #[test]
    fn zero_weight_means_fault() {
        let mut t = Tracking::new(100, vec![item(iface("eth0"), 0, true)]);
        assert!(!t.effect().fault);
        t.set(&iface("eth0"), false);
        assert_eq!(
            t.effect(),
            Effect {
                fault: true,
                priority: 100
            }
        );
    }

    #[test]
    fn clamped_and_owner_ignores_weights() {
        let t = Tracking::new(10, vec![item(iface("a"), -100, false)]);
        assert_eq!(t.effect().priority, 1);
        let t = Tracking::new(250, vec![item(iface("a"), 100, true)]);
        assert_eq!(t.effect().priority, 254);
        let t = Tracking::new(255, vec![item(iface("a"), -100, false)]);
        assert_eq!(t.effect().priority, 255);
        let t = Tracking::new(255, vec![item(iface("a"), 0, false)]);
        assert!(t.effect().fault);
    }
}

//! The pure rise/fall state machine of one backend.
//!
//! Semantics (keepalived-like, see `rise`/`fall` in keepalived's checkers):
//!
//! - a [`Status::Down`] backend comes up after `rise` *consecutive*
//!   successful checks; a failure resets the count;
//! - an [`Status::Up`] backend goes down after `fall` *consecutive* failed
//!   checks; a success resets the count;
//! - `rise` and `fall` of 0 are treated as 1 (one result decides).
//!
//! Initial state: the caller chooses. The recommended default
//! ([`Status::default`]) is `Down`: a new backend gets no traffic until it
//! has passed `rise` checks in a row, so a misconfigured or dead backend
//! never receives flows at start-up (keepalived's `alpha` mode). `Up` is
//! keepalived's default (a new backend is trusted until `fall` failures),
//! which avoids a start-up window with an empty table but sends flows to a
//! dead backend for up to `fall` intervals.
//!
//! No transition is reported for the initial state itself: the caller knows
//! it, having chosen it.

/// Health of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Status {
    /// Not serving: not in the Maglev table.
    #[default]
    Down,
    /// Serving.
    Up,
}

impl Status {
    /// `true` for [`Status::Up`].
    pub fn is_up(self) -> bool {
        self == Status::Up
    }
}

/// A change of [`Status`] reported by [`HealthState::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Down → Up (`rise` consecutive successes).
    Up,
    /// Up → Down (`fall` consecutive failures).
    Down,
}

/// Rise/fall counter of one backend. Pure: feed it check results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthState {
    rise: u32,
    fall: u32,
    status: Status,
    /// Consecutive results against the current status (successes while
    /// down, failures while up).
    streak: u32,
}

impl HealthState {
    /// A backend in `initial` state that needs `rise` consecutive successes to
    /// come up and `fall` consecutive failures to go down (0 counts as 1).
    pub fn new(rise: u32, fall: u32, initial: Status) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            status: initial,
            streak: 0,
        }
    }

    /// Records one check result; returns the transition it caused, if any.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        match (self.status, ok) {
            (Status::Down, true) => {
                self.streak += 1;
                if self.streak >= self.rise {
                    self.status = Status::Up;
                    self.streak = 0;
                    return Some(Transition::Up);
                }
            }
            (Status::Up, false) => {
                self.streak += 1;
                if self.streak >= self.fall {
                    self.status = Status::Down;
                    self.streak = 0;
                    return Some(Transition::Down);
                }
            }
            // A result confirming the current status resets the counter.
            (Status::Down, false) | (Status::Up, true) => self.streak = 0,
        }
        None
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Consecutive results so far that speak against the current status.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// The `rise` threshold in force (at least 1).
    pub fn rise(&self) -> u32 {
        self.rise
    }

    /// The `fall` threshold in force (at least 1).
    pub fn fall(&self) -> u32 {
        self.fall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut HealthState, results: &[bool]) -> Vec<Option<Transition>> {
        results.iter().map(|&ok| s.record(ok)).collect()
    }

    #[test]
    fn default_initial_is_down() {
        assert_eq!(Status::default(), Status::Down);
    }

    #[test]
    fn down_needs_rise_consecutive_successes() {
        let mut s = HealthState::new(3, 2, Status::Down);
        assert_eq!(
            feed(&mut s, &[true, true, true]),
            [None, None, Some(Transition::Up)]
        );
        assert_eq!(s.status(), Status::Up);
    }

    #[test]
    fn failure_resets_rise_count() {
        let mut s = HealthState::new(3, 2, Status::Down);
        assert_eq!(feed(&mut s, &[true, true, false, true, true]), [None; 5]);
        assert_eq!(s.status(), Status::Down);
        assert_eq!(s.streak(), 2);
        assert_eq!(s.record(true), Some(Transition::Up));
    }

    #[test]
    fn up_goes_down_after_fall_consecutive_failures() {
        let mut s = HealthState::new(2, 3, Status::Up);
        assert_eq!(
            feed(&mut s, &[false, false, false]),
            [None, None, Some(Transition::Down)]
        );
        assert_eq!(s.status(), Status::Down);
    }

    #[test]
    fn success_resets_fall_count() {
        let mut s = HealthState::new(2, 3, Status::Up);
        assert_eq!(feed(&mut s, &[false, false, true, false, false]), [None; 5]);
        assert_eq!(s.status(), Status::Up);
        assert_eq!(s.record(false), Some(Transition::Down));
    }

    #[test]
    fn results_confirming_status_report_nothing() {
        let mut down = HealthState::new(1, 1, Status::Down);
        assert_eq!(feed(&mut down, &[false; 5]), [None; 5]);
        let mut up = HealthState::new(1, 1, Status::Up);
        assert_eq!(feed(&mut up, &[true; 5]), [None; 5]);
    }

    #[test]
    fn counts_restart_after_each_transition() {
        let mut s = HealthState::new(2, 2, Status::Down);
        let got = feed(&mut s, &[true, true, false, false, true, false, true, true]);
        assert_eq!(
            got,
            [
                None,
                Some(Transition::Up),
                None,
                Some(Transition::Down),
                None,
                None,
                None,
                Some(Transition::Up)
            ]
        );
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut s = HealthState::new(0, 0, Status::Down);
        assert_eq!((s.rise(), s.fall()), (1, 1));
        assert_eq!(s.record(true), Some(Transition::Up));
        assert_eq!(s.record(false), Some(Transition::Down));
    }

    #[test]
    fn initial_up_is_trusted_until_fall() {
        let mut s = HealthState::new(5, 2, Status::Up);
        assert!(s.status().is_up());
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), Some(Transition::Down));
        assert!(!s.status().is_up());
    }
}

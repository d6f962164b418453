//! Sans-IO VRRP state machine for one virtual router (RFC 5798 §6.4,
//! RFC 9568 §6.4, RFC 3768 §6.4), plus keepalived's FAULT state and
//! `preempt_delay`.
//!
//! The caller feeds [`Input`]s with the current time and carries out the
//! returned [`Action`]s **in order**. The machine never reads a clock: it
//! only compares the `now` it is given with deadlines it computed from
//! earlier `now`s, so any monotonic clock (or a test's fake one) works.
//!
//! Timers: for every [`Action::SetTimer`] the shell (re)arms that timer to
//! fire `after` from now, replacing any earlier arming; for
//! [`Action::CancelTimer`] it disarms it. When a timer fires it sends
//! [`Input::TimerExpired`]. An expiry for a timer the machine no longer
//! has armed, or that arrives before the machine's deadline (a stale
//! wake-up after a re-arm), is ignored, so races are harmless.
//!
//! State changes come as [`Action::Transition`]. The shell then:
//! - to `Master`: adds the VIPs, sends gratuitous ARP / unsolicited NA,
//!   sets the data plane's active flag, runs the notify script;
//! - from `Master`: removes the VIPs, clears the active flag;
//! - otherwise: notify scripts only.
//!
//! Timer values (RFC 5798 §6.1; RFC 3768 §6.1 for v2):
//! - v3 `Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256`;
//! - v2 `Skew_Time = (256 - Priority) / 256` seconds;
//! - `Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time`.
//!
//! `Priority` is the effective (tracked) priority, as in keepalived. Values
//! are computed at nanosecond resolution, truncating; keepalived computes
//! the same formula in microseconds (`625/16` per centisecond), so the two
//! agree to the microsecond.
//!
//! **preempt_delay** (keepalived semantics, "seconds after startup or
//! seeing a lower priority master until preemption"): with preempt on and
//! a non-zero delay, a Backup that receives an advertisement from a
//! lower-priority Master accepts it (resets its Master_Down_Timer, as if
//! preempt were off) until a preempt deadline passes; after it, such
//! advertisements are discarded as RFC 5798 §6.4.2 says, so the
//! Master_Down_Timer runs out and this router takes over. The deadline is
//! set to `now + preempt_delay` when the Backup state is entered from
//! Initialize or Fault (startup), and, when no deadline is pending, on the
//! first lower-priority advertisement; it is cleared when an advertisement
//! of equal or higher priority is accepted and when leaving Backup.
//!
//! **Lower-priority advertisements in Master** (keepalived, not RFC 5798):
//! §6.4.3 says a Master discards an advertisement of lower priority (or of
//! equal priority from a smaller primary address). keepalived 2.x answers
//! it instead (`lower_prio_no_advert` false by default): it sends an
//! advertisement at once and repeats its gratuitous ARPs
//! (`garp_lower_prio_repeat` / `garp_lower_prio_delay`, which default to the
//! `garp_master_*` values). This machine does the same, with
//! [`Action::SendAdvertisement`] followed by [`Action::Announce`]: when a
//! second Master appears (a lower-priority node started with `state
//! MASTER`, a healed split brain) it has announced the VIPs with its own
//! MAC, and once it steps back (on our advertisement) nothing else would
//! point the neighbours back at us until their ARP / ND caches expire. The
//! answer is rate limited to one per [`Machine::answer_gap`] (the larger of
//! Advertisement_Interval and [`MIN_ANSWER_GAP`]), so a peer that keeps
//! sending lower-priority advertisements cannot make this router flood;
//! the ones in between are discarded as the RFC says.
//!
//! Preemption itself follows the RFC exactly: a preempting Backup does not
//! jump to Master on the lower-priority advertisement; it discards it and
//! takes over when Master_Down_Timer expires, at most Master_Down_Interval
//! later. keepalived 2.2.7 does the same (it logs "received lower priority
//! advert - discarding", then "Receive advertisement timeout"; the interop
//! tests measure both preempting in about Master_Down_Interval).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Advertisement, InstanceParams, PRIORITY_OWNER, PRIORITY_STOP, Version};

/// Protocol state (RFC 5798 §6.4, plus keepalived's FAULT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running (before startup, after shutdown).
    Initialize,
    /// Monitoring the Master.
    Backup,
    /// Forwarding for the virtual addresses.
    Master,
    /// A tracked interface or check failed: neither Master nor Backup, sends
    /// nothing, answers nothing (keepalived FAULT).
    Fault,
}

/// The two VRRP timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Adver_Timer: Master sends an advertisement when it fires.
    Advertisement,
    /// Master_Down_Timer: Backup becomes Master when it fires.
    MasterDown,
}

/// The shortest time between two answers to lower-priority advertisements
/// (see the module docs); the Advertisement_Interval when it is longer.
pub const MIN_ANSWER_GAP: Duration = Duration::from_secs(1);

/// What the shell must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority; build it with
    /// [`InstanceParams::encode_advertisement`].
    SendAdvertisement {
        /// Priority to advertise (0 when giving up mastership).
        priority: u8,
    },
    /// (Re)arm `timer` to fire `after` from now.
    SetTimer {
        /// Which timer.
        timer: Timer,
        /// Delay from now.
        after: Duration,
    },
    /// Disarm `timer`.
    CancelTimer {
        /// Which timer.
        timer: Timer,
    },
    /// Announce the virtual addresses again (Master only): re-run the
    /// gratuitous ARP / unsolicited NA schedule the shell runs on becoming
    /// Master. Sent after answering a lower-priority advertisement.
    Announce,
    /// The state changed.
    Transition {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
    },
}

/// The parts of a received, validated advertisement the machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedAdvert {
    /// Sender's priority.
    pub priority: u8,
    /// Sender's (Max) Advertisement Interval.
    pub max_advert_int: Duration,
    /// IP source address of the packet (the sender's primary address).
    pub source: IpAddr,
}

impl ReceivedAdvert {
    /// From a decoded advertisement and its IP source address.
    pub fn from_advert(adv: &Advertisement, source: IpAddr) -> Self {
        ReceivedAdvert {
            priority: adv.priority,
            max_advert_int: adv.interval,
            source,
        }
    }
}

/// Inputs to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Start the virtual router (RFC 5798 §6.4.1 Startup event).
    Startup,
    /// Stop it (Shutdown event).
    Shutdown,
    /// A valid advertisement for this VRID (after [`super::decode`] and
    /// [`super::check`]). The shell must not feed back our own packets.
    Advertisement(ReceivedAdvert),
    /// A timer fired.
    TimerExpired(Timer),
    /// The effective priority changed (tracking). Clamped to 1..=254;
    /// ignored for the address owner (base priority 255), as keepalived
    /// ignores tracking there.
    PriorityChanged(u8),
    /// A tracked interface/check went down (`true`) or recovered (`false`).
    Fault(bool),
}

/// One virtual router's protocol state.
#[derive(Debug, Clone)]
pub struct Machine {
    version: Version,
    base_priority: u8,
    priority: u8,
    advert_interval: Duration,
    master_adver_interval: Duration,
    preempt: bool,
    preempt_delay: Duration,
    primary: IpAddr,
    state: State,
    running: bool,
    fault: bool,
    start_as_master: bool,
    adver_deadline: Option<Instant>,
    down_deadline: Option<Instant>,
    preempt_deadline: Option<Instant>,
    /// When this Master last answered a lower-priority advertisement.
    last_answer: Option<Instant>,
}

impl Machine {
    /// A machine in Initialize for `params` (assumed validated).
    pub fn new(params: &InstanceParams) -> Self {
        Machine {
            version: params.version,
            base_priority: params.priority,
            priority: params.priority,
            advert_interval: params.advert_interval,
            master_adver_interval: params.advert_interval,
            preempt: params.preempt,
            preempt_delay: params.preempt_delay,
            primary: params.primary_address,
            state: State::Initialize,
            running: false,
            fault: false,
            start_as_master: false,
            adver_deadline: None,
            down_deadline: None,
            preempt_deadline: None,
            last_answer: None,
        }
    }

    /// keepalived `state MASTER`: on [`Input::Startup`] (not when leaving
    /// Fault) go straight to Master, sending an advertisement, instead of
    /// waiting Master_Down_Interval in Backup. The election still decides:
    /// a higher-priority Master's advertisement sends this router back to
    /// Backup (RFC 5798 §6.4.3). Without it, only the owner does this.
    pub fn set_start_as_master(&mut self, on: bool) {
        self.start_as_master = on;
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Current effective priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Master_Adver_Interval (v3: learned from the Master; v2: ours).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time for the current priority and Master_Adver_Interval.
    pub fn skew_time(&self) -> Duration {
        skew_time(self.version, self.priority, self.master_adver_interval)
    }

    /// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval.saturating_mul(3) + self.skew_time()
    }

    /// The shortest time between two answers to lower-priority
    /// advertisements: max(Advertisement_Interval, [`MIN_ANSWER_GAP`]).
    pub fn answer_gap(&self) -> Duration {
        self.advert_interval.max(MIN_ANSWER_GAP)
    }

    /// When the armed timer `t` is due, if armed.
    pub fn deadline(&self, t: Timer) -> Option<Instant> {
        match t {
            Timer::Advertisement => self.adver_deadline,
            Timer::MasterDown => self.down_deadline,
        }
    }

    /// The pending preempt_delay deadline, if any.
    pub fn preempt_deadline(&self) -> Option<Instant> {
        self.preempt_deadline
    }

    /// Process one input at time `now`; returns the actions to carry out
    /// in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Startup => self.on_startup(now, &mut out),
            Input::Shutdown => self.on_shutdown(&mut out),
            Input::Advertisement(adv) => self.on_advert(now, adv, &mut out),
            Input::TimerExpired(t) => self.on_timer(now, t, &mut out),
            Input::PriorityChanged(p) => self.on_priority(p),
            Input::Fault(on) => self.on_fault(now, on, &mut out),
        }
        out
    }

    fn set_timer(&mut self, now: Instant, timer: Timer, after: Duration, out: &mut Vec<Action>) {
        let due = now.checked_add(after);
        match timer {
            Timer::Advertisement => self.adver_deadline = due,
            Timer::MasterDown => self.down_deadline = due,
        }
        out.push(Action::SetTimer { timer, after });
    }

    fn cancel_timer(&mut self, timer: Timer, out: &mut Vec<Action>) {
        match timer {
            Timer::Advertisement => self.adver_deadline = None,
            Timer::MasterDown => self.down_deadline = None,
        }
        out.push(Action::CancelTimer { timer });
    }

    fn transition(&mut self, to: State, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        if to != State::Backup {
            self.preempt_deadline = None;
        }
        out.push(Action::Transition { from, to });
    }

    /// RFC 5798 §6.4.1 (also used when leaving Fault).
    fn enter_from_init(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.base_priority == PRIORITY_OWNER {
            // If the Priority = 255: send an ADVERTISEMENT, broadcast
            // gratuitous ARP / unsolicited NA (shell, on Transition), set
            // Adver_Timer to Advertisement_Interval, go to Master.
            self.become_master(now, out);
        } else {
            // Set Master_Adver_Interval to Advertisement_Interval, set
            // Master_Down_Timer to Master_Down_Interval, go to Backup.
            self.master_adver_interval = self.advert_interval;
            let down = self.master_down_interval();
            self.set_timer(now, Timer::MasterDown, down, out);
            self.transition(State::Backup, out);
            if self.preempt && !self.preempt_delay.is_zero() {
                self.preempt_deadline = now.checked_add(self.preempt_delay);
            }
        }
    }

    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendAdvertisement {
            priority: self.priority,
        });
        if self.down_deadline.is_some() {
            self.cancel_timer(Timer::MasterDown, out);
        }
        self.set_timer(now, Timer::Advertisement, self.advert_interval, out);
        // A new mastership answers the first lower-priority advert at once.
        self.last_answer = None;
        self.transition(State::Master, out);
    }

    fn on_startup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.running {
            return;
        }
        self.running = true;
        if self.fault {
            self.transition(State::Fault, out);
        } else if self.start_as_master {
            self.become_master(now, out);
        } else {
            self.enter_from_init(now, out);
        }
    }

    fn on_shutdown(&mut self, out: &mut Vec<Action>) {
        if !self.running {
            return;
        }
        self.running = false;
        match self.state {
            State::Master => {
                // RFC 5798 §6.4.3: cancel Adver_Timer, send an ADVERTISEMENT
                // with Priority = 0, go to Initialize.
                self.cancel_timer(Timer::Advertisement, out);
                out.push(Action::SendAdvertisement {
                    priority: PRIORITY_STOP,
                });
            }
            State::Backup => {
                // RFC 5798 §6.4.2: cancel Master_Down_Timer, go to Initialize.
                self.cancel_timer(Timer::MasterDown, out);
            }
            State::Fault | State::Initialize => {}
        }
        self.transition(State::Initialize, out);
    }

    fn on_timer(&mut self, now: Instant, t: Timer, out: &mut Vec<Action>) {
        match self.deadline(t) {
            Some(due) if now >= due => {}
            _ => return, // not armed, or a stale wake-up before the deadline
        }
        match (self.state, t) {
            (State::Backup, Timer::MasterDown) => {
                // RFC 5798 §6.4.2: Master_Down_Timer fires -> send an
                // ADVERTISEMENT, broadcast ARP/NA, set Adver_Timer, Master.
                self.down_deadline = None;
                self.become_master(now, out);
            }
            (State::Master, Timer::Advertisement) => {
                // RFC 5798 §6.4.3: Adver_Timer fires -> send an
                // ADVERTISEMENT, reset Adver_Timer to Advertisement_Interval.
                out.push(Action::SendAdvertisement {
                    priority: self.priority,
                });
                self.set_timer(now, Timer::Advertisement, self.advert_interval, out);
            }
            _ => {
                // A timer armed in a state we have left: forget it.
                match t {
                    Timer::Advertisement => self.adver_deadline = None,
                    Timer::MasterDown => self.down_deadline = None,
                }
            }
        }
    }

    fn on_advert(&mut self, now: Instant, adv: ReceivedAdvert, out: &mut Vec<Action>) {
        match self.state {
            State::Backup => self.backup_rx(now, adv, out),
            State::Master => self.master_rx(now, adv, out),
            // Initialize and Fault ignore advertisements.
            State::Initialize | State::Fault => {}
        }
    }

    fn learn_interval(&mut self, adv: &ReceivedAdvert) {
        // RFC 5798 §6.4.2 / §6.4.3: set Master_Adver_Interval to the Max
        // Advertise Interval in the ADVERTISEMENT. VRRPv2 has no such
        // variable: intervals must match (checked on receive).
        if self.version == Version::V3 && !adv.max_advert_int.is_zero() {
            self.master_adver_interval = adv.max_advert_int;
        }
    }

    fn backup_rx(&mut self, now: Instant, adv: ReceivedAdvert, out: &mut Vec<Action>) {
        if adv.priority == PRIORITY_STOP {
            // RFC 5798 §6.4.2: priority 0 -> Master_Down_Timer = Skew_Time.
            let skew = self.skew_time();
            self.set_timer(now, Timer::MasterDown, skew, out);
            return;
        }
        let lower = adv.priority < self.priority;
        let accept = if !self.preempt || !lower {
            if !lower {
                self.preempt_deadline = None;
            }
            true
        } else if self.preempt_delay.is_zero() {
            false
        } else {
            // keepalived preempt_delay: tolerate the lower-priority Master
            // until the deadline (set now if none is pending).
            let due = *self
                .preempt_deadline
                .get_or_insert_with(|| now.checked_add(self.preempt_delay).unwrap_or(now));
            now < due
        };
        if accept {
            // Preempt_Mode False, or Priority >= local: set
            // Master_Adver_Interval (v3), recompute Skew_Time and
            // Master_Down_Interval, reset Master_Down_Timer.
            self.learn_interval(&adv);
            let down = self.master_down_interval();
            self.set_timer(now, Timer::MasterDown, down, out);
        }
        // Otherwise discard the ADVERTISEMENT (RFC 5798 §6.4.2).
    }

    fn master_rx(&mut self, now: Instant, adv: ReceivedAdvert, out: &mut Vec<Action>) {
        if adv.priority == PRIORITY_STOP {
            // RFC 5798 §6.4.3: send an ADVERTISEMENT, reset Adver_Timer.
            out.push(Action::SendAdvertisement {
                priority: self.priority,
            });
            self.set_timer(now, Timer::Advertisement, self.advert_interval, out);
            return;
        }
        let higher = adv.priority > self.priority
            || (adv.priority == self.priority && addr_greater(adv.source, self.primary));
        if higher {
            // Cancel Adver_Timer, set Master_Adver_Interval (v3), recompute
            // Skew_Time and Master_Down_Interval, set Master_Down_Timer,
            // go to Backup.
            self.cancel_timer(Timer::Advertisement, out);
            self.learn_interval(&adv);
            let down = self.master_down_interval();
            self.set_timer(now, Timer::MasterDown, down, out);
            self.transition(State::Backup, out);
            return;
        }
        // Lower priority, or equal priority from a smaller (or equal)
        // primary address: RFC 5798 §6.4.3 discards it. keepalived answers
        // with an advertisement and its gratuitous ARPs (module docs): so
        // do we, at most once per answer_gap; otherwise discard.
        let due = self
            .last_answer
            .is_none_or(|t| now.saturating_duration_since(t) >= self.answer_gap());
        if due {
            self.last_answer = Some(now);
            out.push(Action::SendAdvertisement {
                priority: self.priority,
            });
            out.push(Action::Announce);
        }
    }

    fn on_priority(&mut self, p: u8) {
        if self.base_priority == PRIORITY_OWNER {
            return;
        }
        self.priority = p.clamp(1, PRIORITY_OWNER - 1);
        // Nothing to send: a Master's next advertisement carries it; a
        // Backup's next Master_Down_Interval uses its skew.
    }

    fn on_fault(&mut self, now: Instant, on: bool, out: &mut Vec<Action>) {
        if self.fault == on {
            return;
        }
        self.fault = on;
        if !self.running {
            return;
        }
        match (on, self.state) {
            (true, State::Master) => {
                // keepalived: leaving MASTER for FAULT sends priority 0 so a
                // Backup takes over after Skew_Time.
                self.cancel_timer(Timer::Advertisement, out);
                out.push(Action::SendAdvertisement {
                    priority: PRIORITY_STOP,
                });
                self.transition(State::Fault, out);
            }
            (true, State::Backup) => {
                self.cancel_timer(Timer::MasterDown, out);
                self.transition(State::Fault, out);
            }
            (false, State::Fault) => self.enter_from_init(now, out),
            _ => {}
        }
    }
}

/// RFC 5798 §6.4.3 tie-break: "the primary IPvX address of the sender is
/// greater than the local primary IPvX address" — compared as unsigned
/// integers in network byte order. Different families never compare
/// greater.
fn addr_greater(sender: IpAddr, local: IpAddr) -> bool {
    match (sender, local) {
        (IpAddr::V4(s), IpAddr::V4(l)) => s.octets() > l.octets(),
        (IpAddr::V6(s), IpAddr::V6(l)) => s.octets() > l.octets(),
        _ => false,
    }
}

/// Skew_Time: v3 `((256 - priority) * master_adver_interval) / 256`
/// (RFC 5798 §6.1); v2 `(256 - priority) / 256` seconds (RFC 3768 §6.1).
/// Nanosecond resolution, truncated.
pub fn skew_time(version: Version, priority: u8, master_adver_interval: Duration) -> Duration {
    let factor = 256 - u128::from(priority);
    let base = match version {
        Version::V3 => master_adver_interval.as_nanos(),
        Version::V2 => 1_000_000_000,
    };
    let nanos = base * factor / 256;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use std::net::Ipv4Addr;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn ip(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, d))
    }

    fn adv(priority: u8, source: IpAddr) -> Input {
        Input::Advertisement(ReceivedAdvert {
            priority,
            max_advert_int: Duration::from_secs(1),
            source,
        })
    }

    fn adv_int(priority: u8, int: Duration) -> Input {
        Input::Advertisement(ReceivedAdvert {
            priority,
            max_advert_int: int,
            source: ip(200),
        })
    }

    /// A clock for tests: a fixed origin plus offsets.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, d: Duration) -> Instant {
            self.0 + d
        }
    }

    fn setup(params: InstanceParams) -> (Machine, Clock) {
        (Machine::new(&params), Clock(Instant::now()))
    }

    fn backup(params: InstanceParams) -> (Machine, Clock) {
        let (mut m, c) = setup(params);
        m.handle(c.at(Duration::ZERO), Input::Startup);
        assert_eq!(m.state(), State::Backup);
        (m, c)
    }

    fn master(params: InstanceParams) -> (Machine, Clock) {
        let (mut m, c) = backup(params);
        let due = m.deadline(Timer::MasterDown).expect("armed");
        m.handle(due, Input::TimerExpired(Timer::MasterDown));
        assert_eq!(m.state(), State::Master);
        (m, c)
    }

    // RFC 5798 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256,
    // Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
    #[test]
    fn timer_values_v3() {
        // priority 100, 1 s: skew = 156/256 s = 0.609375 s; down = 3.609375 s.
        assert_eq!(
            skew_time(Version::V3, 100, Duration::from_secs(1)),
            Duration::from_nanos(609_375_000)
        );
        let (m, _) = setup(v3_v4_params());
        assert_eq!(m.skew_time(), Duration::from_nanos(609_375_000));
        assert_eq!(
            m.master_down_interval(),
            Duration::from_nanos(3_609_375_000)
        );
        // priority 200, 1 s: 56/256 = 0.21875 s; down 3.21875 s.
        assert_eq!(
            skew_time(Version::V3, 200, Duration::from_secs(1)),
            Duration::from_nanos(218_750_000)
        );
        // priority 100, 50 cs: 156 * 0.5 / 256 = 0.3046875 s.
        assert_eq!(
            skew_time(Version::V3, 100, MS(500)),
            Duration::from_nanos(304_687_500)
        );
        // priority 254, 1 s: 2/256 = 7.8125 ms; priority 1: 255/256 s.
        assert_eq!(
            skew_time(Version::V3, 254, Duration::from_secs(1)),
            Duration::from_nanos(7_812_500)
        );
        assert_eq!(
            skew_time(Version::V3, 1, Duration::from_secs(1)),
            Duration::from_nanos(996_093_750)
        );
    }

    // RFC 3768 §6.1: Skew_Time = (256 - Priority) / 256 seconds, independent
    // of the advertisement interval; Master_Down_Interval = 3 * Adver + skew.
    #[test]
    fn timer_values_v2() {
        assert_eq!(
            skew_time(Version::V2, 100, Duration::from_secs(3)),
            Duration::from_nanos(609_375_000)
        );
        let p = InstanceParams {
            advert_interval: Duration::from_secs(2),
            ..v2_params()
        };
        let (m, _) = setup(p);
        assert_eq!(
            m.master_down_interval(),
            Duration::from_nanos(6_609_375_000)
        );
    }

    // RFC 5798 §6.4.1: non-owner startup -> Master_Adver_Interval =
    // Advertisement_Interval, Master_Down_Timer = Master_Down_Interval, Backup.
    #[test]
    fn startup_non_owner_goes_backup() {
        let (mut m, c) = setup(v3_v4_params());
        let a = m.handle(c.at(Duration::ZERO), Input::Startup);
        assert_eq!(
            a,
            vec![
                Action::SetTimer {
                    timer: Timer::MasterDown,
                    after: Duration::from_nanos(3_609_375_000)
                },
                Action::Transition {
                    from: State::Initialize,
                    to: State::Backup
                },
            ]
        );
        // A second Startup is a no-op.
        assert!(m.handle(c.at(MS(1)), Input::Startup).is_empty());
    }

    // RFC 5798 §6.4.1: owner (priority 255) startup -> send advertisement,
    // set Adver_Timer to Advertisement_Interval, go straight to Master.
    #[test]
    fn startup_owner_goes_master() {
        let (mut m, c) = setup(InstanceParams {
            priority: 255,
            ..v3_v4_params()
        });
        let a = m.handle(c.at(Duration::ZERO), Input::Startup);
        assert_eq!(
            a,
            vec![
                Action::SendAdvertisement { priority: 255 },
                Action::SetTimer {
                    timer: Timer::Advertisement,
                    after: Duration::from_secs(1)
                },
                Action::Transition {
                    from: State::Initialize,
                    to: State::Master
                },
            ]
        );
    }

    // keepalived `state MASTER` (not an RFC 5798 rule): a non-owner that is
    // asked to start as Master does what §6.4.1 says for the owner, and
    // steps back on a higher-priority advertisement (§6.4.3).
    #[test]
    fn start_as_master_non_owner() {
        let (mut m, c) = setup(v3_v4_params());
        m.set_start_as_master(true);
        let a = m.handle(c.at(Duration::ZERO), Input::Startup);
        assert_eq!(
            a,
            vec![
                Action::SendAdvertisement { priority: 100 },
                Action::SetTimer {
                    timer: Timer::Advertisement,
                    after: Duration::from_secs(1)
                },
                Action::Transition {
                    from: State::Initialize,
                    to: State::Master
                },
            ]
        );
        m.handle(c.at(MS(10)), adv(200, ip(200)));
        assert_eq!(m.state(), State::Backup);
        // Leaving Fault goes through Backup as usual.
        m.handle(c.at(MS(20)), Input::Fault(true));
        assert_eq!(m.state(), State::Fault);
        m.handle(c.at(MS(30)), Input::Fault(false));
        assert_eq!(m.state(), State::Backup);
    }

    // RFC 5798 §6.4.2: Master_Down_Timer fires -> send advertisement, set
    // Adver_Timer, become Master.
    #[test]
    fn backup_master_down_timer_becomes_master() {
        let (mut m, c) = backup(v3_v4_params());
        // Early (stale) wake-up is ignored.
        assert!(
            m.handle(c.at(MS(3000)), Input::TimerExpired(Timer::MasterDown))
                .is_empty()
        );
        let a = m.handle(
            c.at(Duration::from_nanos(3_609_375_000)),
            Input::TimerExpired(Timer::MasterDown),
        );
        assert_eq!(
            a,
            vec![
                Action::SendAdvertisement { priority: 100 },
                Action::SetTimer {
                    timer: Timer::Advertisement,
                    after: Duration::from_secs(1)
                },
                Action::Transition {
                    from: State::Backup,
                    to: State::Master
                },
            ]
        );
    }

    // RFC 5798 §6.4.3: Adver_Timer fires -> send advertisement, reset timer.
    #[test]
    fn master_adver_timer_sends() {
        let (mut m, _) = master(v3_v4_params());
        let due = m.deadline(Timer::Advertisement).expect("armed");
        let a = m.handle(due, Input::TimerExpired(Timer::Advertisement));
        assert_eq!(
            a,
            vec![
                Action::SendAdvertisement { priority: 100 },
                Action::SetTimer {
                    timer: Timer::Advertisement,
                    after: Duration::from_secs(1)
                },
            ]
        );
        // A MasterDown expiry in Master is ignored (not armed).
        assert!(
            m.handle(due, Input::TimerExpired(Timer::MasterDown))
                .is_empty()
        );
    }

    // RFC 5798 §6.4.2: priority 0 received -> Master_Down_Timer = Skew_Time.
    #[test]
    fn backup_priority_zero_sets_skew() {
        let (mut m, c) = backup(v3_v4_params());
        let a = m.handle(c.at(MS(500)), adv(0, ip(200)));
        assert_eq!(
            a,
            vec![Action::SetTimer {
                timer: Timer::MasterDown,
                after: Duration::from_nanos(609_375_000)
            }]
        );
        assert_eq!(
            m.deadline(Timer::MasterDown),
            Some(c.at(MS(500) + Duration::from_nanos(609_375_000)))
        );
    }

    // RFC 5798 §6.4.2: higher/equal priority advert -> learn
    // Master_Adver_Interval, recompute, reset Master_Down_Timer.
    #[test]
    fn backup_learns_master_adver_interval_v3() {
        let (mut m, c) = backup(v3_v4_params());
        let a = m.handle(c.at(MS(100)), adv_int(150, MS(250)));
        // down = 3 * 0.25 + (156 * 0.25 / 256 = 0.15234375) = 0.90234375 s
        assert_eq!(
            a,
            vec![Action::SetTimer {
                timer: Timer::MasterDown,
                after: Duration::from_nanos(902_343_750)
            }]
        );
        assert_eq!(m.master_adver_interval(), MS(250));
        // Equal priority is accepted too ("greater than or equal").
        let a = m.handle(c.at(MS(200)), adv_int(100, MS(500)));
        assert_eq!(a.len(), 1);
        assert_eq!(m.master_adver_interval(), MS(500));
    }

    // RFC 3768 §6.4.2: v2 has no Master_Adver_Interval; the down interval
    // is always based on the local Advertisement_Interval.
    #[test]
    fn backup_v2_does_not_learn_interval() {
        let (mut m, c) = backup(v2_params());
        let a = m.handle(c.at(MS(100)), adv_int(150, Duration::from_secs(5)));
        assert_eq!(
            a,
            vec![Action::SetTimer {
                timer: Timer::MasterDown,
                after: Duration::from_nanos(3_609_375_000)
            }]
        );
    }

    // RFC 5798 §6.4.2: with Preempt_Mode true, a lower-priority
    // advertisement is discarded (the Master_Down_Timer keeps running and
    // this router takes over when it fires).
    #[test]
    fn backup_preempts_lower_priority_master() {
        let (mut m, c) = backup(v3_v4_params());
        let before = m.deadline(Timer::MasterDown);
        assert!(m.handle(c.at(MS(100)), adv(50, ip(200))).is_empty());
        assert_eq!(m.deadline(Timer::MasterDown), before);
        let due = before.expect("armed");
        m.handle(due, Input::TimerExpired(Timer::MasterDown));
        assert_eq!(m.state(), State::Master);
    }

    // RFC 5798 §6.4.2: Preempt_Mode false -> a lower-priority Master is
    // accepted and kept (timer reset on every advertisement).
    #[test]
    fn preempt_off_keeps_lower_priority_master() {
        let (mut m, c) = backup(InstanceParams {
            preempt: false,
            priority: 200,
            ..v3_v4_params()
        });
        for i in 1..10u64 {
            let a = m.handle(c.at(Duration::from_secs(i)), adv(50, ip(200)));
            assert_eq!(a.len(), 1, "timer reset");
            assert_eq!(
                m.deadline(Timer::MasterDown),
                Some(c.at(Duration::from_secs(i) + m.master_down_interval()))
            );
        }
        assert_eq!(m.state(), State::Backup);
    }

    // RFC 5798 §6.4.3: Master receiving higher priority -> cancel
    // Adver_Timer, learn interval, set Master_Down_Timer, go Backup.
    #[test]
    fn master_yields_to_higher_priority() {
        let (mut m, c) = master(v3_v4_params());
        let a = m.handle(c.at(Duration::from_secs(5)), adv_int(150, MS(2000)));
        assert_eq!(
            a,
            vec![
                Action::CancelTimer {
                    timer: Timer::Advertisement
                },
                // 3 * 2 s + 156 * 2 / 256 s = 6 + 1.21875 s
                Action::SetTimer {
                    timer: Timer::MasterDown,
                    after: Duration::from_nanos(7_218_750_000)
                },
                Action::Transition {
                    from: State::Master,
                    to: State::Backup
                },
            ]
        );
        assert_eq!(m.deadline(Timer::Advertisement), None);
    }

    // RFC 5798 §6.4.3: equal priority and the sender's primary address is
    // greater than ours -> go Backup; smaller -> discard.
    #[test]
    fn master_tie_break_by_primary_address() {
        // Our primary is 192.0.2.10.
        let (mut m, c) = master(v3_v4_params());
        // Smaller address: not discarded in silence but answered (the
        // keepalived behaviour, see master_answers_lower_priority).
        assert_eq!(
            m.handle(c.at(Duration::from_secs(5)), adv(100, ip(9))),
            vec![
                Action::SendAdvertisement { priority: 100 },
                Action::Announce
            ]
        );
        assert_eq!(m.state(), State::Master);
        let a = m.handle(c.at(Duration::from_secs(6)), adv(100, ip(11)));
        assert_eq!(m.state(), State::Backup);
        assert!(a.contains(&Action::Transition {
            from: State::Master,
            to: State::Backup
        }));
        // Numeric, not textual, comparison: 192.0.2.100 > 192.0.2.11.
        assert!(addr_greater(ip(100), ip(11)));
        assert!(!addr_greater(ip(11), ip(100)));
    }

    // RFC 5798 §6.4.3 says a Master discards a lower-priority
    // advertisement. Deliberately not followed (keepalived 2.x default,
    // `lower_prio_no_advert` false and `garp_lower_prio_repeat`): the Master
    // answers at once with an advertisement, so the other Master steps
    // back now, and re-announces the VIPs, so neighbours that learnt the
    // other Master's MAC point back at us. The Adver_Timer keeps its
    // cadence, the state does not change.
    #[test]
    fn master_answers_lower_priority() {
        let (mut m, c) = master(v3_v4_params());
        let due = m.deadline(Timer::Advertisement);
        let a = m.handle(c.at(Duration::from_secs(5)), adv(99, ip(250)));
        assert_eq!(
            a,
            vec![
                Action::SendAdvertisement { priority: 100 },
                Action::Announce
            ]
        );
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.deadline(Timer::Advertisement), due);
    }

    // The answer above (keepalived behaviour, not RFC 5798 §6.4.3) is rate
    // limited: at most one per max(Advertisement_Interval, 1 s); the
    // lower-priority adverts in between are discarded as §6.4.3 says, so a
    // misbehaving peer cannot make the Master flood.
    #[test]
    fn master_answer_is_rate_limited() {
        // 1 s interval: one answer per second.
        let (mut m, c) = master(v3_v4_params());
        assert_eq!(m.answer_gap(), Duration::from_secs(1));
        let t = Duration::from_secs(5);
        assert_eq!(m.handle(c.at(t), adv(50, ip(200))).len(), 2);
        for ms in [1, 100, 500, 999] {
            assert!(
                m.handle(c.at(t + MS(ms)), adv(50, ip(200))).is_empty(),
                "answered again {ms} ms later"
            );
        }
        assert_eq!(
            m.handle(c.at(t + MS(1000)), adv(50, ip(200))),
            vec![
                Action::SendAdvertisement { priority: 100 },
                Action::Announce
            ]
        );
        // 100 ms interval: still at most one per second.
        let (mut m, c) = master(InstanceParams {
            advert_interval: MS(100),
            ..v3_v4_params()
        });
        assert_eq!(m.answer_gap(), Duration::from_secs(1));
        let mut answers = 0;
        for i in 0..30u64 {
            answers += m.handle(c.at(t + MS(100 * i)), adv(50, ip(200))).len() / 2;
        }
        assert_eq!(answers, 3, "30 adverts over 3 s");
        // 3 s interval: one per Advertisement_Interval.
        let (mut m, c) = master(InstanceParams {
            advert_interval: Duration::from_secs(3),
            ..v3_v4_params()
        });
        assert_eq!(m.answer_gap(), Duration::from_secs(3));
        let t = Duration::from_secs(20);
        assert_eq!(m.handle(c.at(t), adv(50, ip(200))).len(), 2);
        assert!(m.handle(c.at(t + MS(2999)), adv(50, ip(200))).is_empty());
        assert_eq!(m.handle(c.at(t + MS(3000)), adv(50, ip(200))).len(), 2);
    }

    // A new mastership (RFC 5798 §6.4.2 Master_Down_Timer) answers the first
    // lower-priority advertisement at once, whatever the previous one did.
    #[test]
    fn master_answer_limit_resets_on_new_mastership() {
        let (mut m, c) = master(v3_v4_params());
        let t = Duration::from_secs(5);
        assert_eq!(m.handle(c.at(t), adv(50, ip(200))).len(), 2);
        // A higher-priority Master appears, then stops (priority 0): we take
        // over after Skew_Time and answer the lower one at once.
        m.handle(c.at(t + MS(10)), adv(200, ip(200)));
        assert_eq!(m.state(), State::Backup);
        m.handle(c.at(t + MS(20)), adv(0, ip(200)));
        let due = m.deadline(Timer::MasterDown).expect("armed");
        m.handle(due, Input::TimerExpired(Timer::MasterDown));
        assert_eq!(m.state(), State::Master);
        assert_eq!(
            m.handle(due + MS(1), adv(50, ip(200))),
            vec![
                Action::SendAdvertisement { priority: 100 },
                Action::Announce
            ]
        );
    }

    // RFC 5798 §6.4.3: Master receiving priority 0 -> send advertisement,
    // reset Adver_Timer.
    #[test]
    fn master_answers_priority_zero() {
        let (mut m, c) = master(v3_v4_params());
        let now = c.at(Duration::from_secs(5));
        let a = m.handle(now, adv(0, ip(200)));
        assert_eq!(
            a,
            vec![
                Action::SendAdvertisement { priority: 100 },
                Action::SetTimer {
                    timer: Timer::Advertisement,
                    after: Duration::from_secs(1)
                },
            ]
        );
        assert_eq!(
            m.deadline(Timer::Advertisement),
            Some(now + Duration::from_secs(1))
        );
    }

    // RFC 5798 §6.4.3: Shutdown in Master -> cancel Adver_Timer, send
    // advertisement with priority 0, go Initialize.
    #[test]
    fn master_shutdown_sends_priority_zero() {
        let (mut m, _) = master(v3_v4_params());
        let now = m.deadline(Timer::Advertisement).expect("armed");
        let a = m.handle(now, Input::Shutdown);
        assert_eq!(
            a,
            vec![
                Action::CancelTimer {
                    timer: Timer::Advertisement
                },
                Action::SendAdvertisement { priority: 0 },
                Action::Transition {
                    from: State::Master,
                    to: State::Initialize
                },
            ]
        );
        // Shutdown again is a no-op; timers expiring afterwards are ignored.
        assert!(m.handle(now, Input::Shutdown).is_empty());
        assert!(
            m.handle(now, Input::TimerExpired(Timer::Advertisement))
                .is_empty()
        );
    }

    // RFC 5798 §6.4.2: Shutdown in Backup -> cancel Master_Down_Timer, go
    // Initialize; a restart goes through §6.4.1 again.
    #[test]
    fn backup_shutdown_and_restart() {
        let (mut m, c) = backup(v3_v4_params());
        let a = m.handle(c.at(MS(10)), Input::Shutdown);
        assert_eq!(
            a,
            vec![
                Action::CancelTimer {
                    timer: Timer::MasterDown
                },
                Action::Transition {
                    from: State::Backup,
                    to: State::Initialize
                },
            ]
        );
        // Advertisements in Initialize are ignored.
        assert!(m.handle(c.at(MS(20)), adv(200, ip(200))).is_empty());
        m.handle(c.at(MS(30)), Input::Startup);
        assert_eq!(m.state(), State::Backup);
    }

    // keepalived FAULT: Master -> Fault sends priority 0 (RFC 5798 §6.4.3
    // shutdown semantics) and cancels Adver_Timer; recovery re-runs §6.4.1.
    #[test]
    fn fault_from_master_and_recovery() {
        let (mut m, c) = master(v3_v4_params());
        let t = c.at(Duration::from_secs(10));
        let a = m.handle(t, Input::Fault(true));
        assert_eq!(
            a,
            vec![
                Action::CancelTimer {
                    timer: Timer::Advertisement
                },
                Action::SendAdvertisement { priority: 0 },
                Action::Transition {
                    from: State::Master,
                    to: State::Fault
                },
            ]
        );
        // In Fault: adverts and timers are ignored, repeated fault too.
        assert!(m.handle(t, adv(200, ip(200))).is_empty());
        assert!(m.handle(t, Input::Fault(true)).is_empty());
        let a = m.handle(t, Input::Fault(false));
        assert_eq!(
            a,
            vec![
                Action::SetTimer {
                    timer: Timer::MasterDown,
                    after: Duration::from_nanos(3_609_375_000)
                },
                Action::Transition {
                    from: State::Fault,
                    to: State::Backup
                },
            ]
        );
    }

    // keepalived FAULT from Backup, and starting while faulted.
    #[test]
    fn fault_from_backup_and_at_startup() {
        let (mut m, c) = backup(v3_v4_params());
        let a = m.handle(c.at(MS(1)), Input::Fault(true));
        assert_eq!(
            a,
            vec![
                Action::CancelTimer {
                    timer: Timer::MasterDown
                },
                Action::Transition {
                    from: State::Backup,
                    to: State::Fault
                },
            ]
        );
        let (mut m, c) = setup(v3_v4_params());
        assert!(m.handle(c.at(MS(0)), Input::Fault(true)).is_empty());
        let a = m.handle(c.at(MS(1)), Input::Startup);
        assert_eq!(
            a,
            vec![Action::Transition {
                from: State::Initialize,
                to: State::Fault
            }]
        );
        // Owner leaving Fault goes straight to Master (§6.4.1 again).
        let (mut m, c) = setup(InstanceParams {
            priority: 255,
            ..v3_v4_params()
        });
        m.handle(c.at(MS(0)), Input::Fault(true));
        m.handle(c.at(MS(1)), Input::Startup);
        m.handle(c.at(MS(2)), Input::Fault(false));
        assert_eq!(m.state(), State::Master);
    }

    // RFC 5798 §6.1/§6.4: the effective priority (tracking) is what is
    // advertised and what Skew_Time uses; the owner ignores tracking.
    #[test]
    fn priority_change_affects_adverts_and_skew() {
        let (mut m, _) = master(v3_v4_params());
        assert!(
            m.handle(Instant::now(), Input::PriorityChanged(80))
                .is_empty()
        );
        let due = m.deadline(Timer::Advertisement).expect("armed");
        let a = m.handle(due, Input::TimerExpired(Timer::Advertisement));
        assert_eq!(a[0], Action::SendAdvertisement { priority: 80 });
        // 176/256 s
        assert_eq!(m.skew_time(), Duration::from_nanos(687_500_000));
        // Clamped: never 0 nor 255.
        m.handle(due, Input::PriorityChanged(0));
        assert_eq!(m.priority(), 1);
        m.handle(due, Input::PriorityChanged(255));
        assert_eq!(m.priority(), 254);
        // Owner ignores it.
        let (mut o, c) = setup(InstanceParams {
            priority: 255,
            ..v3_v4_params()
        });
        o.handle(c.at(MS(0)), Input::PriorityChanged(10));
        assert_eq!(o.priority(), 255);
    }

    // Tracking lowers a Master below a Backup's priority: the Backup
    // (preempt on) discards its adverts and takes over on Master_Down_Timer
    // (RFC 5798 §6.4.2). Conversely a Master seeing a higher one yields.
    #[test]
    fn backup_with_raised_priority_preempts() {
        let (mut m, c) = backup(v3_v4_params());
        let a = m.handle(c.at(MS(100)), adv(120, ip(200)));
        assert_eq!(a.len(), 1); // accepted: 120 >= 100
        m.handle(c.at(MS(150)), Input::PriorityChanged(130));
        assert!(m.handle(c.at(MS(200)), adv(120, ip(200))).is_empty());
    }

    // keepalived preempt_delay: after startup, a lower-priority Master is
    // tolerated until startup + preempt_delay; then its adverts are
    // discarded (RFC 5798 §6.4.2) and Master_Down_Timer takes us to Master.
    #[test]
    fn preempt_delay_after_startup() {
        let (mut m, c) = backup(InstanceParams {
            preempt_delay: Duration::from_secs(10),
            ..v3_v4_params()
        });
        assert_eq!(m.preempt_deadline(), Some(c.at(Duration::from_secs(10))));
        for s in 1..10u64 {
            let a = m.handle(c.at(Duration::from_secs(s)), adv(50, ip(200)));
            assert_eq!(a.len(), 1, "tolerated at {s}s");
        }
        assert!(
            m.handle(c.at(Duration::from_secs(10)), adv(50, ip(200)))
                .is_empty()
        );
        let due = m.deadline(Timer::MasterDown).expect("armed");
        assert_eq!(
            due,
            c.at(Duration::from_secs(9) + Duration::from_nanos(3_609_375_000))
        );
        m.handle(due, Input::TimerExpired(Timer::MasterDown));
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.preempt_deadline(), None);
    }

    // keepalived preempt_delay: "or seeing a lower priority master": after
    // a higher-priority Master (which clears the deadline) drops its
    // priority, the delay starts from the first lower-priority advert.
    #[test]
    fn preempt_delay_from_first_lower_advert() {
        let (mut m, c) = backup(InstanceParams {
            preempt_delay: Duration::from_secs(5),
            ..v3_v4_params()
        });
        m.handle(c.at(Duration::from_secs(1)), adv(200, ip(200)));
        assert_eq!(m.preempt_deadline(), None);
        m.handle(c.at(Duration::from_secs(100)), adv(50, ip(200)));
        assert_eq!(m.preempt_deadline(), Some(c.at(Duration::from_secs(105))));
        assert_eq!(
            m.handle(c.at(Duration::from_secs(104)), adv(50, ip(200)))
                .len(),
            1
        );
        assert!(
            m.handle(c.at(Duration::from_secs(105)), adv(50, ip(200)))
                .is_empty()
        );
    }

    // preempt_delay has no effect with preempt off (keepalived: nopreempt
    // wins).
    #[test]
    fn preempt_delay_ignored_without_preempt() {
        let (mut m, c) = backup(InstanceParams {
            preempt: false,
            preempt_delay: Duration::from_secs(5),
            ..v3_v4_params()
        });
        assert_eq!(m.preempt_deadline(), None);
        assert_eq!(
            m.handle(c.at(Duration::from_secs(50)), adv(50, ip(200)))
                .len(),
            1
        );
    }

    // RFC 5798 §6.4.2 + §6.4.3 together: two machines, no network: the
    // higher priority one ends up Master, the other Backup, and a Master
    // shutdown (priority 0) makes the Backup take over after Skew_Time.
    #[test]
    fn two_routers_converge() {
        let c = Clock(Instant::now());
        let mut a = Machine::new(&InstanceParams {
            priority: 200,
            ..v3_v4_params()
        });
        let mut b = Machine::new(&InstanceParams {
            priority: 100,
            primary_address: ip(20),
            ..v3_v4_params()
        });
        a.handle(c.at(MS(0)), Input::Startup);
        b.handle(c.at(MS(0)), Input::Startup);
        // a's down interval is shorter (3.21875 s < 3.609375 s).
        let due = a.deadline(Timer::MasterDown).expect("armed");
        assert!(due < b.deadline(Timer::MasterDown).expect("armed"));
        a.handle(due, Input::TimerExpired(Timer::MasterDown));
        b.handle(due, adv(200, ip(10)));
        assert_eq!((a.state(), b.state()), (State::Master, State::Backup));
        let t = c.at(Duration::from_secs(5));
        let acts = a.handle(t, Input::Shutdown);
        assert!(acts.contains(&Action::SendAdvertisement { priority: 0 }));
        b.handle(t, adv(0, ip(10)));
        let due = b.deadline(Timer::MasterDown).expect("armed");
        assert_eq!(due, t + Duration::from_nanos(609_375_000));
        b.handle(due, Input::TimerExpired(Timer::MasterDown));
        assert_eq!(b.state(), State::Master);
    }
    // keepalived `state MASTER` on a lower-priority node, or a healed split
    // brain: two Masters. The higher one answers the lower one's advert
    // (keepalived behaviour, see master_answers_lower_priority) and the
    // lower one steps back on that answer (RFC 5798 §6.4.3, higher
    // priority). The Announce is what points the neighbours back at it.
    #[test]
    fn two_masters_resolve_with_announce() {
        let c = Clock(Instant::now());
        let (mut a, _) = master(InstanceParams {
            priority: 200,
            ..v3_v4_params()
        });
        let mut b = Machine::new(&InstanceParams {
            priority: 100,
            primary_address: ip(20),
            ..v3_v4_params()
        });
        b.set_start_as_master(true);
        let t = c.at(Duration::from_secs(10));
        let from_b = b.handle(t, Input::Startup);
        assert!(from_b.contains(&Action::SendAdvertisement { priority: 100 }));
        assert_eq!(b.state(), State::Master);
        let from_a = a.handle(t + MS(1), adv(100, ip(20)));
        assert_eq!(
            from_a,
            vec![
                Action::SendAdvertisement { priority: 200 },
                Action::Announce
            ]
        );
        b.handle(t + MS(2), adv(200, ip(10)));
        assert_eq!((a.state(), b.state()), (State::Master, State::Backup));
    }
}

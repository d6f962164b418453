//! Per-instance VRRP counters: plain data the I/O shell increments and
//! the API reports. Roughly the statistics keepalived keeps per instance
//! (and the VRRPv3 MIB's `vrrpv3StatisticsTable`).

use super::codec::{Decoded, RxError};
use super::machine::{Action, State};
use super::{ChecksumMode, PRIORITY_STOP};

/// Counters for one virtual router instance. All start at zero and only
/// grow (wrapping is not a concern for `u64`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Valid advertisements received (passed decode and check).
    pub adverts_received: u64,
    /// Advertisement packets sent: one per destination the socket took
    /// (each unicast peer counts). Packets that could not be encoded or
    /// sent are not counted here but in the shell's `send_errors`.
    pub adverts_sent: u64,
    /// Valid advertisements received with priority 0.
    pub priority_zero_received: u64,
    /// Advertisement packets sent with priority 0 (counted like
    /// `adverts_sent`).
    pub priority_zero_sent: u64,
    /// v3/IPv4 advertisements accepted only because the other checksum
    /// form was allowed (a peer using the non-configured form).
    pub alternate_checksum_accepted: u64,

    /// Rejected: source/destination/instance family mismatch.
    pub rx_family_mismatch: u64,
    /// Rejected: TTL / hop limit not 255.
    pub rx_bad_ttl: u64,
    /// Rejected: shorter than the fixed header.
    pub rx_too_short: u64,
    /// Rejected: unknown version field.
    pub rx_bad_version: u64,
    /// Rejected: packet type not ADVERTISEMENT.
    pub rx_bad_type: u64,
    /// Rejected: zero address count.
    pub rx_zero_address_count: u64,
    /// Rejected: length does not match the address count.
    pub rx_length_mismatch: u64,
    /// Rejected: checksum.
    pub rx_bad_checksum: u64,
    /// Rejected: VRRPv2 over IPv6.
    pub rx_v2_over_ipv6: u64,
    /// Rejected: v2 auth type 2 (AH) unsupported.
    pub rx_unsupported_auth_type: u64,
    /// Rejected: v2 auth type > 2.
    pub rx_invalid_auth_type: u64,
    /// Rejected: zero advertisement interval.
    pub rx_zero_interval: u64,
    /// Rejected: version differs from the instance's.
    pub rx_version_mismatch: u64,
    /// Rejected: VRID not configured (normally counted per interface by the
    /// shell, since no instance matches).
    pub rx_unknown_vrid: u64,
    /// Rejected: we are the address owner.
    pub rx_local_is_owner: u64,
    /// Rejected: v2 auth type mismatch.
    pub rx_auth_type_mismatch: u64,
    /// Rejected: v2 password mismatch.
    pub rx_auth_mismatch: u64,
    /// Rejected: v2 interval mismatch.
    pub rx_interval_mismatch: u64,
    /// Rejected: address list differs from our VIPs.
    pub rx_address_list_mismatch: u64,
    /// Rejected (unicast mode): the source is not a configured
    /// `unicast_peer`. Counted by the shell, before decoding.
    pub rx_not_unicast_peer: u64,

    /// Answers to lower-priority advertisements while Master (an
    /// advertisement and the VIPs announced again; see [`Action::Announce`]).
    pub lower_priority_answered: u64,

    /// Transitions into Master.
    pub became_master: u64,
    /// Transitions into Backup.
    pub became_backup: u64,
    /// Transitions into Fault.
    pub became_fault: u64,
    /// Transitions into Initialize (shutdowns).
    pub became_initialize: u64,
}

impl Counters {
    /// Advertisements rejected for any reason (the sum of the `rx_*`
    /// counters).
    pub fn rx_rejected(&self) -> u64 {
        [
            self.rx_family_mismatch,
            self.rx_bad_ttl,
            self.rx_too_short,
            self.rx_bad_version,
            self.rx_bad_type,
            self.rx_zero_address_count,
            self.rx_length_mismatch,
            self.rx_bad_checksum,
            self.rx_v2_over_ipv6,
            self.rx_unsupported_auth_type,
            self.rx_invalid_auth_type,
            self.rx_zero_interval,
            self.rx_version_mismatch,
            self.rx_unknown_vrid,
            self.rx_local_is_owner,
            self.rx_auth_type_mismatch,
            self.rx_auth_mismatch,
            self.rx_interval_mismatch,
            self.rx_address_list_mismatch,
            self.rx_not_unicast_peer,
        ]
        .iter()
        .sum()
    }

    /// Count a rejected packet under its reason.
    pub fn record_rx_error(&mut self, e: &RxError) {
        let c = match e {
            RxError::AddressFamilyMismatch => &mut self.rx_family_mismatch,
            RxError::BadTtl(_) => &mut self.rx_bad_ttl,
            RxError::TooShort(_) => &mut self.rx_too_short,
            RxError::BadVersion(_) => &mut self.rx_bad_version,
            RxError::BadType(_) => &mut self.rx_bad_type,
            RxError::ZeroAddressCount => &mut self.rx_zero_address_count,
            RxError::LengthMismatch { .. } => &mut self.rx_length_mismatch,
            RxError::BadChecksum(_) => &mut self.rx_bad_checksum,
            RxError::V2OverIpv6 => &mut self.rx_v2_over_ipv6,
            RxError::UnsupportedAuthType => &mut self.rx_unsupported_auth_type,
            RxError::InvalidAuthType(_) => &mut self.rx_invalid_auth_type,
            RxError::ZeroInterval => &mut self.rx_zero_interval,
            RxError::VersionMismatch { .. } => &mut self.rx_version_mismatch,
            RxError::UnknownVrid(_) => &mut self.rx_unknown_vrid,
            RxError::LocalIsOwner => &mut self.rx_local_is_owner,
            RxError::AuthTypeMismatch { .. } => &mut self.rx_auth_type_mismatch,
            RxError::AuthMismatch => &mut self.rx_auth_mismatch,
            RxError::IntervalMismatch { .. } => &mut self.rx_interval_mismatch,
            RxError::AddressListMismatch => &mut self.rx_address_list_mismatch,
        };
        *c += 1;
    }

    /// Count a valid received advertisement. `configured` is the instance's
    /// v3/IPv4 checksum mode, to spot peers using the other form.
    pub fn record_received(&mut self, d: &Decoded, configured: ChecksumMode) {
        self.adverts_received += 1;
        if d.advert.priority == PRIORITY_STOP {
            self.priority_zero_received += 1;
        }
        if d.v4_checksum.is_some_and(|m| m != configured) {
            self.alternate_checksum_accepted += 1;
        }
    }

    /// Count one advertisement packet with `priority` that the socket
    /// accepted (call it once per destination actually sent to).
    pub fn record_sent(&mut self, priority: u8) {
        self.adverts_sent += 1;
        if priority == PRIORITY_STOP {
            self.priority_zero_sent += 1;
        }
    }

    /// Count what a machine action implies (transitions, answers). Call it
    /// for each action the shell carried out. A
    /// [`Action::SendAdvertisement`] counts nothing here: the shell counts
    /// the packets it actually sent with [`Counters::record_sent`].
    pub fn record_action(&mut self, a: &Action) {
        match a {
            Action::Transition { to, .. } => match to {
                State::Master => self.became_master += 1,
                State::Backup => self.became_backup += 1,
                State::Fault => self.became_fault += 1,
                State::Initialize => self.became_initialize += 1,
            },
            Action::Announce => self.lower_priority_answered += 1,
            Action::SendAdvertisement { .. }
            | Action::SetTimer { .. }
            | Action::CancelTimer { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Advertisement;
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_each_reason_separately() {
        let errors = [
            RxError::AddressFamilyMismatch,
            RxError::BadTtl(1),
            RxError::TooShort(0),
            RxError::BadVersion(4),
            RxError::BadType(2),
            RxError::ZeroAddressCount,
            RxError::LengthMismatch {
                expected: 1,
                got: 2,
            },
            RxError::BadChecksum(0),
            RxError::V2OverIpv6,
            RxError::UnsupportedAuthType,
            RxError::InvalidAuthType(3),
            RxError::ZeroInterval,
            RxError::VersionMismatch {
                expected: super::super::Version::V3,
                got: super::super::Version::V2,
            },
            RxError::UnknownVrid(9),
            RxError::LocalIsOwner,
            RxError::AuthTypeMismatch {
                expected: 0,
                got: 1,
            },
            RxError::AuthMismatch,
            RxError::IntervalMismatch {
                expected: Duration::from_secs(1),
                got: Duration::from_secs(2),
            },
            RxError::AddressListMismatch,
        ];
        let mut c = Counters::default();
        let mut prev = c;
        for e in &errors {
            c.record_rx_error(e);
            assert_ne!(c, prev, "{e} must bump a counter");
            prev = c;
        }
        // Every reason hit a distinct counter: recording all again doubles
        // the sum exactly when each field is 0 or 1 now.
        let fields = [
            c.rx_family_mismatch,
            c.rx_bad_ttl,
            c.rx_too_short,
            c.rx_bad_version,
            c.rx_bad_type,
            c.rx_zero_address_count,
            c.rx_length_mismatch,
            c.rx_bad_checksum,
            c.rx_v2_over_ipv6,
            c.rx_unsupported_auth_type,
            c.rx_invalid_auth_type,
            c.rx_zero_interval,
            c.rx_version_mismatch,
            c.rx_unknown_vrid,
            c.rx_local_is_owner,
            c.rx_auth_type_mismatch,
            c.rx_auth_mismatch,
            c.rx_interval_mismatch,
            c.rx_address_list_mismatch,
        ];
        assert!(fields.iter().all(|&f| f == 1));
        assert_eq!(fields.len(), errors.len());
        // rx_rejected sums them all, the shell's unicast-peer counter too.
        assert_eq!(c.rx_rejected(), errors.len() as u64);
        c.rx_not_unicast_peer += 1;
        assert_eq!(c.rx_rejected(), errors.len() as u64 + 1);
    }

    #[test]
    fn counts_traffic_and_transitions() {
        let mut c = Counters::default();
        // The action alone counts no packet; each packet sent does.
        c.record_action(&Action::SendAdvertisement { priority: 100 });
        assert_eq!(c.adverts_sent, 0);
        c.record_sent(0);
        c.record_sent(100);
        c.record_action(&Action::Transition {
            from: State::Backup,
            to: State::Master,
        });
        c.record_action(&Action::Announce);
        assert_eq!(c.lower_priority_answered, 1);
        let d = Decoded {
            advert: Advertisement {
                version: super::super::Version::V3,
                vrid: 1,
                priority: 0,
                interval: Duration::from_secs(1),
                auth: super::super::Auth::None,
                addresses: vec![],
            },
            v4_checksum: Some(ChecksumMode::Rfc9568),
        };
        c.record_received(&d, ChecksumMode::PseudoHeader);
        assert_eq!(
            (
                c.adverts_sent,
                c.priority_zero_sent,
                c.became_master,
                c.adverts_received,
                c.priority_zero_received,
                c.alternate_checksum_accepted
            ),
            (2, 1, 1, 1, 1, 1)
        );
    }
}

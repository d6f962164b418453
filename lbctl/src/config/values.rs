//! Parsers for the value syntaxes of lb.toml: durations, addresses with a
//! prefix, names. Each returns an error message saying what was expected.

use std::net::IpAddr;
use std::time::Duration;

use super::model::VirtualIpAddress;

const DURATION_HINT: &str = "expected a number and a unit (ms, s, m, h), like \"500ms\" or \"2s\"";

/// Parses `"500ms"`, `"2s"`, `"1.5s"`, `"1m30s"`, `"0"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration \"{text}\": {DURATION_HINT}");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
            return Err(bad());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut frac_ns: u128 = 0;
        if !frac.is_empty() {
            let f: u128 = frac.parse().map_err(|_| bad())?;
            frac_ns = f * unit_ns / 10u128.pow(frac.len() as u32);
        }
        total = int
            .checked_mul(unit_ns)
            .and_then(|v| v.checked_add(frac_ns))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(bad)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    // The remainder is below 1e9, so it fits.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way lb.toml writes it.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{d:?}")
    }
}

/// Parses an IPv4 or IPv6 address.
pub(crate) fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map_err(|_| format!("invalid IP address \"{text}\": expected an IPv4 or IPv6 address"))
}

/// Rejects addresses that cannot be a VIP, backend or peer.
pub(crate) fn check_unicast(addr: &IpAddr) -> Result<(), String> {
    let bad = addr.is_unspecified()
        || addr.is_multicast()
        || matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        Err(format!(
            "{addr} cannot be used here: expected a unicast address (not unspecified, multicast or broadcast)"
        ))
    } else {
        Ok(())
    }
}

/// Parses a keepalived-style `virtual_ipaddress` entry:
/// `ADDR[/PREFIX][ dev IFACE]`.
pub(crate) fn parse_virtual_ip(text: &str) -> Result<VirtualIpAddress, String> {
    let expected = "expected \"ADDRESS[/PREFIX] [dev INTERFACE]\", like \"10.0.0.100/32\" or \"2001:db8::100/128 dev eth1\"";
    let mut words = text.split_whitespace();
    let Some(addr_part) = words.next() else {
        return Err(format!("empty virtual_ipaddress entry: {expected}"));
    };
    let dev = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some("dev"), Some(ifname), None) => {
            check_ifname(ifname)?;
            Some(ifname.to_owned())
        }
        _ => {
            return Err(format!(
                "invalid virtual_ipaddress \"{text}\": {expected} (only the dev option is supported)"
            ));
        }
    };
    let (addr_text, prefix_text) = match addr_part.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (addr_part, None),
    };
    let address = addr_text.parse::<IpAddr>().map_err(|_| {
        format!("invalid IP address \"{addr_text}\" in virtual_ipaddress: {expected}")
    })?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len = match prefix_text {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "invalid prefix length \"/{p}\" for {address}: expected 0 to {max}"
                ));
            }
        },
    };
    check_unicast(&address)?;
    Ok(VirtualIpAddress {
        address,
        prefix_len,
        dev,
    })
}

/// Checks a Linux interface name (what the kernel's `dev_valid_name` accepts).
pub(crate) fn check_ifname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid interface name \"{name}\": expected 1 to 15 bytes without '/', ':' or whitespace"
        ))
    }
}

/// Checks the name of a VIP, VRRP instance or script.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name \"{name}\": expected 1 to 64 characters among A-Z a-z 0-9 _ - ."
        ))
    }
}

/// Whether `n` is prime (trial division; `n` is small here).
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Largest prime `<= n`, if any, for "did you mean" hints.
pub(crate) fn prime_at_most(n: u64) -> Option<u64> {
    (2..=n).rev().find(|&k| is_prime(k))
}

/// Smallest prime `>= n`.
pub(crate) fn prime_at_least(n: u64) -> u64 {
    (n.max(2)..).find(|&k| is_prime(k)).unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2s"), Ok(ms(2000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(".25s"), Ok(ms(250)));
        for bad in [
            "",
            "2",
            "s",
            "2x",
            "1.2.3s",
            "-1s",
            "2 s s",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_duration(ms(1500)), "1500ms");
        assert_eq!(fmt_duration(ms(2000)), "2s");
    }

    #[test]
    fn virtual_ips() {
        let v = parse_virtual_ip("10.0.0.100/24 dev eth1").expect("valid");
        assert_eq!(v.address, "10.0.0.100".parse::<IpAddr>().expect("ip"));
        assert_eq!(v.prefix_len, 24);
        assert_eq!(v.dev.as_deref(), Some("eth1"));
        let v = parse_virtual_ip("2001:db8::1").expect("valid");
        assert_eq!(v.prefix_len, 128);
        assert!(parse_virtual_ip("10.0.0.1/33").is_err());
        assert!(parse_virtual_ip("10.0.0.1 label x").is_err());
        assert!(parse_virtual_ip("224.0.0.18").is_err());
    }

    #[test]
    fn primes() {
        assert!(is_prime(13) && is_prime(65537) && is_prime(131071));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(9));
        assert_eq!(prime_at_most(65536), Some(65521));
        assert_eq!(prime_at_least(65536), 65537);
    }
}

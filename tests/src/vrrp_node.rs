//! Reading what the `vrrp-node` test binary writes: one stats line per
//! instance, `NAME STATE PRIORITY Counters { name: N, .. } ShellCounters { .. }`.

/// The counter `name` in a stats line (`name: N`), if it is there.
pub fn field(stats: &str, name: &str) -> Option<u64> {
    let at = stats.find(&format!("{name}: "))? + name.len() + 2;
    stats[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_counters_by_name() {
        let s = "VI_1 Backup 100 Counters { adverts_received: 12, rx_auth_mismatch: 0 } ShellCounters { x: 3 }";
        assert_eq!(field(s, "adverts_received"), Some(12));
        assert_eq!(field(s, "rx_auth_mismatch"), Some(0));
        assert_eq!(field(s, "x"), Some(3));
        assert_eq!(field(s, "missing"), None);
    }
}

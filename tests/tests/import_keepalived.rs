//! Migrating from keepalived, for real (needs root, keepalived, iproute2):
//! the example keepalived.conf passes keepalived's own config test, and a
//! node whose keepalived.conf went through `lbctl import-keepalived` pairs
//! with the keepalived node that still runs the other half of the pair:
//! it stays backup while keepalived is master, takes the VIP when keepalived
//! stops, and gives it back when keepalived returns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use lbctl::import::keepalived::{self, FileIncludes, Options};
use nix::sys::signal::Signal;
use tests::netns::{ChildGuard, NetNs, unique_name, veth_pair, wait_until};
use tests::vrrp_node::field;

const POLL: Duration = Duration::from_millis(20);

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/keepalived/keepalived.conf")
}

/// A temp dir of this test, removed on drop (its logs printed first when
/// the test fails).
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Result<Dir> {
        let p = std::env::temp_dir().join(unique_name(test, "files"));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
        Ok(Dir(p))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(entries) = std::fs::read_dir(&self.0)
        {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                eprintln!("==== {} ====\n{text}", e.path().display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn keepalived_accepts_the_example_it_is_converted_from() -> Result<()> {
    let ex = example();
    let ex = ex.to_str().context("path")?;
    // The interfaces the example names exist in this namespace.
    let ns = NetNs::new(&unique_name("imp-ex", "a"))?;
    ns.run(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])?;
    let out = ns.exec(&["keepalived", "-t", "-f", ex])?;
    ensure!(
        out.status.success(),
        "keepalived -t refused the example: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: without eth1 (tracked by VI_1), keepalived refuses it.
    let bare = NetNs::new(&unique_name("imp-ex", "b"))?;
    bare.run(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth9",
    ])?;
    let out = bare.exec(&["keepalived", "-t", "-f", ex])?;
    ensure!(
        !out.status.success(),
        "keepalived -t accepted a missing eth1"
    );
    Ok(())
}

/// Both halves of a keepalived pair; `prio` and `state` differ. Version 2
/// with PASS authentication, or version 3 (which has none).
fn pair_conf(version: u8, state: &str, prio: u8, me: &str, peer: &str) -> String {
    let auth = if version == 2 {
        "  authentication {\n    auth_type PASS\n    auth_pass m1grate\n  }\n"
    } else {
        ""
    };
    format!(
        "global_defs {{\n  router_id {state}\n  script_user root\n  enable_script_security\n  vrrp_version {version}\n}}\n\
         vrrp_instance VI_7 {{\n  state {state}\n  interface eth0\n  virtual_router_id 77\n\
         \x20 priority {prio}\n  advert_int 1\n{auth}\
         \x20 unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n\
         \x20 virtual_ipaddress {{\n    10.78.0.100/32 dev eth0\n  }}\n  garp_master_delay 1\n}}\n\
         virtual_server 10.78.0.100 80 {{\n  delay_loop 1\n  lb_kind DR\n  protocol TCP\n\
         \x20 real_server 10.78.1.1 80 {{\n    weight 1\n  }}\n}}\n"
    )
}

fn start_keepalived(ns: &NetNs, dir: &Path, conf: &str) -> Result<ChildGuard> {
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, conf)?;
    let log = std::fs::File::create(dir.join("keepalived.log"))?;
    let child = ns
        .command("keepalived")
        .args(["-n", "-l", "-D", "-P", "-f"])
        .arg(&path)
        .arg("-p")
        .arg(dir.join("k.pid"))
        .arg("-r")
        .arg(dir.join("k.vrrp.pid"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start keepalived")?;
    Ok(ChildGuard::new(child))
}

#[test]
fn converted_node_pairs_with_the_keepalived_node_it_replaces() -> Result<()> {
    for version in [2, 3] {
        pair(version).with_context(|| format!("VRRP version {version}"))?;
    }
    Ok(())
}

fn pair(version: u8) -> Result<()> {
    let (addr_a, addr_b, vip) = ("10.78.0.1", "10.78.0.2", "10.78.0.100");
    let a = NetNs::new(&unique_name(&format!("imp-pair{version}"), "a"))?;
    let b = NetNs::new(&unique_name(&format!("imp-pair{version}"), "b"))?;
    veth_pair(&a, "eth0", &b, "eth0")?;
    for (ns, addr) in [(&a, addr_a), (&b, addr_b)] {
        ns.no_dad("eth0")?;
        ns.addr_add("eth0", &format!("{addr}/24"))?;
        ns.link_up("eth0")?;
    }
    let dir_a = Dir::new(&format!("imp-pair{version}-a"))?;
    let dir_b = Dir::new(&format!("imp-pair{version}-b"))?;

    // Node A stays on keepalived, as master.
    let mut ka = start_keepalived(
        &a,
        &dir_a.0,
        &pair_conf(version, "MASTER", 150, addr_a, addr_b),
    )?;
    ensure!(
        wait_until(Duration::from_secs(10), POLL, || a.has_addr(vip)).is_some(),
        "keepalived never took the VIP"
    );

    // Node B's keepalived.conf, converted, runs lbctl's VRRP.
    let kconf = dir_b.0.join("keepalived.conf");
    std::fs::write(&kconf, pair_conf(version, "BACKUP", 100, addr_b, addr_a))?;
    let conv = keepalived::convert(
        kconf.to_str().context("path")?,
        &std::fs::read_to_string(&kconf)?,
        &FileIncludes,
        &Options::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let toml = dir_b.0.join("lb.toml");
    std::fs::write(&toml, &conv.toml)?;
    let stats = dir_b.0.join("node.stats");
    let log = std::fs::File::create(dir_b.0.join("lbctl.log"))?;
    let node = b
        .command(env!("CARGO_BIN_EXE_vrrp-node"))
        .arg(&toml)
        .arg(&stats)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start vrrp-node")?;
    let _node = ChildGuard::new(node);
    let read = || std::fs::read_to_string(&stats).unwrap_or_default();

    // Several Master_Down_Intervals (3 s + skew): B hears A and stays backup.
    std::thread::sleep(Duration::from_millis(4500));
    let s = read();
    ensure!(s.starts_with("VI_7 Backup "), "not backup: {s}");
    ensure!(a.has_addr(vip) && !b.has_addr(vip), "the VIP moved");
    ensure!(field(&s, "adverts_received").unwrap_or(0) >= 3, "{s}");
    let converted = lbctl::config::load(&toml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let inst = converted.vrrp_instance("VI_7").context("VI_7")?;
    ensure!(
        u8::from(inst.version == lbctl::config::VrrpVersion::V3) + 2 == version,
        "converted to the wrong version: {:?}",
        inst.version
    );
    for bad in [
        "rx_auth_mismatch",
        "rx_version_mismatch",
        "rx_interval_mismatch",
        "rx_not_unicast_peer",
        "rx_address_list_mismatch",
    ] {
        ensure!(field(&s, bad) == Some(0), "{bad}: {s}");
    }

    // keepalived stops (priority 0): B takes the VIP at once.
    ka.signal(Signal::SIGTERM)?;
    ensure!(
        wait_until(Duration::from_secs(3), POLL, || b.has_addr(vip)
            && !a.has_addr(vip))
        .is_some(),
        "the converted node did not take over: {}",
        read()
    );
    ensure!(
        ka.wait_exit(Duration::from_secs(10)),
        "keepalived did not exit"
    );

    // keepalived returns with the higher priority and preempts: B gives it back.
    let _ka = start_keepalived(
        &a,
        &dir_a.0,
        &pair_conf(version, "MASTER", 150, addr_a, addr_b),
    )?;
    ensure!(
        wait_until(Duration::from_secs(10), POLL, || a.has_addr(vip)
            && !b.has_addr(vip))
        .is_some(),
        "the converted node did not yield to keepalived: {}",
        read()
    );
    ensure!(
        wait_until(Duration::from_secs(2), POLL, || read()
            .starts_with("VI_7 Backup "))
        .is_some(),
        "{}",
        read()
    );
    Ok(())
}

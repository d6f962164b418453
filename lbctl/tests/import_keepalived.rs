//! `lbctl import-keepalived` as an operator runs it: the example
//! keepalived.conf to a file that `lbctl check` accepts, warnings with their
//! file:line:column, includes, and refusals that write nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LBCTL: &str = env!("CARGO_BIN_EXE_lbctl");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/keepalived/keepalived.conf")
}

/// A temp dir of this test, removed on drop (also when the test fails).
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("lbctl-import-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lbctl(args: &[&str]) -> Output {
    Command::new(LBCTL)
        .args(args)
        .output()
        .expect("running lbctl")
}

/// `lbctl import-keepalived SRC [-o OUT] [EXTRA...]`.
fn import(src: &Path, out: Option<&Path>, extra: &[&str]) -> Output {
    let mut args = vec!["import-keepalived", src.to_str().expect("path")];
    if let Some(o) = out {
        args.extend(["-o", o.to_str().expect("path")]);
    }
    args.extend(extra);
    lbctl(&args)
}

/// The example, with the outer source its TUN virtual server needs.
const TUN_SOURCE: [&str; 2] = ["--ipip-source", "192.168.1.10"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn example_converts_to_a_config_that_checks() {
    let d = Dir::new("example");
    let out = d.path("lb.toml");
    let ex = example();
    let r = import(&ex, Some(&out), &TUN_SOURCE);
    let err = text(&r.stderr);
    assert!(r.status.success(), "{err}");
    // Warnings name the keepalived file's line and column.
    assert!(
        err.contains("keepalived.conf:49:4: warning: notify_master not translated"),
        "{err}"
    );
    assert!(err.contains("wrote"), "{err}");
    let r = lbctl(&["check", "--config", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        text(&r.stdout).contains("OK (2 VIPs, 1 VRRP instances)"),
        "{}",
        text(&r.stdout)
    );
    // The same text on standard output without -o.
    let r = import(&ex, None, &TUN_SOURCE);
    assert!(r.status.success());
    assert_eq!(text(&r.stdout), std::fs::read_to_string(&out).unwrap());
    // An existing file is left alone.
    std::fs::write(&out, "mine").unwrap();
    let r = import(&ex, Some(&out), &TUN_SOURCE);
    assert!(!r.status.success());
    assert!(text(&r.stderr).contains("existing file is left alone"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine");
}

#[test]
fn includes_are_followed_relative_to_the_including_file() {
    let d = Dir::new("include");
    let main = d.write(
        "etc/keepalived.conf",
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 7\n  virtual_ipaddress {\n    10.0.0.100\n    10.0.0.101\n  }\n}\ninclude conf.d/{a,b*}.conf\n",
    );
    d.write(
        "etc/conf.d/a.conf",
        "virtual_server 10.0.0.100 80 {\n  lb_kind DR\n  real_server 10.0.1.1 80 {\n    TCP_CHECK {\n      connect_timeout 1\n    }\n  }\n}\n",
    );
    d.write(
        "etc/conf.d/b.conf",
        "virtual_server 10.0.0.101 443 {\n  lb_kind DR\n  real_server 10.0.1.2 443 {\n    weight 3\n    bogus_option 1\n  }\n}\n",
    );
    let out = d.path("lb.toml");
    let r = import(&main, Some(&out), &[]);
    let err = text(&r.stderr);
    assert!(r.status.success(), "{err}");
    // A warning in an included file names that file.
    assert!(
        err.contains("conf.d/b.conf:5:5: warning: bogus_option not translated"),
        "{err}"
    );
    let toml = std::fs::read_to_string(&out).unwrap();
    assert!(toml.contains("name = \"vs-10.0.0.100-80\""), "{toml}");
    assert!(toml.contains("name = \"vs-10.0.0.101-443\""), "{toml}");
    let r = lbctl(&["check", "--config", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r.stderr));

    // An include that matches nothing is an error, not a silent gap.
    let lone = d.write("lone.conf", "include nothing/*.conf\n");
    let r = import(&lone, None, &[]);
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("lone.conf:1:9: include \"nothing/*.conf\""),
        "{}",
        text(&r.stderr)
    );
}

#[test]
fn untranslatable_input_writes_nothing() {
    let d = Dir::new("refuse");
    let src = d.write(
        "k.conf",
        "vrrp_instance V {\n  interface eth0\n  virtual_router_id 7\n  virtual_ipaddress {\n    10.0.0.1\n  }\n}\n\
         virtual_server 10.0.0.1 80 {\n  lb_kind NAT\n  real_server 10.0.1.1 8080 {\n  }\n}\n",
    );
    let out = d.path("lb.toml");
    let r = import(&src, Some(&out), &[]);
    assert!(!r.status.success());
    let err = text(&r.stderr);
    assert!(
        err.contains("k.conf:10:24: error: real_server port 8080 differs"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!out.exists());

    // Values keepalived would refuse too: the converted config does not
    // validate, and the error points into the keepalived file.
    let vrid = d.write(
        "vrid.conf",
        "vrrp_instance V {\n  interface eth0\n  virtual_router_id 300\n  virtual_ipaddress {\n    10.0.0.1\n  }\n}\n",
    );
    let r = import(&vrid, Some(&out), &[]);
    assert!(!r.status.success());
    let err = text(&r.stderr);
    assert!(err.contains("virtual_router_id"), "{err}");
    assert!(err.contains("(converted from "), "{err}");
    assert!(err.contains("vrid.conf:1:1)"), "{err}");
    assert!(!out.exists());

    // Syntax errors too.
    let bad = d.write("bad.conf", "vrrp_instance V {\n");
    let r = import(&bad, None, &[]);
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("bad.conf:1:17: this { is never closed"),
        "{}",
        text(&r.stderr)
    );
    assert!(r.stdout.is_empty());
}

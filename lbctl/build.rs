//! Builds `lb-ebpf` for the BPF target with aya-build and leaves the objects
//! in `OUT_DIR/lb-ebpf` and `OUT_DIR/lb-bench` (the bench-only programs),
//! where `src/dataplane/xdp.rs` embeds them.
//!
//! Toolchain: `LBCTL_EBPF_TOOLCHAIN` names the rustup toolchain that builds
//! the eBPF crate. Without it, `lbctl-ebpf` is used when `cargo xtask setup`
//! has linked it (Debian's rustc-web on offline machines, nightly with
//! rust-src elsewhere), and plain `nightly` otherwise.
//! `AYA_BUILD_SKIP=1` skips the eBPF build (clippy, docs, pure unit tests):
//! an empty object is embedded, and loading it fails with a clear error.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const DEFAULT_LINKED_TOOLCHAIN: &str = "lbctl-ebpf";

fn linked_toolchain_exists(name: &str) -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LBCTL_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("lbctl has no parent directory"))?;
    let ebpf_dir = root.join("lb-ebpf");
    let common_dir = root.join("lb-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("lb-ebpf");

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // aya-build returns early without an object; embed an empty one so
        // the crate still compiles for clippy and pure unit tests.
        fs::write(&object, b"").context("writing placeholder eBPF object")?;
        fs::write(out_dir.join("lb-bench"), b"").context("writing placeholder bench object")?;
        println!("cargo:rustc-cfg=lbctl_ebpf_skipped");
    }
    println!("cargo::rustc-check-cfg=cfg(lbctl_ebpf_skipped)");
    if skip {
        return Ok(());
    }

    let toolchain_name = match env::var("LBCTL_EBPF_TOOLCHAIN") {
        Ok(t) if !t.is_empty() => t,
        _ if linked_toolchain_exists(DEFAULT_LINKED_TOOLCHAIN) => {
            DEFAULT_LINKED_TOOLCHAIN.to_owned()
        }
        _ => "nightly".to_owned(),
    };
    // Debian's rustc-web is a stable compiler: RUSTC_BOOTSTRAP=1 lets it build
    // `core` from rust-src (-Z build-std=core), which the BPF target needs.
    // On a nightly toolchain it changes nothing.
    if env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: build scripts run single-threaded at this point; nothing
        // else reads or writes the environment concurrently.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let ebpf_dir_str = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "lb-ebpf",
            root_dir: ebpf_dir_str,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain_name),
    )
    .with_context(|| {
        format!(
            "building lb-ebpf with toolchain `{toolchain_name}` failed; run `cargo xtask setup` \
             or set LBCTL_EBPF_TOOLCHAIN (AYA_BUILD_SKIP=1 skips the eBPF build)"
        )
    })
}

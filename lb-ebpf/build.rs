//! Rebuild when bpf-linker changes (it does the final link of the object).
fn main() {
    if let Ok(p) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

//! Rebuild when bpf-linker changes (it does the final code generation).
//!
//! Not used: LLVM 22's `allows-misaligned-mem-access`. It would turn byte-wise
//! packet access into word access, but it also lets LLVM place stack slots
//! and spills at unaligned offsets, which the verifier always rejects.
fn main() {
    if let Ok(p) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

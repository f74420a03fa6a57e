// Rebuild when bpf-linker changes (it is an undeclared build tool of this crate).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // Packet headers sit at any alignment: let LLVM read a 4-byte address word with one load
    // instead of four byte loads and six shifts/ors (the early filter's main cost). The
    // kernel allows misaligned packet and map-value loads on architectures with efficient
    // unaligned access (x86_64, arm64); stack accesses stay aligned.
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}

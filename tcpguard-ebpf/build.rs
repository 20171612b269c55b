use which::which;

/// Building this crate needs `bpf-linker`; say so clearly instead of failing
/// deep inside rustc. `cargo xtask` installs it.
fn main() {
    let linker = which("bpf-linker")
        .expect("bpf-linker not found in PATH: run `cargo xtask prereqs` (installs bpf-linker@0.10.4)");
    println!("cargo:rerun-if-changed={}", linker.display());
}

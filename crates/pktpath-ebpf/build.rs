//! Rebuilds the eBPF objects when bpf-linker changes (it is the linker of the bpf targets).
use which::which;

fn main() {
    // bpf-linker is only needed (and only looked up) when building for a bpf target.
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_arch == "bpf" {
        match which("bpf-linker") {
            Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
            Err(err) => panic!("bpf-linker not found ({err}): run scripts/bootstrap.sh"),
        }
    }
}

//! One RAII guard per kind of kernel change. Each undoes its change on drop; an undo that
//! fails because the object already went away with its namespace is not an error.

use std::path::PathBuf;

use pktpath_core::sys::{mounts::PseudoFs, netns::NetNs};

use crate::{
    names,
    run::{cmd, must},
};

fn undo(what: &str, r: Result<String, String>) {
    if let Err(e) = r {
        // Objects inside a namespace vanish with it; anything else is worth a line.
        if !e.contains("Cannot find") && !e.contains("No such") && !e.contains("does not exist") {
            eprintln!("cleanup of {what}: {e}");
        }
    }
}

/// A named network namespace (`ip netns add`), with loopback up and IPv6 duplicate address
/// detection off; deleted on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    pub fn new(label: &str) -> Self {
        let name = names::netns(label);
        must("ip", &["netns", "add", &name]);
        let guard = Self { name };
        must("ip", &["-n", &guard.name, "link", "set", "lo", "up"]);
        // No duplicate address detection: link-local addresses would stay tentative for a
        // second or two and IPv6 neighbour discovery (so forwarding) would stall meanwhile.
        // These sysctls live and die with the namespace.
        let ns = guard.handle();
        for key in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{key}/accept_dad");
            ns.run(|| std::fs::write(&path, "0"))
                .expect("enter namespace")
                .unwrap_or_else(|e| panic!("write {path}: {e}"));
        }
        guard
    }

    /// An open handle on the namespace.
    pub fn handle(&self) -> NetNs {
        NetNs::from_name(&self.name).expect("open test namespace")
    }

    /// The namespace's inode, as /run/netns/NAME reports it.
    pub fn inode(&self) -> u64 {
        self.handle().inode()
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        undo(
            &format!("netns {}", self.name),
            cmd("ip", &["netns", "del", &self.name]),
        );
    }
}

/// A veth pair with each end in a namespace, both up; deleted on drop.
#[derive(Debug)]
pub struct VethGuard {
    pub ns_a: String,
    pub a: String,
    pub ns_b: String,
    pub b: String,
}

impl VethGuard {
    pub fn new(ns_a: &str, ns_b: &str) -> Self {
        let (a, b) = (names::ifname('a'), names::ifname('b'));
        must(
            "ip",
            &[
                "link", "add", &a, "netns", ns_a, "type", "veth", "peer", "name", &b, "netns", ns_b,
            ],
        );
        let g = Self {
            ns_a: ns_a.into(),
            a,
            ns_b: ns_b.into(),
            b,
        };
        must("ip", &["-n", &g.ns_a, "link", "set", &g.a, "up"]);
        must("ip", &["-n", &g.ns_b, "link", "set", &g.b, "up"]);
        g
    }
}

impl Drop for VethGuard {
    fn drop(&mut self) {
        undo(
            &format!("veth {}", self.a),
            cmd("ip", &["-n", &self.ns_a, "link", "del", &self.a]),
        );
    }
}

/// An address on an interface in a namespace (IPv6 without duplicate address detection).
#[derive(Debug)]
pub struct AddrGuard {
    ns: String,
    dev: String,
    cidr: String,
}

impl AddrGuard {
    pub fn new(ns: &str, dev: &str, cidr: &str) -> Self {
        let mut args = vec!["-n", ns, "addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        must("ip", &args);
        Self {
            ns: ns.into(),
            dev: dev.into(),
            cidr: cidr.into(),
        }
    }
}

impl Drop for AddrGuard {
    fn drop(&mut self) {
        undo(
            &format!("address {}", self.cidr),
            cmd(
                "ip",
                &["-n", &self.ns, "addr", "del", &self.cidr, "dev", &self.dev],
            ),
        );
    }
}

/// A route in a namespace, given as `ip route add` arguments.
#[derive(Debug)]
pub struct RouteGuard {
    ns: String,
    spec: Vec<String>,
}

impl RouteGuard {
    pub fn new(ns: &str, spec: &[&str]) -> Self {
        let family = if spec.iter().any(|s| s.contains(':')) {
            "-6"
        } else {
            "-4"
        };
        let mut args = vec![family, "-n", ns, "route", "add"];
        args.extend_from_slice(spec);
        must("ip", &args);
        Self {
            ns: ns.into(),
            spec: spec.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let family = if self.spec.iter().any(|s| s.contains(':')) {
            "-6"
        } else {
            "-4"
        };
        let mut args = vec![family, "-n", self.ns.as_str(), "route", "del"];
        args.extend(self.spec.iter().map(String::as_str));
        undo(&format!("route {}", self.spec.join(" ")), cmd("ip", &args));
    }
}

/// A sysctl set inside a namespace (`net.ipv4.ip_forward`); the old value comes back on drop.
#[derive(Debug)]
pub struct SysctlGuard {
    ns: String,
    path: PathBuf,
    old: String,
}

impl SysctlGuard {
    pub fn new(ns: &str, key: &str, value: &str) -> Self {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        let handle = NetNs::from_name(ns).expect("open namespace for sysctl");
        let old = handle
            .run(|| std::fs::read_to_string(&path))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("read sysctl {key}: {e}"));
        write_sysctl(&handle, &path, value)
            .unwrap_or_else(|e| panic!("set sysctl {key}={value}: {e}"));
        Self {
            ns: ns.into(),
            path,
            old: old.trim().to_owned(),
        }
    }
}

fn write_sysctl(ns: &NetNs, path: &PathBuf, value: &str) -> Result<(), String> {
    ns.run(|| std::fs::write(path, value))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        // A namespace already gone took its sysctls with it.
        if let Ok(handle) = NetNs::from_name(&self.ns) {
            undo(
                &format!("sysctl {}", self.path.display()),
                write_sysctl(&handle, &self.path, &self.old).map(|()| String::new()),
            );
        }
    }
}

/// A clsact qdisc on an interface in a namespace; removed (with its filters) on drop.
#[derive(Debug)]
pub struct ClsactGuard {
    ns: String,
    dev: String,
}

impl ClsactGuard {
    pub fn new(ns: &str, dev: &str) -> Self {
        must("tc", &["-n", ns, "qdisc", "add", "dev", dev, "clsact"]);
        Self {
            ns: ns.into(),
            dev: dev.into(),
        }
    }
}

impl Drop for ClsactGuard {
    fn drop(&mut self) {
        undo(
            &format!("clsact on {}", self.dev),
            cmd(
                "tc",
                &["-n", &self.ns, "qdisc", "del", "dev", &self.dev, "clsact"],
            ),
        );
    }
}

/// A root qdisc (`tc qdisc add dev DEV root SPEC...`) on an interface in a namespace;
/// deleted on drop, which gives the device back its default.
#[derive(Debug)]
pub struct RootQdiscGuard {
    ns: String,
    dev: String,
}

impl RootQdiscGuard {
    pub fn new(ns: &str, dev: &str, spec: &[&str]) -> Self {
        let mut args = vec!["-n", ns, "qdisc", "add", "dev", dev, "root"];
        args.extend_from_slice(spec);
        must("tc", &args);
        Self {
            ns: ns.into(),
            dev: dev.into(),
        }
    }
}

impl Drop for RootQdiscGuard {
    fn drop(&mut self) {
        undo(
            &format!("root qdisc on {}", self.dev),
            cmd(
                "tc",
                &["-n", &self.ns, "qdisc", "del", "dev", &self.dev, "root"],
            ),
        );
    }
}

/// A path in bpffs that a test pins something at; removed on drop.
#[derive(Debug)]
pub struct PinGuard {
    pub path: PathBuf,
}

impl PinGuard {
    /// A fresh, unique path under /sys/fs/bpf (bpffs must be mounted).
    pub fn new(label: &str) -> Self {
        Self {
            path: PathBuf::from("/sys/fs/bpf").join(names::netns(label)),
        }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let r = if self.path.is_dir() {
            std::fs::remove_dir_all(&self.path)
        } else {
            std::fs::remove_file(&self.path)
        };
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cleanup of pin {}: {e}", self.path.display());
        }
    }
}

/// An nftables table (family `inet`) in a namespace, holding an input-hook chain with the
/// given rules; the table is deleted on drop.
#[derive(Debug)]
pub struct NftTableGuard {
    ns: String,
    family: &'static str,
    pub table: String,
}

impl NftTableGuard {
    /// Creates `inet <unique table>` with a filter chain on `input` (policy accept) and
    /// `rules` (nft rule syntax, e.g. `udp dport 7001 drop`) in it.
    pub fn input(ns: &str, rules: &[&str]) -> Self {
        Self::chains(
            ns,
            "inet",
            &[("type filter hook input priority 0; policy accept;", rules)],
        )
    }

    /// Creates `family <unique table>` with one chain per `(declaration, rules)`: the
    /// declaration as nft writes it (`type nat hook prerouting priority dstnat;`).
    pub fn chains(ns: &str, family: &'static str, chains: &[(&str, &[&str])]) -> Self {
        let table = format!("pktpath_{}", crate::names::ifname('t'));
        let mut script = format!("table {family} {table} {{\n");
        for (i, (decl, rules)) in chains.iter().enumerate() {
            script.push_str(&format!(" chain c{i} {{\n  {decl}\n"));
            for r in *rules {
                script.push_str(&format!("  {r}\n"));
            }
            script.push_str(" }\n");
        }
        script.push_str("}\n");
        let path = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&path, &script).expect("write nft script");
        let done = crate::run::in_ns(ns, "nft", &["-f", path.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(&path);
        done.unwrap_or_else(|e| panic!("nft -f in {ns}: {e}\n{script}"));
        Self {
            ns: ns.into(),
            family,
            table,
        }
    }
}

impl Drop for NftTableGuard {
    fn drop(&mut self) {
        undo(
            &format!("nft table {}", self.table),
            crate::run::in_ns(
                &self.ns,
                "nft",
                &["delete", "table", self.family, &self.table],
            ),
        );
    }
}

/// A link of any type in a namespace (`ip -n NS link add NAME ARGS...`), up; deleted on
/// drop.
#[derive(Debug)]
pub struct LinkGuard {
    pub ns: String,
    pub name: String,
}

impl LinkGuard {
    /// `args` follow the name: `["type", "vxlan", "id", "42", ...]`.
    pub fn new(ns: &str, args: &[&str]) -> Self {
        Self::try_new(ns, args).unwrap_or_else(|e| panic!("ip link add {args:?}: {e}"))
    }

    /// [`Self::new`], with `ip link add`'s complaint when the link could not be created
    /// (`Unknown device type` where the kernel lacks the type).
    pub fn try_new(ns: &str, args: &[&str]) -> Result<Self, String> {
        let name = names::ifname('l');
        let mut all = vec!["-n", ns, "link", "add", name.as_str()];
        all.extend_from_slice(args);
        cmd("ip", &all)?;
        let g = Self {
            ns: ns.into(),
            name,
        };
        must("ip", &["-n", &g.ns, "link", "set", &g.name, "up"]);
        Ok(g)
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        undo(
            &format!("link {}", self.name),
            cmd("ip", &["-n", &self.ns, "link", "del", &self.name]),
        );
    }
}

/// bpffs at /sys/fs/bpf, mounted for a test that needs it (`route attach` pins there, and
/// mounts it itself when missing). Unmounted on drop when this guard mounted it and nothing
/// but the kernel's own `progs.debug`/`maps.debug` is left in it (a test running in parallel
/// may still have pins there: then it stays).
#[derive(Debug)]
pub struct BpffsGuard {
    mounted: bool,
}

impl BpffsGuard {
    pub fn ensure() -> Self {
        let guard = PseudoFs::Bpf.ensure().expect("mount bpffs at /sys/fs/bpf");
        let mounted = guard.is_some();
        if let Some(g) = guard {
            g.keep(); // this guard decides on drop, below
        }
        Self { mounted }
    }
}

impl Drop for BpffsGuard {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let path = PseudoFs::Bpf.path();
        let only_kernel_files = std::fs::read_dir(path).is_ok_and(|d| {
            d.flatten()
                .all(|e| matches!(e.file_name().to_str(), Some("progs.debug" | "maps.debug")))
        });
        if only_kernel_files {
            undo("bpffs mount", cmd("umount", &[&path.display().to_string()]));
        }
    }
}

/// A directory created for another user (owner `uid`, group the same number, `mode`), as an
/// administrator prepares one for a service; removed with its contents on drop.
#[derive(Debug)]
pub struct OwnedDirGuard {
    pub path: PathBuf,
}

impl OwnedDirGuard {
    /// A fresh, unique directory under `parent`.
    pub fn new(parent: &std::path::Path, label: &str, uid: u32, mode: u32) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let path = parent.join(names::netns(label));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let guard = Self { path };
        std::os::unix::fs::chown(&guard.path, Some(uid), Some(uid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", guard.path.display()));
        std::fs::set_permissions(&guard.path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", guard.path.display()));
        guard
    }
}

impl Drop for OwnedDirGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cleanup of {}: {e}", self.path.display());
        }
    }
}

/// An ethtool feature flag of a device (`ethtool -K DEV gro|tx on|off`).
#[derive(Clone, Copy, Debug)]
pub enum EthtoolFlag {
    /// GRO: a veth with GRO on runs NAPI, which lets it take the frames native XDP
    /// redirects to its peer.
    Gro,
    /// TX checksum offload: a veth's sender leaves checksums for the receiver to finish,
    /// which native XDP on the peer cannot see.
    TxChecksum,
}

impl EthtoolFlag {
    /// (get, set) commands of linux/ethtool.h.
    fn commands(self) -> (u32, u32) {
        match self {
            Self::Gro => (0x2b, 0x2c),
            Self::TxChecksum => (0x16, 0x17),
        }
    }
}

/// An ethtool flag of a device in namespace `ns` set (SIOCETHTOOL), put back as it was on
/// drop.
pub struct EthtoolGuard {
    ns: String,
    dev: String,
    flag: EthtoolFlag,
    old: bool,
}

impl EthtoolGuard {
    pub fn set(ns: &str, dev: &str, flag: EthtoolFlag, on: bool) -> Self {
        let handle = NetNs::from_name(ns).expect("open namespace for ethtool");
        let old = handle
            .run(|| ethtool_flag(dev, flag, None))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("read {flag:?} of {dev}: {e}"));
        handle
            .run(|| ethtool_flag(dev, flag, Some(on)))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("set {flag:?} of {dev} to {on}: {e}"));
        Self {
            ns: ns.into(),
            dev: dev.into(),
            flag,
            old,
        }
    }
}

impl Drop for EthtoolGuard {
    fn drop(&mut self) {
        if let Ok(handle) = NetNs::from_name(&self.ns) {
            let r = handle
                .run(|| ethtool_flag(&self.dev, self.flag, Some(self.old)))
                .map_err(|e| e.to_string())
                .and_then(|r| r.map(|_| String::new()).map_err(|e| e.to_string()));
            undo(&format!("{:?} of {}", self.flag, self.dev), r);
        }
    }
}

/// Reads `flag` of `dev` (None) or sets it; returns the state read, or the one set.
fn ethtool_flag(dev: &str, flag: EthtoolFlag, set: Option<bool>) -> std::io::Result<bool> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let (get_cmd, set_cmd) = flag.commands();
    let mut value = EthtoolValue {
        cmd: if set.is_some() { set_cmd } else { get_cmd },
        data: u32::from(set.unwrap_or(false)),
    };
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(dev.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: plain socket(2); closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: req points at a valid ifreq whose data points at `value`, alive for the call.
    let r = unsafe { libc::ioctl(fd, SIOCETHTOOL, &raw mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(err);
    }
    Ok(value.data != 0)
}

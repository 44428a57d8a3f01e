//! Running the system tools the harness drives (`ip`, `tc`, `ping`, ...).

use std::process::{Command, Output};

/// Runs a command; Ok(stdout) when it exits 0, Err(message with stderr) otherwise.
pub fn cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out: Output = Command::new(program).args(args).output().map_err(|e| {
        format!("cannot run {program}: {e} (is it installed? run scripts/bootstrap.sh)")
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command and panics with its stderr if it fails.
pub fn must(program: &str, args: &[&str]) -> String {
    cmd(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command inside a named network namespace (`ip netns exec`).
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    cmd("ip", &full)
}

/// Sends `count` pings from namespace `ns` to `dst` (IPv4 or IPv6), 0.1 s apart.
/// Returns how many replies came back.
pub fn ping(ns: &str, dst: &str, count: u32) -> u32 {
    let count_s = count.to_string();
    let out = in_ns(
        ns,
        "ping",
        &["-n", "-q", "-c", &count_s, "-i", "0.1", "-W", "1", dst],
    )
    .unwrap_or_else(|e| e);
    out.lines()
        .find_map(|l| {
            let l = l.trim();
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The ifindex of `ifname` inside namespace `ns`, as netlink reports it.
pub fn ifindex(ns: &str, ifname: &str) -> u32 {
    let out = must("ip", &["-n", ns, "-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output is JSON");
    v[0]["ifindex"]
        .as_u64()
        .expect("ifindex in ip -j link output") as u32
}

/// Runs a copy of the binary `bin` as user nobody (no capabilities) with `args`, from a
/// world-readable temporary directory (the build tree may not be reachable for nobody).
pub fn as_nobody(bin: &str, args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(crate::names::netns("nobody"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    let copy = dir.join("bin");
    std::fs::copy(bin, &copy).expect("copy binary");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&copy)
        .args(args)
        .current_dir("/")
        .env("RUST_BACKTRACE", "1")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    out.expect("run setpriv (util-linux)")
}

/// Sends one UDP datagram (`payload`) to each of `to` from a socket bound to `from` in
/// namespace `ns`; returns the socket's port.
pub fn udp<I, T>(ns: &crate::NetnsGuard, from: &str, to: I, payload: &[u8]) -> u16
where
    I: IntoIterator<Item = T>,
    T: std::net::ToSocketAddrs,
{
    let to: Vec<std::net::SocketAddr> = to
        .into_iter()
        .flat_map(|dst| dst.to_socket_addrs().expect("a destination address"))
        .collect();
    ns.handle()
        .run(|| {
            let sock = std::net::UdpSocket::bind(from).expect("bind");
            for dst in &to {
                sock.send_to(payload, dst).expect("send a datagram");
            }
            sock.local_addr().expect("local address").port()
        })
        .expect("enter namespace")
}

/// A copy of a binary that other users can run (the build tree may not be reachable for
/// them), in a world-readable temporary directory removed on drop.
pub struct SharedBinary {
    dir: std::path::PathBuf,
    pub path: std::path::PathBuf,
}

impl SharedBinary {
    pub fn new(bin: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(crate::names::netns("bin"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let path = dir.join("pktpath");
        std::fs::copy(bin, &path).expect("copy binary");
        Self { dir, path }
    }

    /// The binary run as `uid` (group the same number, no supplementary groups) holding
    /// exactly the capabilities `caps` (setpriv's names: `bpf`, `net_admin`, `perfmon`) as
    /// ambient capabilities, in network namespace `netns` when given (`nsenter --net`, the
    /// mount namespace stays the host's). PKTPATH_* and RUNTIME_DIRECTORY are not passed on.
    pub fn command(&self, uid: u32, caps: &[&str], netns: Option<&str>) -> Command {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("setpriv");
                c
            }
            None => Command::new("setpriv"),
        };
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups");
        if caps.is_empty() {
            cmd.arg("--inh-caps=-all");
        } else {
            let list: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
            let list = list.join(",");
            cmd.arg(format!("--inh-caps={list}"))
                .arg(format!("--ambient-caps={list}"));
        }
        cmd.arg("--")
            .arg(&self.path)
            .current_dir("/")
            .env_remove("PKTPATH_STATE_DIR")
            .env_remove("PKTPATH_PIN_DIR")
            .env_remove("RUNTIME_DIRECTORY");
        cmd
    }
}

impl Drop for SharedBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd` to its end, killing it after `limit`; panics when it had to be killed.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait for child").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{cmd:?} still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// A packet capture (`dumpcap`, from tshark's package) on `ifname` in namespace `ns`, with
/// capture filter `filter`, from when [`Capture::start`] returns until the value is
/// dropped: the kernel clones each packet the interface sends for it.
pub struct Capture {
    child: std::process::Child,
    /// dumpcap's stderr, kept open so that it never blocks writing to it.
    _stderr: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    path: std::path::PathBuf,
}

impl Capture {
    pub fn start(ns: &str, ifname: &str, filter: &str) -> Self {
        use std::io::BufRead as _;
        let path = std::env::temp_dir().join(format!("{}.pcapng", crate::names::netns("cap")));
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", ns, "dumpcap", "-q", "-i", ifname, "-f", filter, "-w",
            ])
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("run dumpcap (is tshark installed? scripts/bootstrap.sh): {e}")
            });
        let mut lines =
            std::io::BufReader::new(child.stderr.take().expect("dumpcap's stderr")).lines();
        // It names its file once the capture socket is open.
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("File:") => break,
                Some(Ok(l)) => said.push(l),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "dumpcap on {ifname} in {ns} did not start: {}",
                        said.join("\n")
                    );
                }
            }
        }
        Self {
            child,
            _stderr: lines,
            path,
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

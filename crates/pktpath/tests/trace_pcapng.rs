//! `pktpath trace -w FILE` end to end: the built binary traces pings between fresh
//! namespaces into a pcapng file, which a real pcap parser (tshark) reads back: the echo
//! requests and replies that were sent, on an interface named after the veth and its
//! namespace, each with its comment.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use pktpath_tests::{TwoHosts, require_root, run};

const PKTPATH: &str = env!("CARGO_BIN_EXE_pktpath");

/// Removes the capture file however the test ends.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kills the child if the test fails before it exits.
struct Reaper(std::process::Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn trace_cli_writes_pcapng_that_tshark_reads_back() {
    require_root();
    let lab = TwoHosts::new();
    let ns_b = lab.b.inode();
    let file = TempFile(std::env::temp_dir().join(format!(
        "pktpath-trace-{}-{}.pcapng",
        std::process::id(),
        lab.b.name
    )));
    let path = file.0.to_str().expect("utf-8 temp path").to_owned();
    let path = path.as_str();
    // Receive in b (the requests) and transmit from b (the replies): one event each.
    let mut child = Reaper(
        Command::new(PKTPATH)
            .args(["trace", "--netns", &lab.b.name])
            .args(["--hooks", "netif_receive_skb,net_dev_xmit", "-w", path])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pktpath trace"),
    );
    let (tx, stderr) = mpsc::channel();
    let pipe = child.0.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = stderr
        .recv_timeout(Duration::from_secs(20))
        .expect("pktpath trace says it is tracing");
    assert!(first.starts_with("pktpath: tracing "), "{first}");

    let pings = 5;
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, pings), pings);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "pktpath trace did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().expect("stdout"), &mut stdout)
        .expect("read stdout");
    assert_eq!(stdout, "", "-w prints no events");
    let summary: Vec<String> = stderr.try_iter().collect();
    let written: usize = summary
        .first()
        .and_then(|l| l.strip_prefix("pktpath: "))
        .and_then(|l| l.split_once(" packets on ")?.0.parse().ok())
        .unwrap_or_else(|| panic!("a packets line first: {summary:?}"));

    let out = run::must(
        "tshark",
        &[
            "-r",
            path,
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
            "-e",
            "frame.comment",
        ],
    );
    let frames: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(frames.len(), written, "tshark reads every packet:\n{out}");
    let iface = format!("{}@{}", lab.link.b, lab.b.name);
    for f in &frames {
        assert_eq!(f.len(), 7, "{f:?}");
        assert_eq!(f[0], iface, "interface named after the veth and namespace");
        let comment = f[6];
        assert!(
            comment.starts_with("hook=netif_receive_skb ")
                || comment.starts_with("hook=net_dev_xmit "),
            "{comment}"
        );
        assert!(
            comment.contains(&format!(
                " netns={ns_b} netns_name={} if={} ",
                lab.b.name, lab.link.b
            )),
            "{comment}"
        );
        assert!(comment.contains(" packet_id="), "{comment}");
    }
    let echoes = |src: &str, dst: &str, ty: &str, hook: &str| {
        frames
            .iter()
            .filter(|f| f[3] == src && f[4] == dst && f[5] == ty)
            .inspect(|f| {
                assert!(f[6].starts_with(&format!("hook={hook} ")), "{f:?}");
                assert_eq!((f[1], f[2]), ("84", "84"), "whole echo captured: {f:?}");
            })
            .count()
    };
    assert_eq!(
        echoes(TwoHosts::A4, TwoHosts::B4, "8", "netif_receive_skb"),
        pings as usize,
        "echo requests received in b:\n{out}"
    );
    assert_eq!(
        echoes(TwoHosts::B4, TwoHosts::A4, "0", "net_dev_xmit"),
        pings as usize,
        "echo replies sent from b:\n{out}"
    );
    drop(file);
    assert!(!std::path::Path::new(path).exists(), "capture file removed");
}

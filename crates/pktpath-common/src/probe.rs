//! Names of the tiny programs and maps `pktpath doctor` loads to probe kernel features.

/// Classic tracepoint probe, attached to `net:netif_receive_skb`.
pub const PROG_TRACEPOINT: &str = "probe_tracepoint";
/// BTF tracepoint probe, loaded against `net_dev_xmit`.
pub const PROG_TP_BTF: &str = "probe_tp_btf";
/// Raw tracepoint probe, attached to `net_dev_xmit`.
pub const PROG_RAW_TRACEPOINT: &str = "probe_raw_tracepoint";
/// kprobe probe, attached to [`PROBE_KERNEL_FUNCTION`].
pub const PROG_KPROBE: &str = "probe_kprobe";
/// fentry probe, loaded against [`PROBE_KERNEL_FUNCTION`].
pub const PROG_FENTRY: &str = "probe_fentry";
/// TC classifier probe (netlink clsact, TCX, BPF_PROG_TEST_RUN).
pub const PROG_CLASSIFIER: &str = "probe_classifier";
/// XDP probe.
pub const PROG_XDP: &str = "probe_xdp";
/// Classifier with a `may_goto` instruction: loads where the verifier knows it.
pub const PROG_MAY_GOTO: &str = "probe_may_goto";
/// Ring buffer the classifier probe writes one record into per run.
pub const MAP_RING: &str = "PROBE_RING";
/// Kernel function the kprobe and fentry probes target.
pub const PROBE_KERNEL_FUNCTION: &str = "ip_rcv";
/// Value the classifier probe writes into [`MAP_RING`] on each run.
pub const RING_RECORD: u64 = 0x7072_6f62_6572_696e; // "probering"

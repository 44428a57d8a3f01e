//! The Kubernetes packaging in dist/, checked without a cluster: the DaemonSet's command
//! line parses with the CLI definition, the ConfigMap's two files are valid configurations
//! (what `route check` checks), and the ports, probes, scrape annotations and mount paths
//! agree with the flags. Nothing here needs kubectl, docker or root.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use serde::Deserialize as _;
use serde_json::Value;

use super::super::{Cli, Command, route};

const MANIFEST: &str = include_str!("../../../../../dist/kubernetes/pktpath-agent.yaml");
const DOCKERFILE: &str = include_str!("../../../../../dist/Dockerfile");

/// Every document of the manifest, as JSON values.
fn documents() -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(MANIFEST)
        .map(|doc| Value::deserialize(doc).expect("the manifest is valid YAML"))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in the manifest");
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// The host path of the volume mounted at the container path that holds `path`.
fn host_path_of(pod: &Value, container: &Value, path: &Path) -> Option<String> {
    let mount = container["volumeMounts"]
        .as_array()?
        .iter()
        .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("/nonexistent")))
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))?;
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    volume["hostPath"]["path"].as_str().map(str::to_owned)
}

#[test]
fn the_daemonset_runs_the_agent_with_flags_and_paths_that_agree() {
    let docs = documents();
    let ds = kind(&docs, "DaemonSet");
    let cm = kind(&docs, "ConfigMap");
    let template = &ds["spec"]["template"];
    let pod = &template["spec"];
    assert_eq!(
        pod["hostNetwork"], true,
        "the data path hooks the node's interfaces"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["privileged"], true);

    // The command line, parsed as `pktpath` parses it.
    let mut argv = strings(&c["command"]);
    argv.extend(strings(&c["args"]));
    let entrypoint = argv[0].clone();
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Command::Agent(args) = cli.command else {
        panic!("{argv:?} is not `pktpath agent`");
    };
    assert!(!args.no_drop_monitor, "the drop monitor runs");

    // The two files: the ConfigMap's keys, in its volume's mount.
    let config_mount =
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                pod["volumes"].as_array().unwrap().iter().any(|v| {
                    v["name"] == m["name"] && v["configMap"]["name"] == cm["metadata"]["name"]
                })
            })
            .expect("the ConfigMap is mounted");
    let dir = PathBuf::from(config_mount["mountPath"].as_str().unwrap());
    for file in [&args.config, &args.runtime] {
        assert_eq!(
            file.parent(),
            Some(dir.as_path()),
            "{} in the ConfigMap's mount",
            file.display()
        );
        let key = file.file_name().unwrap().to_str().unwrap();
        assert!(cm["data"][key].is_string(), "the ConfigMap has {key}");
    }

    // Pins and state on the node (they outlive the pod, as the data path does).
    assert_eq!(
        host_path_of(pod, c, &args.pin_dir).as_deref(),
        Some("/sys/fs/bpf"),
        "--pin-dir {} is on the node's bpffs",
        args.pin_dir.display()
    );
    let state = args.state.root();
    let host_state = host_path_of(pod, c, &state).expect("--state-dir is on a hostPath");
    assert!(host_state.starts_with("/run/"), "{host_state}");

    // One port: the metrics address, the container port, the probes, the annotations.
    let port = args.metrics_listen.expect("--metrics-listen").port();
    assert!(
        args.metrics_listen.unwrap().ip().is_unspecified(),
        "Prometheus scrapes the node's address"
    );
    assert_eq!(c["ports"][0]["containerPort"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let notes = &template["metadata"]["annotations"];
    assert_eq!(notes["prometheus.io/scrape"], "true");
    assert_eq!(notes["prometheus.io/port"], port.to_string());
    assert_eq!(notes["prometheus.io/path"], "/metrics");

    // The image's binary is where the container runs it.
    assert!(
        DOCKERFILE.contains(&format!("COPY --from=build /out/pktpath {entrypoint}")),
        "the Dockerfile installs {entrypoint}"
    );
    assert!(
        DOCKERFILE.contains(&format!("FROM rust:{}-", env!("CARGO_PKG_RUST_VERSION"))),
        "the Dockerfile builds with the workspace's rust-version"
    );
}

#[test]
fn the_configmaps_files_are_valid_configurations() {
    let docs = documents();
    let cm = kind(&docs, "ConfigMap");
    let dir = std::env::temp_dir().join(format!("pktpath-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |key: &str| {
        let path = dir.join(key);
        std::fs::write(&path, cm["data"][key].as_str().expect(key)).unwrap();
        path
    };
    let config = write("configuration.json");
    let runtime = write("runtimeConfiguration.json");
    let checked = route::validate(&config, Some(&runtime));
    let _ = std::fs::remove_dir_all(&dir);
    let (set, _) = checked.unwrap_or_else(|e| panic!("route check refuses the ConfigMap: {e:#}"));
    assert!(!set.policies.is_empty(), "the example has policies");
}

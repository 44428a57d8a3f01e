//! The harness itself: topologies carry real traffic, and every guard cleans up, panics included.

use std::path::Path;

use pktpath_tests::{RouterLab, TwoHosts, require_root, run::ping};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
fn two_hosts_ping_both_ways_over_ipv4_and_ipv6() {
    require_root();
    let lab = TwoHosts::new();
    assert_eq!(ping(&lab.a.name, TwoHosts::B4, 2), 2);
    assert_eq!(ping(&lab.b.name, TwoHosts::A4, 2), 2);
    assert_eq!(ping(&lab.a.name, TwoHosts::B6, 2), 2);
}

#[test]
fn router_lab_reaches_both_upstreams() {
    require_root();
    let lab = RouterLab::new();
    for dst in [
        RouterLab::UP1_4,
        RouterLab::UP2_4,
        RouterLab::UP1_6,
        RouterLab::UP2_6,
    ] {
        assert_eq!(ping(&lab.client.name, dst, 1), 1, "client -> {dst}");
    }
}

#[test]
fn guards_remove_everything_on_drop_and_on_panic() {
    require_root();
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let lab = RouterLab::new();
        names.lock().unwrap().extend([
            lab.client.name.clone(),
            lab.router.name.clone(),
            lab.up1.name.clone(),
            lab.up2.name.clone(),
        ]);
        panic!("deliberate panic inside a test topology");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 4);
    for n in &names {
        assert!(!netns_exists(n), "namespace {n} left behind after a panic");
    }

    let lab = TwoHosts::new();
    let (a, b, ifname) = (lab.a.name.clone(), lab.b.name.clone(), lab.link.a.clone());
    drop(lab);
    assert!(!netns_exists(&a) && !netns_exists(&b));
    let links = pktpath_tests::run::must("ip", &["-o", "link", "show"]);
    assert!(!links.contains(&ifname), "veth {ifname} left behind");
}

//! Ready-made topologies. Fields drop in declaration order: addresses, routes and links
//! first, namespaces last.

use crate::guards::{AddrGuard, NetnsGuard, RouteGuard, SysctlGuard, VethGuard};

/// Two hosts on one veth pair: `a` (10.77.0.1/24, fd77::1/64) and `b` (.2, ::2).
pub struct TwoHosts {
    _addrs: Vec<AddrGuard>,
    pub link: VethGuard,
    pub a: NetnsGuard,
    pub b: NetnsGuard,
}

impl TwoHosts {
    pub const A4: &'static str = "10.77.0.1";
    pub const B4: &'static str = "10.77.0.2";
    pub const A6: &'static str = "fd77::1";
    pub const B6: &'static str = "fd77::2";

    pub fn new() -> Self {
        let a = NetnsGuard::new("a");
        let b = NetnsGuard::new("b");
        let link = VethGuard::new(&a.name, &b.name);
        let addrs = vec![
            AddrGuard::new(&a.name, &link.a, "10.77.0.1/24"),
            AddrGuard::new(&b.name, &link.b, "10.77.0.2/24"),
            AddrGuard::new(&a.name, &link.a, "fd77::1/64"),
            AddrGuard::new(&b.name, &link.b, "fd77::2/64"),
        ];
        Self {
            _addrs: addrs,
            link,
            a,
            b,
        }
    }
}

impl Default for TwoHosts {
    fn default() -> Self {
        Self::new()
    }
}

/// A client behind a router with two upstreams:
///
/// ```text
/// client --(10.1.0.0/24, fd01::/64)-- router --(10.2.0.0/24, fd02::/64)-- up1
///                                            --(10.3.0.0/24, fd03::/64)-- up2
/// ```
/// The router forwards (IPv4 and IPv6); the client's default route points at it; each
/// upstream routes the client's networks back through the router.
pub struct RouterLab {
    _routes: Vec<RouteGuard>,
    _addrs: Vec<AddrGuard>,
    pub forwarding: Vec<SysctlGuard>,
    pub client_link: VethGuard,
    pub up1_link: VethGuard,
    pub up2_link: VethGuard,
    pub client: NetnsGuard,
    pub router: NetnsGuard,
    pub up1: NetnsGuard,
    pub up2: NetnsGuard,
}

impl RouterLab {
    pub const CLIENT4: &'static str = "10.1.0.2";
    pub const UP1_4: &'static str = "10.2.0.2";
    pub const UP2_4: &'static str = "10.3.0.2";
    pub const CLIENT6: &'static str = "fd01::2";
    pub const UP1_6: &'static str = "fd02::2";
    pub const UP2_6: &'static str = "fd03::2";

    pub fn new() -> Self {
        let client = NetnsGuard::new("client");
        let router = NetnsGuard::new("router");
        let up1 = NetnsGuard::new("up1");
        let up2 = NetnsGuard::new("up2");
        // VethGuard ends: `a` on the router side, `b` on the far side.
        let client_link = VethGuard::new(&router.name, &client.name);
        let up1_link = VethGuard::new(&router.name, &up1.name);
        let up2_link = VethGuard::new(&router.name, &up2.name);
        let r = router.name.as_str();
        let addrs = vec![
            AddrGuard::new(r, &client_link.a, "10.1.0.1/24"),
            AddrGuard::new(&client.name, &client_link.b, "10.1.0.2/24"),
            AddrGuard::new(r, &up1_link.a, "10.2.0.1/24"),
            AddrGuard::new(&up1.name, &up1_link.b, "10.2.0.2/24"),
            AddrGuard::new(r, &up2_link.a, "10.3.0.1/24"),
            AddrGuard::new(&up2.name, &up2_link.b, "10.3.0.2/24"),
            AddrGuard::new(r, &client_link.a, "fd01::1/64"),
            AddrGuard::new(&client.name, &client_link.b, "fd01::2/64"),
            AddrGuard::new(r, &up1_link.a, "fd02::1/64"),
            AddrGuard::new(&up1.name, &up1_link.b, "fd02::2/64"),
            AddrGuard::new(r, &up2_link.a, "fd03::1/64"),
            AddrGuard::new(&up2.name, &up2_link.b, "fd03::2/64"),
        ];
        let forwarding = vec![
            SysctlGuard::new(r, "net.ipv4.ip_forward", "1"),
            SysctlGuard::new(r, "net.ipv6.conf.all.forwarding", "1"),
        ];
        let routes = vec![
            RouteGuard::new(&client.name, &["default", "via", "10.1.0.1"]),
            RouteGuard::new(&client.name, &["default", "via", "fd01::1"]),
            RouteGuard::new(&up1.name, &["10.1.0.0/24", "via", "10.2.0.1"]),
            RouteGuard::new(&up1.name, &["fd01::/64", "via", "fd02::1"]),
            RouteGuard::new(&up2.name, &["10.1.0.0/24", "via", "10.3.0.1"]),
            RouteGuard::new(&up2.name, &["fd01::/64", "via", "fd03::1"]),
        ];
        Self {
            _routes: routes,
            _addrs: addrs,
            forwarding,
            client_link,
            up1_link,
            up2_link,
            client,
            router,
            up1,
            up2,
        }
    }
}

impl Default for RouterLab {
    fn default() -> Self {
        Self::new()
    }
}

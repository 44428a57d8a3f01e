//! Policy sets shaped like real ones, for benchmarking and testing the policy classifier
//! through the real pipeline (configuration files, validation, data path rules).
//!
//! A [`Profile`] names a seed family of the packet-classification literature (ClassBench's
//! ACL, FW and IPC) for IPv4 or IPv6, a mix of them, or the single-shape set the classify
//! benchmark started with. [`generate`] makes `n` policies of a profile, deterministic in
//! its seed, as `configuration.json` text and a [`RuntimeConfiguration`]; [`headers`] draws
//! packets aimed at them.
//!
//! The same seed gives the same address pools at every size, and the first `k` policies of
//! a set of `n` are the set of `k` but for their priorities, which order the whole set most
//! specific first (see `shapes::order_by_specificity`). Two seeds give two sets with the
//! same ids and the same priorities, given to other matches (what an update benchmark swaps
//! between).
//!
//! Drawn from the project's seeded [`Rng`], not proptest: the published figures compare only
//! if a seed gives the same set in every run and release.

mod headers;
mod pools;
mod random;
mod shapes;

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use pktpath_core::{
    route::datapath::synth::Rng,
    route::{
        compile::{PolicySet, Topology},
        config::{
            CONFIGURATION_VERSION, ConfigError, Configuration, Family, Interface, NextHop, Prefix,
            RUNTIME_VERSION, RuntimeConfiguration, Source, Table,
        },
    },
};

pub use self::headers::headers;
use self::{
    pools::Pool,
    shapes::{Addresses, Kind},
};

/// The interfaces of the generated configuration, all attached at ingress: two client
/// sides and four uplinks.
pub const INTERFACES: [&str; 6] = ["in0", "in1", "up0", "up1", "up2", "up3"];
/// The next hops, one per uplink (`nh0` on `up0`...), each with an IPv4 and an IPv6
/// gateway so that forward policies of either family can use them.
pub const NEXT_HOPS: [&str; 4] = ["nh0", "nh1", "nh2", "nh3"];
/// The routing table `lookup_table` policies name (the kernel's main table, 254).
pub const TABLE: &str = "main";

/// The file names [`RuleSet::write`] uses.
pub const CONFIGURATION_FILE: &str = "configuration.json";
pub const RUNTIME_FILE: &str = "runtimeConfiguration.json";

/// A kind of policy set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Profile {
    /// IPv4 access control lists: destinations mostly long (/32, /24-/30), sources often
    /// any or /32, destination ports mostly exact, source ports mostly any.
    Acl,
    /// IPv4 firewall: many wildcards on one side (source any ~35%, destination any ~25%,
    /// both ~4%), lengths spread, more port ranges, more `any` protocols.
    Firewall,
    /// IPv4 IP chains (policy routing): a broad mixture of lengths and port classes,
    /// mostly forward and table lookups.
    IpChain,
    /// [`Profile::Acl`] over IPv6 (lengths mostly /48, /56, /64, /128 under fd00::/8).
    Acl6,
    /// [`Profile::Firewall`] over IPv6.
    Firewall6,
    /// [`Profile::IpChain`] over IPv6.
    IpChain6,
    /// The three families over both address families, about 70% IPv4; policies that name
    /// no prefix stay family-free (they match both).
    Mixed,
    /// The classify benchmark's original set: one match shape after tuple merging (the
    /// best case for a tuple-space classifier).
    OneShape,
}

impl Profile {
    /// Every profile, in the order reports list them.
    pub const ALL: [Profile; 8] = [
        Profile::Acl,
        Profile::Firewall,
        Profile::IpChain,
        Profile::Acl6,
        Profile::Firewall6,
        Profile::IpChain6,
        Profile::Mixed,
        Profile::OneShape,
    ];

    /// The short name (`acl`, `fw`, `ipc`, `acl6`, `fw6`, `ipc6`, `mixed`, `one-shape`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Acl => "acl",
            Profile::Firewall => "fw",
            Profile::IpChain => "ipc",
            Profile::Acl6 => "acl6",
            Profile::Firewall6 => "fw6",
            Profile::IpChain6 => "ipc6",
            Profile::Mixed => "mixed",
            Profile::OneShape => "one-shape",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name that is none of [`Profile::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown rule-set profile {0:?}; use one of acl, fw, ipc, acl6, fw6, ipc6, mixed, one-shape"
)]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

/// The address pools of a rule set.
#[derive(Clone, Debug)]
struct Pools {
    v4: Pool,
    v6: Pool,
}

/// A generated policy set: the static configuration's text and the runtime configuration.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub profile: Profile,
    pub seed: u64,
    /// `configuration.json`: [`INTERFACES`], [`NEXT_HOPS`], table [`TABLE`].
    pub configuration: String,
    /// Exactly the requested number of policies; unique ids and priorities.
    pub runtime: RuntimeConfiguration,
    pools: Pools,
}

/// Where [`RuleSet::write`] put the files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    pub configuration: PathBuf,
    pub runtime: PathBuf,
}

/// `n` policies of `profile`, deterministic in `seed`.
pub fn generate(profile: Profile, n: usize, seed: u64) -> RuleSet {
    // The pools come from a stream of their own, so they are the same at every size.
    let mut pool_rng = Rng::new(seed ^ 0x0070_6f6f_6c73);
    let pools = Pools {
        v4: Pool::v4(&mut pool_rng),
        v6: Pool::v6(&mut pool_rng),
    };
    let mut rng = Rng::new(seed ^ 0x0072_756c_6573);
    let policies = (0..n)
        .map(|i| {
            let id = format!("{}-{:06}", profile.name(), i + 1);
            let priority = 10 * (i as u32 + 1);
            let single = |v6: bool| Addresses {
                pool: if v6 { &pools.v6 } else { &pools.v4 },
                v6,
                family_free: false,
            };
            let (kind, family) = match profile {
                Profile::OneShape => return shapes::one_shape(&mut rng, id, priority),
                Profile::Mixed => {
                    let v6 = !rng.chance(70);
                    let kind = [Kind::Acl, Kind::Fw, Kind::Ipc][rng.below(3) as usize];
                    let family = Addresses {
                        family_free: true,
                        ..single(v6)
                    };
                    (kind, family)
                }
                Profile::Acl => (Kind::Acl, single(false)),
                Profile::Firewall => (Kind::Fw, single(false)),
                Profile::IpChain => (Kind::Ipc, single(false)),
                Profile::Acl6 => (Kind::Acl, single(true)),
                Profile::Firewall6 => (Kind::Fw, single(true)),
                Profile::IpChain6 => (Kind::Ipc, single(true)),
            };
            shapes::policy(&mut rng, kind, &family, id, priority)
        })
        .collect();
    let mut policies: Vec<_> = policies;
    if profile != Profile::OneShape {
        shapes::order_by_specificity(&mut rng, &mut policies);
    }
    RuleSet {
        profile,
        seed,
        configuration: configuration(),
        runtime: RuntimeConfiguration {
            version: RUNTIME_VERSION,
            policies,
        },
        pools,
    }
}

/// The static configuration every rule set uses.
fn configuration() -> String {
    let config = Configuration {
        version: CONFIGURATION_VERSION,
        interfaces: INTERFACES
            .iter()
            .map(|name| Interface {
                name: (*name).to_owned(),
                ingress: true,
                egress: false,
                hook: Default::default(),
            })
            .collect(),
        next_hops: NEXT_HOPS
            .iter()
            .enumerate()
            .map(|(i, name)| NextHop {
                name: (*name).to_owned(),
                interface: INTERFACES[2 + i].to_owned(),
                gateway4: Some(std::net::Ipv4Addr::new(198, 51, 100, 1 + i as u8)),
                gateway6: Some(std::net::Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0x100 + i as u16,
                    0,
                    0,
                    0,
                    0,
                    1,
                )),
                mac: None,
            })
            .collect(),
        tables: vec![Table {
            name: TABLE.to_owned(),
            id: 254,
        }],
        slow_path: Default::default(),
    };
    serde_json::to_string_pretty(&config).expect("the configuration serializes") + "\n"
}

impl RuleSet {
    /// `runtimeConfiguration.json`: one policy per line.
    pub fn runtime_json(&self) -> String {
        let mut s = format!(
            "{{ \"version\": {}, \"policies\": [\n",
            self.runtime.version
        );
        for (i, p) in self.runtime.policies.iter().enumerate() {
            if i > 0 {
                s.push_str(",\n");
            }
            s.push_str(&serde_json::to_string(p).expect("a policy serializes"));
        }
        s.push_str("\n] }\n");
        s
    }

    /// The validated static configuration.
    pub fn topology(&self) -> Result<Topology, ConfigError> {
        Topology::from_source(&Source::new(
            CONFIGURATION_FILE,
            self.configuration.as_str(),
        ))
    }

    /// The validated policy set, through the same parsing and checks as `route apply`.
    pub fn policy_set(&self) -> Result<PolicySet, ConfigError> {
        let topology = self.topology()?;
        PolicySet::from_source(&topology, &Source::new(RUNTIME_FILE, self.runtime_json()))
    }

    /// Writes [`CONFIGURATION_FILE`] and [`RUNTIME_FILE`] into `dir` (which must exist).
    pub fn write(&self, dir: &Path) -> std::io::Result<Files> {
        let files = Files {
            configuration: dir.join(CONFIGURATION_FILE),
            runtime: dir.join(RUNTIME_FILE),
        };
        std::fs::write(&files.configuration, &self.configuration)?;
        std::fs::write(&files.runtime, self.runtime_json())?;
        Ok(files)
    }

    /// The distinct (family, source length, destination length) triples of the policies'
    /// prefixes, an absent prefix counting as length 0 (a family-free policy has family
    /// `None`). Within one family these are the (src_len, dst_len) pairs.
    pub fn len_pairs(&self) -> HashSet<(Option<Family>, u8, u8)> {
        self.runtime
            .policies
            .iter()
            .map(|p| {
                let m = &p.matches;
                let len = |x: Option<Prefix>| x.map_or(0, |p| p.prefix_len());
                (m.src.or(m.dst).map(|p| p.family()), len(m.src), len(m.dst))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

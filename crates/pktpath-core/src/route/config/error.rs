//! The one error type of route configuration: every variant says where (file, line, column,
//! field) and what to change.

use std::{fmt, io, path::PathBuf};

/// Where in which file a configuration error is: `file:line:column: field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field path, such as `policies[2].match.src`; empty for the whole file.
    pub field: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        Ok(())
    }
}

/// A configuration file that cannot be used, and why. (Locations are boxed to keep the
/// `Result`s small.)
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the file: {source}", file = file.display())]
    Read { file: PathBuf, source: io::Error },

    #[error("{at}: malformed json: {message}")]
    Syntax { at: Box<Location>, message: String },

    /// A field of the wrong type, an unknown or missing field, a value that does not parse.
    #[error("{at}: {message}")]
    Invalid { at: Box<Location>, message: String },

    #[error("{at}: unsupported version {found}; this pktpath reads version {expected}")]
    Version {
        at: Box<Location>,
        found: String,
        expected: u32,
    },

    #[error("{at}: invalid {kind} {name:?}: {reason}")]
    InvalidName {
        at: Box<Location>,
        kind: &'static str,
        name: String,
        reason: String,
    },

    #[error(
        "{at}: duplicate {kind} {name:?} (first at line {first_line}); give each {kind} its own name"
    )]
    DuplicateName {
        at: Box<Location>,
        kind: &'static str,
        name: String,
        first_line: usize,
    },

    #[error(
        "{at}: interface {name:?} is attached neither at ingress nor at egress; set \"ingress\": true or remove it"
    )]
    NoDirection { at: Box<Location>, name: String },

    #[error(
        "{at}: interface {name:?} has \"hook\": \"xdp\" but is not attached at ingress; XDP sees received packets only: set \"ingress\": true or remove \"hook\""
    )]
    XdpWithoutIngress { at: Box<Location>, name: String },

    #[error("{at}: next hop {name:?} has no address; give it a gateway4, a gateway6 or a mac")]
    NextHopWithoutAddress { at: Box<Location>, name: String },

    #[error(
        "{at}: next hop {next_hop:?} sends out of interface {interface:?}, which is not in interfaces; add it there (attached: {known})"
    )]
    NextHopInterface {
        at: Box<Location>,
        next_hop: String,
        interface: String,
        known: String,
    },

    #[error("{at}: table id 0 is not a routing table; use 1-4294967295 (main is 254)")]
    InvalidTableId { at: Box<Location> },

    #[error(
        "{at}: table id {id} is already table {other:?} (line {first_line}); give each table its own id"
    )]
    DuplicateTableId {
        at: Box<Location>,
        id: u32,
        other: String,
        first_line: usize,
    },

    #[error(
        "{at}: duplicate policy id {id:?} (first at line {first_line}); give each policy its own id"
    )]
    DuplicateId {
        at: Box<Location>,
        id: String,
        first_line: usize,
    },

    #[error(
        "{at}: priority {priority} of policy {id:?} is also the priority of policy {other:?} (line {first_line}); priorities must be unique, lower wins"
    )]
    DuplicatePriority {
        at: Box<Location>,
        priority: u32,
        id: String,
        other: String,
        first_line: usize,
    },

    #[error("{at}: unknown next hop {name:?}; {config} defines: {known}")]
    UnknownNextHop {
        at: Box<Location>,
        name: String,
        config: String,
        known: String,
    },

    #[error("{at}: unknown routing table {name:?}; {config} defines: {known}")]
    UnknownTable {
        at: Box<Location>,
        name: String,
        config: String,
        known: String,
    },

    #[error("{at}: unknown input interface {name:?}; {config} attaches: {known}")]
    UnknownInterface {
        at: Box<Location>,
        name: String,
        config: String,
        known: String,
    },

    #[error(
        "{at}: input interface {name:?} is attached only at egress in {config}, so no policy sees its received packets; set \"ingress\": true there"
    )]
    NotIngress {
        at: Box<Location>,
        name: String,
        config: String,
    },

    #[error(
        "{at}: src {src} is {src_family} but dst {dst} is {dst_family}; a packet has one family, so write one policy per family"
    )]
    MixedFamilies {
        at: Box<Location>,
        src: String,
        src_family: String,
        dst: String,
        dst_family: String,
    },

    #[error(
        "{at}: protocol {proto} carries no ports; match tcp, udp or sctp, or remove the port match"
    )]
    PortsWithoutPorts { at: Box<Location>, proto: String },

    #[error(
        "{at}: dscp {value} is out of range; dscp is 0-63 (the upper six bits of the tos / traffic class)"
    )]
    DscpOutOfRange { at: Box<Location>, value: u8 },

    #[error(
        "{at}: mark value {value:#x} has bits outside mask {mask:#x}; it can never match: use value {fixed:#x} or widen the mask"
    )]
    MarkOutsideMask {
        at: Box<Location>,
        value: u32,
        mask: u32,
        fixed: u32,
    },

    /// A `slow_path` setting of configuration.json that cannot work (the message says why
    /// and what to change).
    #[error("{at}: {message}")]
    SlowPath { at: Box<Location>, message: String },

    #[error(
        "{at}: set_mark {mark:#x} sets bits of the mark mask {mask:#x} that {config} reserves for the slow path (slow_path.mark_mask); use other bits, or move the mask"
    )]
    MarkInSlowPathMask {
        at: Box<Location>,
        mark: u32,
        mask: u32,
        config: String,
    },

    #[error(
        "{at}: the policy matches only {family} packets but next hop {next_hop:?} has no gateway{digit} and no mac; add one to the next hop"
    )]
    NextHopFamily {
        at: Box<Location>,
        next_hop: String,
        family: String,
        digit: u8,
    },
}

impl ConfigError {
    /// Where the error is, when it is in a file's content (not for read errors).
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::Version { at, .. }
            | ConfigError::InvalidName { at, .. }
            | ConfigError::DuplicateName { at, .. }
            | ConfigError::NoDirection { at, .. }
            | ConfigError::XdpWithoutIngress { at, .. }
            | ConfigError::NextHopWithoutAddress { at, .. }
            | ConfigError::NextHopInterface { at, .. }
            | ConfigError::InvalidTableId { at }
            | ConfigError::DuplicateTableId { at, .. }
            | ConfigError::DuplicateId { at, .. }
            | ConfigError::DuplicatePriority { at, .. }
            | ConfigError::UnknownNextHop { at, .. }
            | ConfigError::UnknownTable { at, .. }
            | ConfigError::UnknownInterface { at, .. }
            | ConfigError::NotIngress { at, .. }
            | ConfigError::MixedFamilies { at, .. }
            | ConfigError::PortsWithoutPorts { at, .. }
            | ConfigError::DscpOutOfRange { at, .. }
            | ConfigError::MarkOutsideMask { at, .. }
            | ConfigError::NextHopFamily { at, .. }
            | ConfigError::SlowPath { at, .. }
            | ConfigError::MarkInSlowPathMask { at, .. } => Some(at.as_ref()),
        }
    }
}

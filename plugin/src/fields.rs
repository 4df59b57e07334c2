//! The catalogue of AWS flow-log fields and how each is typed: VPC flow logs versions 2
//! to 11, and Transit Gateway flow logs (whose own fields are version 6).

/// How a field's text is validated and rendered in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Free text, emitted as a JSON string.
    Text,
    /// Unsigned integer no larger than the given maximum, emitted as a JSON number.
    UInt(u64),
    /// An IPv4 or IPv6 address, emitted as a JSON string.
    Ip,
}

/// One documented flow-log field.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    /// AWS name, with hyphens (`account-id`).
    pub name: &'static str,
    /// Output key, with underscores (`account_id`).
    pub key: &'static str,
    /// How the value is validated and rendered.
    pub kind: Kind,
    /// The flow-log version that introduced the field.
    pub version: u8,
}

const fn f(name: &'static str, key: &'static str, kind: Kind, version: u8) -> FieldSpec {
    FieldSpec {
        name,
        key,
        kind,
        version,
    }
}

const U8: Kind = Kind::UInt(u8::MAX as u64);
const U16: Kind = Kind::UInt(u16::MAX as u64);
const U32: Kind = Kind::UInt(u32::MAX as u64);
const U64: Kind = Kind::UInt(u64::MAX);

/// Every field AWS documents, in the order of AWS's table.
pub const FIELDS: &[FieldSpec] = &[
    f("version", "version", U8, 2),
    f("account-id", "account_id", Kind::Text, 2),
    f("interface-id", "interface_id", Kind::Text, 2),
    f("srcaddr", "srcaddr", Kind::Ip, 2),
    f("dstaddr", "dstaddr", Kind::Ip, 2),
    f("srcport", "srcport", U16, 2),
    f("dstport", "dstport", U16, 2),
    f("protocol", "protocol", U8, 2),
    f("packets", "packets", U64, 2),
    f("bytes", "bytes", U64, 2),
    f("start", "start", U64, 2),
    f("end", "end", U64, 2),
    f("action", "action", Kind::Text, 2),
    f("log-status", "log_status", Kind::Text, 2),
    f("vpc-id", "vpc_id", Kind::Text, 3),
    f("subnet-id", "subnet_id", Kind::Text, 3),
    f("instance-id", "instance_id", Kind::Text, 3),
    f("tcp-flags", "tcp_flags", U32, 3),
    f("type", "type", Kind::Text, 3),
    f("pkt-srcaddr", "pkt_srcaddr", Kind::Ip, 3),
    f("pkt-dstaddr", "pkt_dstaddr", Kind::Ip, 3),
    f("region", "region", Kind::Text, 4),
    f("az-id", "az_id", Kind::Text, 4),
    f("sublocation-type", "sublocation_type", Kind::Text, 4),
    f("sublocation-id", "sublocation_id", Kind::Text, 4),
    f("pkt-src-aws-service", "pkt_src_aws_service", Kind::Text, 5),
    f("pkt-dst-aws-service", "pkt_dst_aws_service", Kind::Text, 5),
    f("flow-direction", "flow_direction", Kind::Text, 5),
    f("traffic-path", "traffic_path", U8, 5),
    f("ecs-cluster-arn", "ecs_cluster_arn", Kind::Text, 7),
    f("ecs-cluster-name", "ecs_cluster_name", Kind::Text, 7),
    f(
        "ecs-container-instance-arn",
        "ecs_container_instance_arn",
        Kind::Text,
        7,
    ),
    f(
        "ecs-container-instance-id",
        "ecs_container_instance_id",
        Kind::Text,
        7,
    ),
    f("ecs-container-id", "ecs_container_id", Kind::Text, 7),
    f(
        "ecs-second-container-id",
        "ecs_second_container_id",
        Kind::Text,
        7,
    ),
    f("ecs-service-name", "ecs_service_name", Kind::Text, 7),
    f(
        "ecs-task-definition-arn",
        "ecs_task_definition_arn",
        Kind::Text,
        7,
    ),
    f("ecs-task-arn", "ecs_task_arn", Kind::Text, 7),
    f("ecs-task-id", "ecs_task_id", Kind::Text, 7),
    f("reject-reason", "reject_reason", Kind::Text, 8),
    f("resource-id", "resource_id", Kind::Text, 9),
    f("encryption-status", "encryption_status", Kind::UInt(3), 10),
    f("instance-tag", "instance_tag", Kind::Text, 11),
    f("instance-tag-2", "instance_tag_2", Kind::Text, 11),
    f("interface-tag", "interface_tag", Kind::Text, 11),
    f("interface-tag-2", "interface_tag_2", Kind::Text, 11),
    f("asg-tag", "asg_tag", Kind::Text, 11),
    f("asg-tag-2", "asg_tag_2", Kind::Text, 11),
    f("interface-type", "interface_type", Kind::Text, 11),
    f(
        "next-hop-interface-id",
        "next_hop_interface_id",
        Kind::Text,
        11,
    ),
    f("next-hop-subnet-id", "next_hop_subnet_id", Kind::Text, 11),
    f("next-hop-az-id", "next_hop_az_id", Kind::Text, 11),
    f("next-hop-vpc-id", "next_hop_vpc_id", Kind::Text, 11),
    f(
        "next-hop-interface-type",
        "next_hop_interface_type",
        Kind::Text,
        11,
    ),
    // Transit Gateway flow logs (their version 6 table).
    f("resource-type", "resource_type", Kind::Text, 6),
    f("tgw-id", "tgw_id", Kind::Text, 6),
    f("tgw-attachment-id", "tgw_attachment_id", Kind::Text, 6),
    f(
        "tgw-src-vpc-account-id",
        "tgw_src_vpc_account_id",
        Kind::Text,
        6,
    ),
    f(
        "tgw-dst-vpc-account-id",
        "tgw_dst_vpc_account_id",
        Kind::Text,
        6,
    ),
    f("tgw-src-vpc-id", "tgw_src_vpc_id", Kind::Text, 6),
    f("tgw-dst-vpc-id", "tgw_dst_vpc_id", Kind::Text, 6),
    f("tgw-src-subnet-id", "tgw_src_subnet_id", Kind::Text, 6),
    f("tgw-dst-subnet-id", "tgw_dst_subnet_id", Kind::Text, 6),
    f("tgw-src-eni", "tgw_src_eni", Kind::Text, 6),
    f("tgw-dst-eni", "tgw_dst_eni", Kind::Text, 6),
    f("tgw-src-az-id", "tgw_src_az_id", Kind::Text, 6),
    f("tgw-dst-az-id", "tgw_dst_az_id", Kind::Text, 6),
    f(
        "tgw-pair-attachment-id",
        "tgw_pair_attachment_id",
        Kind::Text,
        6,
    ),
    f("packets-lost-no-route", "packets_lost_no_route", U64, 6),
    f("packets-lost-blackhole", "packets_lost_blackhole", U64, 6),
    f(
        "packets-lost-mtu-exceeded",
        "packets_lost_mtu_exceeded",
        U64,
        6,
    ),
    f(
        "packets-lost-ttl-expired",
        "packets_lost_ttl_expired",
        U64,
        6,
    ),
];

/// The reserved format name of Transit Gateway flow logs' default format.
pub const TGW_FORMAT_NAME: &str = "tgw";

/// The Transit Gateway flow logs' default format: all 36 fields in AWS's table order.
pub const TGW_FORMAT: &str = "version resource-type account-id tgw-id tgw-attachment-id tgw-src-vpc-account-id tgw-dst-vpc-account-id tgw-src-vpc-id tgw-dst-vpc-id tgw-src-subnet-id tgw-dst-subnet-id tgw-src-eni tgw-dst-eni tgw-src-az-id tgw-dst-az-id tgw-pair-attachment-id srcaddr dstaddr srcport dstport protocol packets bytes start end log-status type packets-lost-no-route packets-lost-blackhole packets-lost-mtu-exceeded packets-lost-ttl-expired tcp-flags region flow-direction pkt-src-aws-service pkt-dst-aws-service";

/// The AWS default format (version 2): the first 14 fields of [`FIELDS`].
pub const DEFAULT_FORMAT: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";

/// Index into [`FIELDS`] of a field name written with hyphens or underscores.
pub fn find(name: &str) -> Option<usize> {
    FIELDS.iter().position(|spec| {
        spec.name.len() == name.len()
            && spec
                .name
                .bytes()
                .zip(name.bytes())
                .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
    })
}

/// Index of `srcaddr` in [`FIELDS`].
pub const SRCADDR: usize = 3;
/// Index of `dstaddr` in [`FIELDS`].
pub const DSTADDR: usize = 4;
/// Index of `start` in [`FIELDS`].
pub const START: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_indexes() {
        assert_eq!(FIELDS[SRCADDR].name, "srcaddr");
        assert_eq!(FIELDS[DSTADDR].name, "dstaddr");
        assert_eq!(FIELDS[START].name, "start");
    }

    #[test]
    fn keys_are_names_with_underscores() {
        for spec in FIELDS {
            assert_eq!(spec.key, spec.name.replace('-', "_"));
        }
    }

    #[test]
    fn the_catalogue_is_the_documented_one() {
        // 54 VPC fields (versions 2-11) and the 18 fields only Transit Gateway logs have.
        assert_eq!(FIELDS.len(), 54 + 18);
        assert_eq!(FIELDS.iter().filter(|f| f.version == 6).count(), 18);
        let tgw: Vec<&str> = TGW_FORMAT.split(' ').collect();
        assert_eq!(tgw.len(), 36);
        for name in tgw {
            assert!(find(name).is_some(), "{name}");
        }
        assert!(find(TGW_FORMAT_NAME).is_none());
        assert!(FIELDS.len() <= u8::MAX as usize);
    }

    #[test]
    fn the_readme_lists_every_field_with_its_version_and_type() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let tgw: Vec<&str> = TGW_FORMAT.split(' ').collect();
        for spec in FIELDS {
            let json = match spec.kind {
                Kind::UInt(_) => "integer",
                Kind::Text | Kind::Ip => "string",
            };
            let in_tgw = if tgw.contains(&spec.name) { "yes" } else { "" };
            let row = format!("| `{}` | {} | {json} | {in_tgw} |", spec.name, spec.version);
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }

    #[test]
    fn find_accepts_both_spellings() {
        assert_eq!(find("log-status"), Some(13));
        assert_eq!(find("log_status"), Some(13));
        assert_eq!(find("logstatus"), None);
        assert_eq!(find("LOG-STATUS"), None);
    }
}

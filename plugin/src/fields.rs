//! The catalogue of AWS VPC flow-log fields (versions 2 to 8) and how each is typed.

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
];

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
    fn find_accepts_both_spellings() {
        assert_eq!(find("log-status"), Some(13));
        assert_eq!(find("log_status"), Some(13));
        assert_eq!(find("logstatus"), None);
        assert_eq!(find("LOG-STATUS"), None);
    }
}

//! What an EC2 network interface says about its addresses: who owns them, through the
//! configured tag mapping, and where they are.

use crate::metadata::Attrs;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The attributes every `aws_ec2` owner may carry besides the mapped ones (where AWS says
/// them); a mapping may not name them.
pub const AWS_ATTRIBUTES: [&str; 9] = [
    "account",
    "region",
    "zone",
    "vpc",
    "subnet",
    "interface",
    "interface_type",
    "requester",
    "instance",
];

/// One network interface, as the poller needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// `eni-...`.
    pub id: String,
    /// `interface`, `nat_gateway`, `network_load_balancer`, `vpc_endpoint`, `lambda`, ...
    pub interface_type: Option<String>,
    /// For an interface AWS manages on a service's behalf: who asked for it
    /// (`amazon-elb`, an account id, ...).
    pub requester: Option<String>,
    /// The owning account.
    pub account: Option<String>,
    /// Availability Zone.
    pub zone: Option<String>,
    /// VPC id.
    pub vpc: Option<String>,
    /// Subnet id.
    pub subnet: Option<String>,
    /// The instance it is attached to.
    pub instance: Option<String>,
    /// Its own tags, in AWS's order.
    pub tags: Vec<(String, String)>,
    /// Its private IPv4 and IPv6 addresses.
    pub private: Vec<IpAddr>,
    /// The public addresses associated with its private ones.
    pub public: Vec<IpAddr>,
}

impl Interface {
    /// The interface of a `DescribeNetworkInterfaces` answer. Addresses that do not parse
    /// are left out.
    pub fn from_sdk(found: &aws_sdk_ec2::types::NetworkInterface) -> Interface {
        let text = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        let parse = |s: Option<&str>| s.and_then(|s| s.parse::<IpAddr>().ok());
        let mut private: Vec<IpAddr> = found
            .private_ip_addresses()
            .iter()
            .filter_map(|a| parse(a.private_ip_address()))
            .collect();
        private.extend(parse(found.private_ip_address()));
        private.extend(
            found
                .ipv6_addresses()
                .iter()
                .filter_map(|a| parse(a.ipv6_address())),
        );
        let mut public: Vec<IpAddr> = found
            .private_ip_addresses()
            .iter()
            .filter_map(|a| parse(a.association().and_then(|a| a.public_ip())))
            .collect();
        public.extend(parse(found.association().and_then(|a| a.public_ip())));
        for list in [&mut private, &mut public] {
            list.sort_unstable();
            list.dedup();
        }
        Interface {
            id: found.network_interface_id().unwrap_or_default().to_string(),
            interface_type: found.interface_type().map(|t| t.as_str().to_string()),
            requester: found
                .requester_managed()
                .unwrap_or(false)
                .then(|| text(found.requester_id()))
                .flatten(),
            account: text(found.owner_id()),
            zone: text(found.availability_zone()),
            vpc: text(found.vpc_id()),
            subnet: text(found.subnet_id()),
            instance: text(found.attachment().and_then(|a| a.instance_id())),
            tags: tag_pairs(found.tag_set()),
            private,
            public,
        }
    }
}

/// Tags as (key, value) pairs, in AWS's order (a tag without a key is left out).
pub fn tag_pairs(tags: &[aws_sdk_ec2::types::Tag]) -> Vec<(String, String)> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// How tags become attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Attribute ← tag keys to try, first present wins (the interface's tags, then its
    /// instance's).
    pub tags: BTreeMap<String, Vec<String>>,
    /// Attribute ← a tag holding an `app-stack-detail-vNNN` name (an Auto Scaling
    /// group's): the attribute gets the name's application part, unless `tags` gave it a
    /// value.
    pub names: BTreeMap<String, String>,
}

/// The application part of an `app-stack-detail-vNNN` name (Netflix's naming
/// convention): what comes before the first `-`, once a `-vNNN` push suffix is removed.
pub fn application_of(name: &str) -> Option<&str> {
    let base = match name.rsplit_once("-v") {
        Some((base, push)) if push.len() >= 3 && push.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    let app = base.split('-').next().unwrap_or(base);
    (!app.is_empty()).then_some(app)
}

/// The owner of `interface`'s addresses (private and public): mapped attributes first,
/// then what AWS says (`region` is the poller's).
pub fn attributes(
    interface: &Interface,
    instance_tags: &[(String, String)],
    region: &str,
    mapping: &Mapping,
) -> Attrs {
    let tag = |key: &str| {
        interface
            .tags
            .iter()
            .chain(instance_tags)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut attrs = Attrs::new();
    for (attribute, keys) in &mapping.tags {
        // The interface's own tags come before its instance's.
        let found = keys
            .iter()
            .find_map(|key| interface.tags.iter().find(|(k, _)| k == key))
            .or_else(|| {
                keys.iter()
                    .find_map(|key| instance_tags.iter().find(|(k, _)| k == key))
            });
        if let Some((_, value)) = found {
            attrs.insert(attribute.clone(), value.clone());
        }
    }
    for (attribute, key) in &mapping.names {
        if attrs.contains_key(attribute) {
            continue;
        }
        if let Some(app) = tag(key).as_deref().and_then(application_of) {
            attrs.insert(attribute.clone(), app.to_string());
        }
    }
    let facts = [
        ("account", interface.account.as_deref()),
        ("region", Some(region)),
        ("zone", interface.zone.as_deref()),
        ("vpc", interface.vpc.as_deref()),
        ("subnet", interface.subnet.as_deref()),
        ("interface", Some(interface.id.as_str())),
        ("interface_type", interface.interface_type.as_deref()),
        ("requester", interface.requester.as_deref()),
        ("instance", interface.instance.as_deref()),
    ];
    for (key, value) in facts {
        if let Some(value) = value {
            attrs.insert(key.to_string(), value.to_string());
        }
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_parts_of_names() {
        for (name, app) in [
            ("api-prod-v012", Some("api")),
            ("api-prod-useast-v001", Some("api")),
            ("api-v123", Some("api")),
            ("api", Some("api")),
            ("api-prod", Some("api")),
            ("api-prod-v1", Some("api")),
            ("-v001", None),
            ("", None),
        ] {
            assert_eq!(application_of(name), app, "{name}");
        }
    }

    #[test]
    fn interface_tags_come_first_then_the_instances_then_names() {
        let interface = Interface {
            id: "eni-1".into(),
            interface_type: Some("interface".into()),
            account: Some("123456789012".into()),
            zone: Some("us-east-1a".into()),
            instance: Some("i-1".into()),
            tags: vec![("team".into(), "net".into())],
            ..Default::default()
        };
        let instance = vec![
            ("app".to_string(), "api".to_string()),
            ("team".to_string(), "web".to_string()),
            (
                "aws:autoscaling:groupName".to_string(),
                "billing-prod-v007".to_string(),
            ),
        ];
        let mapping = Mapping {
            tags: BTreeMap::from([
                ("app".into(), vec!["application".into(), "app".into()]),
                ("team".into(), vec!["team".into()]),
                ("owner".into(), vec!["owner".into()]),
            ]),
            names: BTreeMap::from([
                ("app".into(), "aws:autoscaling:groupName".into()),
                ("cluster_app".into(), "aws:autoscaling:groupName".into()),
            ]),
        };
        let attrs = attributes(&interface, &instance, "us-east-1", &mapping);
        let want: Attrs = [
            ("app", "api"),
            ("team", "net"),
            ("cluster_app", "billing"),
            ("account", "123456789012"),
            ("region", "us-east-1"),
            ("zone", "us-east-1a"),
            ("interface", "eni-1"),
            ("interface_type", "interface"),
            ("instance", "i-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(attrs, want);
    }
}

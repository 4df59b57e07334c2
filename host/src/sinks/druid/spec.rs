//! The Druid Kinesis supervisor spec that ingests the sink's stream.

use super::{COUNT_METRIC, DruidOutput, DruidSpec, INTEGER_FIELDS, METRICS};
use serde_json::{Value, json};

/// Druid's segment granularity for buckets of `secs` seconds: `HOUR` when they divide
/// an hour, `DAY` when they divide a day; `None` for other widths (refused by the
/// config check), since a query granularity must not be coarser than its segments.
pub fn segment_granularity(secs: u64) -> Option<&'static str> {
    match secs {
        0 => None,
        s if 3600 % s == 0 => Some("HOUR"),
        s if 86_400 % s == 0 => Some("DAY"),
        _ => None,
    }
}

/// Why no supervisor spec can be derived from a sink's settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The sink writes files, not a stream.
    #[error(
        "this druid sink writes files; a supervisor spec needs `stream_name` (or `stream_arn`)"
    )]
    WritesFiles,
    /// Neither a region nor an endpoint is known.
    #[error("set `region` (or `endpoint`): the spec must name the stream's endpoint")]
    NoEndpoint,
    /// The bucket width fits no segment granularity.
    #[error("granularity_secs = {0} divides neither an hour nor a day")]
    Granularity(u64),
}

/// The Druid Kinesis supervisor spec that ingests this sink's stream: dimensions typed
/// as they appear in the rows, `longSum` metrics over the pre-aggregated sums, and the
/// same rollup granularity.
pub fn supervisor_spec(spec: &DruidSpec) -> Result<Value, SpecError> {
    let DruidOutput::Kinesis(kinesis) = &spec.output else {
        return Err(SpecError::WritesFiles);
    };
    let stream = kinesis
        .stream
        .stream_name
        .clone()
        .or_else(|| {
            kinesis
                .stream
                .stream_arn
                .as_deref()
                .and_then(|arn| arn.rsplit('/').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    // A region the ARN names serves when none is configured.
    let arn_region = kinesis
        .stream
        .stream_arn
        .as_deref()
        .and_then(|arn| arn.split(':').nth(3))
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let endpoint = match (
        &kinesis.stream.endpoint,
        kinesis.stream.region.clone().or(arn_region),
    ) {
        // Druid's AWS SDK adds https:// to an endpoint without a scheme, so a plain-HTTP
        // endpoint keeps its scheme.
        (Some(endpoint), _) => endpoint.trim_start_matches("https://").to_string(),
        (None, Some(region)) if region.starts_with("cn-") => {
            format!("kinesis.{region}.amazonaws.com.cn")
        }
        (None, Some(region)) => format!("kinesis.{region}.amazonaws.com"),
        (None, None) => return Err(SpecError::NoEndpoint),
    };
    let segment = segment_granularity(spec.granularity_secs)
        .ok_or(SpecError::Granularity(spec.granularity_secs))?;
    let dimensions: Vec<Value> = spec
        .dimensions
        .iter()
        .map(|name| {
            let kind = if INTEGER_FIELDS.contains(&name.as_str()) {
                "long"
            } else {
                "string"
            };
            json!({"type": kind, "name": name})
        })
        .collect();
    let metrics: Vec<Value> = METRICS
        .iter()
        .map(|name| json!({"type": "longSum", "name": name, "fieldName": name}))
        .chain([json!({"type": "count", "name": COUNT_METRIC})])
        .collect();
    let query_granularity = match spec.granularity_secs {
        1 => json!("SECOND"),
        60 => json!("MINUTE"),
        900 => json!("FIFTEEN_MINUTE"),
        3600 => json!("HOUR"),
        86_400 => json!("DAY"),
        secs => json!({"type": "duration", "duration": secs * 1000}),
    };
    Ok(json!({
        "type": "kinesis",
        "spec": {
            "dataSchema": {
                "dataSource": spec.data_source,
                "timestampSpec": {"column": "timestamp", "format": "millis"},
                "dimensionsSpec": {"dimensions": dimensions},
                "metricsSpec": metrics,
                "granularitySpec": {
                    "type": "uniform",
                    "segmentGranularity": segment,
                    "queryGranularity": query_granularity,
                    "rollup": true
                }
            },
            "ioConfig": {
                "type": "kinesis",
                "stream": stream,
                "endpoint": endpoint,
                "inputFormat": {"type": "json"},
                "useEarliestSequenceNumber": true,
                "taskCount": 1,
                "replicas": 1,
                "taskDuration": "PT1H"
            },
            "tuningConfig": {"type": "kinesis", "maxRowsInMemory": 100000}
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::aws_kinesis::KinesisSinkSpec;
    use std::time::Duration;

    fn spec_with(granularity_secs: u64, stream: crate::aws::kinesis::StreamConfig) -> DruidSpec {
        DruidSpec {
            data_source: "d".into(),
            dimensions: vec!["src_app".into()],
            granularity_secs,
            flush_interval: Duration::from_secs(1),
            output: DruidOutput::Kinesis(KinesisSinkSpec {
                stream,
                partition_key: crate::sinks::aws_kinesis::PartitionKey::Spread,
            }),
            overlord_url: None,
            workers: 1,
        }
    }

    fn stream(
        name: Option<&str>,
        arn: Option<&str>,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> crate::aws::kinesis::StreamConfig {
        crate::aws::kinesis::StreamConfig {
            stream_name: name.map(String::from),
            stream_arn: arn.map(String::from),
            endpoint: endpoint.map(String::from),
            region: region.map(String::from),
        }
    }

    #[test]
    fn the_spec_follows_granularity_region_and_endpoint() {
        let io = |spec: &Value| spec["spec"]["ioConfig"]["endpoint"].clone();
        let granularity = |spec: &Value| spec["spec"]["dataSchema"]["granularitySpec"].clone();
        let plain = stream(Some("s"), None, None, Some("us-east-1"));
        let minute = supervisor_spec(&spec_with(60, plain.clone())).unwrap();
        assert_eq!(granularity(&minute)["segmentGranularity"], "HOUR");
        assert_eq!(granularity(&minute)["queryGranularity"], "MINUTE");
        assert_eq!(
            minute["spec"]["dataSchema"]["metricsSpec"][3],
            json!({"type": "count", "name": "sink_rows"})
        );
        let two_hours = supervisor_spec(&spec_with(7200, plain.clone())).unwrap();
        assert_eq!(granularity(&two_hours)["segmentGranularity"], "DAY");
        assert_eq!(
            granularity(&two_hours)["queryGranularity"],
            json!({"type": "duration", "duration": 7_200_000})
        );
        assert_eq!(
            granularity(&supervisor_spec(&spec_with(86_400, plain.clone())).unwrap())["segmentGranularity"],
            "DAY"
        );
        assert!(supervisor_spec(&spec_with(7, plain)).is_err());
        assert!(segment_granularity(100_000).is_none() && segment_granularity(0).is_none());
        let local = stream(Some("s"), None, Some("http://127.0.0.1:4567"), None);
        assert_eq!(
            io(&supervisor_spec(&spec_with(60, local)).unwrap()),
            "http://127.0.0.1:4567"
        );
        let tls = stream(Some("s"), None, Some("https://kinesis.example"), None);
        assert_eq!(
            io(&supervisor_spec(&spec_with(60, tls)).unwrap()),
            "kinesis.example"
        );
        let china = stream(Some("s"), None, None, Some("cn-north-1"));
        assert_eq!(
            io(&supervisor_spec(&spec_with(60, china)).unwrap()),
            "kinesis.cn-north-1.amazonaws.com.cn"
        );
        let arn = stream(
            None,
            Some("arn:aws:kinesis:eu-north-1:123456789012:stream/rollups"),
            None,
            None,
        );
        let by_arn = supervisor_spec(&spec_with(60, arn)).unwrap();
        assert_eq!(io(&by_arn), "kinesis.eu-north-1.amazonaws.com");
        assert_eq!(by_arn["spec"]["ioConfig"]["stream"], "rollups");
    }
}

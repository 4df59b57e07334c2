//! What every AWS client here shares: the configuration chain with endpoint and region
//! overrides, timeouts on every call, and the one tokio runtime the SDKs run on.

pub mod kinesis;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long connecting to an AWS endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt of an AWS call may take (a hung endpoint is given up on).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an AWS call may take with the SDK's own retries.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(25);

/// Where an AWS client connects: the keys every AWS component has (flattened into its
/// config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct ClientConfig {
    /// Endpoint override, e.g. a local Kinesis or DynamoDB (`http://127.0.0.1:4567`).
    /// Default: AWS's endpoint for the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region. Default: the standard AWS configuration chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl ClientConfig {
    /// AWS settings from the standard configuration chain (environment, profile, IMDS),
    /// with the region and endpoint overrides and timeouts on every call
    /// ([`CONNECT_TIMEOUT`], [`ATTEMPT_TIMEOUT`], [`OPERATION_TIMEOUT`]): what every AWS
    /// client here is made from.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        loader.load().await
    }
}

/// The process's one tokio runtime (the AWS SDKs, the admin endpoint, signals). Component
/// threads run their async work on it with `block_on` from their own thread; the
/// runtime's two worker threads drive the I/O and timers.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flowenrich-io")
            .enable_all()
            .build()
            .expect("the tokio runtime starts")
    })
}

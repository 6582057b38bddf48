//! The AWS side: who this instance is (from IMDSv2, through the SDK's client) and the EC2 and
//! Auto Scaling clients, configured the SDK's standard way (`AWS_REGION`, `AWS_ENDPOINT_URL`,
//! the instance role), so the same binary runs against moto in tests and EC2 in production.

use aws_config::BehaviorVersion;
use aws_config::imds;
use aws_config::retry::RetryConfig;

use crate::error::EniError;

/// How many times a throttled or failed EC2 call is tried, with the SDK's exponential backoff.
const MAX_ATTEMPTS: u32 = 8;

/// This instance, as the metadata service tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub instance_id: String,
    pub zone: String,
    pub region: String,
}

/// Reads this instance's id, zone and region. The SDK's client does the IMDSv2 handshake and
/// retries time-outs.
pub async fn whoami() -> Result<Me, EniError> {
    let client = imds::Client::builder().max_attempts(4).build();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(path)
                .await
                .map(|v| v.as_ref().trim().to_string())
                .map_err(|e| EniError::Metadata {
                    path,
                    source: Box::new(e),
                })
        }
    };
    Ok(Me {
        instance_id: get("/latest/meta-data/instance-id").await?,
        zone: get("/latest/meta-data/placement/availability-zone").await?,
        region: get("/latest/meta-data/placement/region").await?,
    })
}

/// The SDK's configuration; `region` (from instance metadata) is used when the environment
/// names none.
pub async fn config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
    if std::env::var_os("AWS_REGION").is_none()
        && let Some(region) = region
    {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    loader.load().await
}

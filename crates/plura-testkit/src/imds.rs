//! An instance metadata service (IMDSv2) for one simulated EC2 instance, on a loopback port.
//! Point `AWS_EC2_METADATA_SERVICE_ENDPOINT` at it and the real clients (the agent's, the AWS
//! SDK's) read this instance's id, zone and region.
//!
//! Like the real service it answers metadata only to a caller holding a session token from
//! `PUT /latest/api/token`, so a client that skips the IMDSv2 handshake fails here as on EC2.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{MethodRouter, get, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    pub availability_zone: String,
    pub region: String,
    pub instance_type: String,
    /// The tag `aws:autoscaling:groupName`, shown when the instance's metadata tags are on and
    /// it is in a group; `None` answers 404, as EC2 does.
    pub asg: Option<String>,
}

impl Instance {
    /// An instance of zone `a` of ap-northeast-2, not in an Auto Scaling group.
    pub fn in_seoul(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.into(),
            availability_zone: "ap-northeast-2a".into(),
            region: "ap-northeast-2".into(),
            instance_type: "c6i.large".into(),
            asg: None,
        }
    }
}

pub struct Imds {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    shutdown: CancellationToken,
}

struct Served {
    instance: Instance,
    token: String,
}

impl Imds {
    pub async fn start(instance: Instance) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(Served {
            token: format!("imds-token-{}", instance.instance_id),
            instance,
        });
        let app = Router::new()
            .route("/latest/api/token", put(session_token))
            .route(
                "/latest/meta-data/instance-id",
                metadata(|i| Some(&i.instance_id)),
            )
            .route(
                "/latest/meta-data/placement/availability-zone",
                metadata(|i| Some(&i.availability_zone)),
            )
            .route(
                "/latest/meta-data/placement/region",
                metadata(|i| Some(&i.region)),
            )
            .route(
                "/latest/meta-data/instance-type",
                metadata(|i| Some(&i.instance_type)),
            )
            .route(
                "/latest/meta-data/tags/instance/aws:autoscaling:groupName",
                metadata(|i| i.asg.as_ref()),
            )
            .with_state(served);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Self { endpoint, shutdown }
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// The session token, with the TTL it was asked for echoed back (the SDK insists on it).
async fn session_token(
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
) -> Result<([(&'static str, String); 1], String), StatusCode> {
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.parse::<u32>().is_ok_and(|ttl| (1..=21600).contains(&ttl)))
        .ok_or(StatusCode::BAD_REQUEST)?;
    Ok(([(TTL_HEADER, ttl.to_string())], served.token.clone()))
}

/// A metadata item, answered to holders of the session token only; 404 when the instance has
/// none.
fn metadata(pick: fn(&Instance) -> Option<&String>) -> MethodRouter<Arc<Served>> {
    get(
        move |State(served): State<Arc<Served>>, headers: HeaderMap| async move {
            let token = headers
                .get("x-aws-ec2-metadata-token")
                .and_then(|v| v.to_str().ok());
            if token != Some(served.token.as_str()) {
                return Err(StatusCode::UNAUTHORIZED);
            }
            pick(&served.instance).cloned().ok_or(StatusCode::NOT_FOUND)
        },
    )
}

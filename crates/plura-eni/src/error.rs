//! What can go wrong, and the exit code each failure leaves for the boot script to act on.
//! Failures of AWS calls keep the SDK's error as their source, with what was being done.

use std::error::Error;
use std::fmt;
use std::process::ExitCode;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum EniError {
    /// The pool has no interface to give in this zone: the instance must not go on with a fresh
    /// address (it would register as a new agent).
    #[error("pool {pool:?} has no available interface in {zone}: {in_use} of {total} in use{hint}")]
    EmptyPool {
        pool: String,
        zone: String,
        in_use: usize,
        total: usize,
        hint: &'static str,
    },
    /// `status --warn-below`: zones with fewer free interfaces than asked (zone, free).
    #[error("pool {pool:?} is low: {} (fewer than {below} free)", low(zones))]
    PoolLow {
        pool: String,
        below: usize,
        zones: Vec<(String, usize)>,
    },
    /// The interface was attached but never showed up on the host with its address.
    #[error(
        "{eni} was attached but no interface with MAC {mac} and address {ip} came up within {waited:?}"
    )]
    InterfaceNotUp {
        eni: String,
        mac: String,
        ip: String,
        waited: std::time::Duration,
    },
    /// A call to EC2 or Auto Scaling failed.
    #[error("cannot {action}: {source}")]
    Aws {
        action: String,
        #[source]
        source: AwsError,
    },
    /// The instance metadata service (IMDSv2) did not tell who this instance is.
    #[error("instance metadata (IMDSv2): {path}: {}", chain(source))]
    Metadata {
        path: &'static str,
        #[source]
        source: Box<aws_config::imds::client::error::ImdsError>,
    },
    /// AWS answered, but not with what the pool needs (a member without an address, a subnet
    /// that does not exist, an instance in no group).
    #[error("{0}")]
    Unexpected(String),
    /// Setting up this host (hostname, interface) failed.
    #[error("{what}: {source}")]
    Host {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An argument that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The PLURA server could not be reached, or refused a call.
    #[error("the PLURA server {server}: {why}")]
    Server { server: String, why: String },
}

/// `ap-northeast-2a has 1 free, ap-northeast-2c has 0 free`.
fn low(zones: &[(String, usize)]) -> String {
    let zones: Vec<String> = zones
        .iter()
        .map(|(zone, free)| match zone.as_str() {
            "-" => "it has no interfaces at all".to_string(),
            zone => format!("{zone} has {free} free"),
        })
        .collect();
    zones.join(", ")
}

impl EniError {
    pub const EMPTY_POOL: u8 = 3;
    pub const INTERFACE_NOT_UP: u8 = 4;
    pub const POOL_LOW: u8 = 5;

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::EmptyPool { .. } => Self::EMPTY_POOL,
            Self::InterfaceNotUp { .. } => Self::INTERFACE_NOT_UP,
            Self::PoolLow { .. } => Self::POOL_LOW,
            _ => 1,
        })
    }

    /// The AWS error code (`InvalidNetworkInterface.InUse`, …) when AWS answered with one.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            Self::Aws { source, .. } => source.code.as_deref(),
            _ => None,
        }
    }
}

/// A failed AWS call: the service's error code and message when it answered, otherwise the
/// transport's failure; the SDK's error is kept as the source.
#[derive(Debug)]
pub struct AwsError {
    code: Option<String>,
    message: Option<String>,
    source: Box<dyn Error + Send + Sync>,
}

impl<E, R> From<SdkError<E, R>> for AwsError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    fn from(e: SdkError<E, R>) -> Self {
        Self {
            code: e.code().map(str::to_string),
            message: e.message().map(str::to_string),
            source: Box::new(e),
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => write!(f, "{code}: {message}"),
            (Some(code), None) => write!(f, "{code}"),
            _ => write!(f, "{}", chain(self.source.as_ref())),
        }
    }
}

impl Error for AwsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// An error and its causes, `: `-separated: the SDK's own top-level messages ("dispatch
/// failure") say little without them.
pub(crate) fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Names what a failing AWS call was doing.
pub trait AwsContext<T> {
    fn doing(self, action: impl Into<String>) -> Result<T, EniError>;
}

impl<T, E: Into<AwsError>> AwsContext<T> for Result<T, E> {
    fn doing(self, action: impl Into<String>) -> Result<T, EniError> {
        self.map_err(|e| EniError::Aws {
            action: action.into(),
            source: e.into(),
        })
    }
}

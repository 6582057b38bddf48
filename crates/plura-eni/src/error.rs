//! What can go wrong, and the exit code each failure leaves for the boot script to act on.

use std::process::ExitCode;

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
    #[error("instance metadata (IMDSv2): {0}")]
    Metadata(String),
    #[error("EC2: {0}")]
    Aws(String),
    /// Setting up this host (hostname, interface) failed.
    #[error("{0}")]
    Host(String),
    /// An argument that cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl EniError {
    pub const EMPTY_POOL: u8 = 3;
    pub const INTERFACE_NOT_UP: u8 = 4;

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::EmptyPool { .. } => Self::EMPTY_POOL,
            Self::InterfaceNotUp { .. } => Self::INTERFACE_NOT_UP,
            _ => 1,
        })
    }

    /// An SDK failure, with the service's error code and message when there is one.
    pub fn aws<E>(context: &str, e: aws_sdk_ec2::error::SdkError<E>) -> Self
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        Self::Aws(format!("{context}: {}", describe(&e)))
    }
}

/// `Code: message` of a service error, or the transport failure.
pub fn describe<E>(e: &aws_sdk_ec2::error::SdkError<E>) -> String
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

//! Errors of one reconcile pass, each with a stable category and a class that decides what
//! happens next.

use crate::ishosting::{ApiError, ErrorClass};

/// An error that ended a reconcile pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Secret {namespace}/{name} not found: create it with the is*hosting API key under key {key:?}"
    )]
    SecretNotFound {
        namespace: String,
        name: String,
        key: String,
    },

    #[error(
        "Secret {namespace}/{name} has no key {key:?}: add the is*hosting API key under that key"
    )]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },

    #[error("Secret {namespace}/{name} key {key:?} is empty or not UTF-8 text")]
    SecretKeyInvalid {
        namespace: String,
        name: String,
        key: String,
    },

    #[error(
        "no API key: set spec.credentialsSecretRef, or start the operator with --default-secret"
    )]
    NoCredentials,

    #[error("{0}")]
    Api(#[from] ApiError),

    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),

    #[error("payment failed at the provider: {0}")]
    PaymentFailed(String),

    /// Deletion waits until an order whose outcome is unknown has settled at the provider.
    #[error("waiting {0:?} for an unconfirmed order to settle before deleting")]
    CleanupWaiting(std::time::Duration),
}

impl Error {
    /// Returns the stable PascalCase category, used as condition reason, event reason and
    /// metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Error::SecretNotFound { .. } => "SecretNotFound",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::SecretKeyInvalid { .. } => "SecretKeyInvalid",
            Error::NoCredentials => "NoCredentials",
            Error::Api(error) => error.category(),
            Error::Kube(_) => "KubernetesError",
            Error::MissingMetadata(_) => "InvalidResource",
            Error::PaymentFailed(_) => "PaymentFailed",
            Error::CleanupWaiting(_) => "CleanupWaiting",
        }
    }

    /// Returns what happens next: retry soon, wait for a person, or find out whether money
    /// moved before anything else is sent.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::SecretNotFound { .. }
            | Error::SecretKeyMissing { .. }
            | Error::SecretKeyInvalid { .. }
            | Error::NoCredentials
            | Error::MissingMetadata(_)
            | Error::PaymentFailed(_) => ErrorClass::NeedsUser,
            Error::Api(error) => error.class(),
            Error::Kube(_) | Error::CleanupWaiting(_) => ErrorClass::Transient,
        }
    }
}

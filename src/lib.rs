//! Kubernetes operator that orders, pays for and manages is*hosting VPS servers.
//!
//! Modules: [`crd`] defines the `IsHostingVps` resource, [`ishosting`] is the provider's
//! API client, [`simulator`] a faithful model of the provider's API for tests and demos,
//! [`controller`] the reconciler, [`leader`] the election among replicas, [`metrics`] and [`telemetry`] the operator's signals.

pub mod controller;
pub mod crd;
pub mod ishosting;
pub mod leader;
pub mod metrics;
pub mod simulator;
pub mod telemetry;

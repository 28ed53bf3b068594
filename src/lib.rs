//! Kubernetes operator that orders, pays for and manages is*hosting VPS servers.

pub mod simulator;

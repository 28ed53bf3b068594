//! HTTP client for the simulator's admin API, for tests and scripts.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use super::model::{Faults, RequestRecord, Stats};

/// Talks to `/_admin/` of a running simulator.
#[derive(Clone, Debug)]
pub struct AdminClient {
    base_url: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// `base_url` is the simulator's address, such as `http://127.0.0.1:8181`.
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        AdminClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// Builds an admin URL from path segments; each one is percent-encoded, so a
    /// key may hold any character.
    fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = Url::parse(&self.base_url)
            .with_context(|| format!("invalid simulator address {}", self.base_url))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("simulator address {} has no path", self.base_url))?
            .pop_if_empty()
            .push("_admin")
            .extend(segments);
        Ok(url)
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = self.url(segments)?;
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {} failed", url.path()))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("{method} {} returned {status}: {text}", url.path());
        }
        Ok(response)
    }

    async fn fetch<T: DeserializeOwned>(&self, segments: &[&str]) -> anyhow::Result<T> {
        let response = self.call(Method::GET, segments, None).await?;
        response
            .json()
            .await
            .with_context(|| format!("unexpected answer from /_admin/{}", segments.join("/")))
    }

    /// Creates an account for `api_key` with `balance` dollars; fails if one exists.
    pub async fn create_account(&self, api_key: &str, balance: Decimal) -> anyhow::Result<()> {
        let body = json!({"api_key": api_key, "balance": balance.to_string()});
        self.call(Method::POST, &["accounts"], Some(body)).await?;
        Ok(())
    }

    /// Adds `amount` dollars to the account's balance.
    pub async fn top_up(&self, api_key: &str, amount: Decimal) -> anyhow::Result<()> {
        let body = json!({"amount": amount.to_string()});
        self.call(Method::POST, &["accounts", api_key, "top-up"], Some(body))
            .await?;
        Ok(())
    }

    /// Expires the key (calls then get 401), or reissues it for another 70 days.
    pub async fn set_expired(&self, api_key: &str, expired: bool) -> anyhow::Result<()> {
        let body = json!({"expired": expired});
        self.call(Method::POST, &["accounts", api_key, "expired"], Some(body))
            .await?;
        Ok(())
    }

    /// Fetches the counters and contents of `GET /_admin/stats`.
    pub async fn stats(&self) -> anyhow::Result<Stats> {
        self.fetch(&["stats"]).await
    }

    /// Fetches the request log, oldest first (the most recent 10,000 records).
    pub async fn requests(&self) -> anyhow::Result<Vec<RequestRecord>> {
        self.fetch(&["requests"]).await
    }

    /// Replaces the injected faults.
    pub async fn set_faults(&self, faults: &Faults) -> anyhow::Result<()> {
        let body = serde_json::to_value(faults)?;
        self.call(Method::PUT, &["faults"], Some(body)).await?;
        Ok(())
    }

    /// Turns every injected fault off.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.call(Method::DELETE, &["faults"], None).await?;
        Ok(())
    }

    /// Moves the simulated clock forward by `seconds` (due dates, key blocks,
    /// key expiry, renewals).
    pub async fn advance_clock(&self, seconds: f64) -> anyhow::Result<()> {
        let body = json!({"seconds": seconds});
        self.call(Method::POST, &["clock", "advance"], Some(body))
            .await?;
        Ok(())
    }
}

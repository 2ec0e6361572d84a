//! The master's REST API, as the autoscaler uses it: what waits
//! (`GET /api/load`), the registered workers (`GET /api/workers`), a drain
//! (`PUT /api/workers/draining`) and its own state for the dashboard
//! (`PUT /api/autoscaler`) — with the API token, over https when the URL
//! says so (trusting `FAENA_TLS_CA_FILE`).

use std::time::Duration;

use faena_common::tls::TlsArgs;
use faena_proto::api::WorkerView;
use faena_proto::scaling::{AutoscalerView, DrainRequest, LoadView};
use faena_proto::secret::Secret;
use serde::Deserialize;

/// What went wrong talking to the master.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("master API: {0}")]
pub struct MasterError(pub String);

#[derive(Debug, Clone)]
pub struct Master {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

#[derive(Deserialize)]
struct Workers {
    workers: Vec<WorkerView>,
}

impl Master {
    pub fn new(url: &str, token: Option<Secret>, tls: &TlsArgs) -> Result<Self, MasterError> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(MasterError(format!("FAENA_URL={url:?}: expected http:// or https://")));
        }
        let tls = tls.client_config().map_err(|e| MasterError(e.to_string()))?;
        let http = faena_common::tls::http_client()
            .use_preconfigured_tls((*tls).clone())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| MasterError(format!("HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, MasterError> {
        let resp = req.send().await.map_err(|e| MasterError(format!("{what}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        Err(MasterError(format!("{what}: {status}: {}", message.chars().take(300).collect::<String>())))
    }

    pub async fn load(&self) -> Result<LoadView, MasterError> {
        let resp = self.send(self.request(reqwest::Method::GET, "/api/load"), "GET /api/load").await?;
        resp.json().await.map_err(|e| MasterError(format!("GET /api/load: {e}")))
    }

    pub async fn workers(&self) -> Result<Vec<WorkerView>, MasterError> {
        let resp = self.send(self.request(reqwest::Method::GET, "/api/workers"), "GET /api/workers").await?;
        let w: Workers = resp.json().await.map_err(|e| MasterError(format!("GET /api/workers: {e}")))?;
        Ok(w.workers)
    }

    /// `workers` get no new work for `hold` (an empty list: all get it back).
    pub async fn drain(&self, workers: Vec<String>, hold: Duration) -> Result<(), MasterError> {
        let body = DrainRequest { workers, for_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX) };
        let req = self.request(reqwest::Method::PUT, "/api/workers/draining").json(&body);
        self.send(req, "PUT /api/workers/draining").await.map(drop)
    }

    pub async fn report(&self, view: &AutoscalerView) -> Result<(), MasterError> {
        let req = self.request(reqwest::Method::PUT, "/api/autoscaler").json(view);
        self.send(req, "PUT /api/autoscaler").await.map(drop)
    }
}

//! The two Docker Engine API calls the autoscaler makes, over the engine's
//! Unix socket: read a service (its version and spec) and update its
//! replica count. Nothing else is asked of the engine.

use std::path::Path;

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Docker {
    http: reqwest::Client,
}

/// What the engine (or the way to it) said went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Docker Engine API: {0}")]
pub struct DockerError(pub String);

/// The host part is ignored: every request goes to the socket.
const BASE: &str = "http://docker";

impl Docker {
    pub fn new(socket: &Path) -> Result<Self, DockerError> {
        let http = faena_common::tls::http_client()
            .unix_socket(socket.to_path_buf())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| DockerError(format!("client for {}: {e}", socket.display())))?;
        Ok(Self { http })
    }

    /// The service's id, version index and spec.
    async fn service(&self, name: &str) -> Result<(String, u64, Value), DockerError> {
        let url = format!("{BASE}/services/{name}");
        let resp = self.http.get(&url).send().await.map_err(|e| DockerError(format!("GET {url}: {e}")))?;
        let body = answer(resp, &url).await?;
        let id = body["ID"].as_str().ok_or_else(|| DockerError(format!("{url}: no ID")))?.to_owned();
        let version = body["Version"]["Index"].as_u64().ok_or_else(|| DockerError(format!("{url}: no version")))?;
        Ok((id, version, body["Spec"].clone()))
    }

    /// The replicas the service is set to (a global service has none).
    pub async fn replicas(&self, name: &str) -> Result<u32, DockerError> {
        let (_, _, spec) = self.service(name).await?;
        replicas(&spec).ok_or_else(|| DockerError(format!("service {name} is not a replicated service")))
    }

    /// Sets the service to `to` replicas (the rest of its spec as it is).
    pub async fn scale(&self, name: &str, to: u32) -> Result<(), DockerError> {
        let (id, version, mut spec) = self.service(name).await?;
        if replicas(&spec).is_none() {
            return Err(DockerError(format!("service {name} is not a replicated service")));
        }
        spec["Mode"]["Replicated"]["Replicas"] = to.into();
        let url = format!("{BASE}/services/{id}/update?version={version}");
        let resp =
            self.http.post(&url).json(&spec).send().await.map_err(|e| DockerError(format!("POST {url}: {e}")))?;
        answer(resp, &url).await.map(|_| ())
    }
}

fn replicas(spec: &Value) -> Option<u32> {
    spec["Mode"]["Replicated"]["Replicas"].as_u64().and_then(|r| u32::try_from(r).ok())
}

async fn answer(resp: reqwest::Response, url: &str) -> Result<Value, DockerError> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let message = body["message"].as_str().unwrap_or("no message");
    Err(DockerError(format!("{url}: {status}: {message}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the engine on a Unix socket: the real client, the
    /// real wire format (the fields the engine sends and reads).
    #[tokio::test]
    async fn reads_and_updates_a_services_replicas_over_the_socket() {
        use axum::extract::{Path, Query, State};
        use axum::routing::{get, post};
        use std::sync::{Arc, Mutex};

        let dir = std::env::temp_dir().join(format!("faena-docker-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let spec =
            serde_json::json!({"Name": "faena_worker", "Mode": {"Replicated": {"Replicas": 2}}, "Labels": {"x": "y"}});
        let state = Arc::new(Mutex::new((7u64, spec)));
        let app = axum::Router::new()
            .route(
                "/services/{name}",
                get(|Path(name): Path<String>, State(s): State<Arc<Mutex<(u64, Value)>>>| async move {
                    let s = s.lock().expect("lock");
                    if name != "faena_worker" && name != "svc-id" {
                        let body = serde_json::json!({"message": format!("service {name} not found")});
                        return (axum::http::StatusCode::NOT_FOUND, axum::Json(body));
                    }
                    let body = serde_json::json!({"ID": "svc-id", "Version": {"Index": s.0}, "Spec": s.1});
                    (axum::http::StatusCode::OK, axum::Json(body))
                }),
            )
            .route(
                "/services/{id}/update",
                post(
                    |Query(q): Query<std::collections::HashMap<String, u64>>,
                     State(s): State<Arc<Mutex<(u64, Value)>>>,
                     axum::Json(spec): axum::Json<Value>| async move {
                        let mut s = s.lock().expect("lock");
                        if q.get("version") != Some(&s.0) {
                            let body = serde_json::json!({"message": "update out of sequence"});
                            return (axum::http::StatusCode::BAD_REQUEST, axum::Json(body));
                        }
                        *s = (s.0 + 1, spec);
                        (axum::http::StatusCode::OK, axum::Json(serde_json::json!({"Warnings": null})))
                    },
                ),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let docker = Docker::new(&socket).expect("client");
        assert_eq!(docker.replicas("faena_worker").await, Ok(2));
        docker.scale("faena_worker", 5).await.expect("scaled");
        assert_eq!(docker.replicas("faena_worker").await, Ok(5));
        let (version, spec) = state.lock().expect("lock").clone();
        assert_eq!((version, &spec["Labels"]["x"]), (8, &serde_json::json!("y")), "the rest of the spec is kept");
        let e = docker.replicas("nope").await.expect_err("unknown service");
        assert!(e.0.contains("404") && e.0.contains("service nope not found"), "{e}");
        let gone = Docker::new(&dir.join("absent.sock")).expect("client");
        assert!(gone.replicas("faena_worker").await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

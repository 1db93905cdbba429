//! palisade-client: a small typed HTTP client for the server's Vault API,
//! used by the `palisade` CLI and the end-to-end tests. It speaks plain JSON
//! over reqwest (rustls + aws-lc-rs); TLS verification is always on, with an
//! optional extra CA file (`PALISADE_CACERT` / `VAULT_CACERT`).
#![forbid(unsafe_code)]

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status; `errors` is Vault's list.
    #[error("Error making API request.\n\nURL: {method} {url}\nCode: {status}. Errors:\n\n{}", errors.iter().map(|e| format!("* {e}")).collect::<Vec<_>>().join("\n"))]
    Api {
        method: String,
        url: String,
        status: u16,
        errors: Vec<String>,
        body: Option<Box<Value>>,
    },
    /// The server could not be reached or the exchange failed.
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Config(String),
}

/// One response: status and parsed JSON body (None for 204 or HEAD).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    /// `data` of a Vault envelope (or the body itself for raw sys endpoints).
    pub fn data(&self) -> Value {
        match &self.body {
            Some(b) => b
                .get("data")
                .cloned()
                .filter(|d| !d.is_null())
                .unwrap_or_else(|| b.clone()),
            None => Value::Null,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    addr: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl Client {
    pub fn new(
        addr: &str,
        token: Option<String>,
        ca_file: Option<&str>,
    ) -> Result<Self, ClientError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent("palisade-cli");
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| ClientError::Config(format!("cannot read CA file {ca}: {e}")))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError::Config(format!("invalid CA file {ca}: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build().map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Self {
            http,
            addr: addr.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// Send one request to `/v1/<path>`; a status >= 400 becomes [`ClientError::Api`].
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let m = Method::from_bytes(method.as_bytes())
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut rb = self.http.request(m, &url);
        if let Some(t) = &self.token {
            rb = rb.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            rb = rb
                .header("Content-Type", ct)
                .body(serde_json::to_vec(b).map_err(|e| ClientError::Config(e.to_string()))?);
        }
        let resp = rb.send().await.map_err(|e| {
            ClientError::Transport(format!(
                "error connecting to {}: {}",
                self.addr,
                root_cause(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        if status >= 400 {
            let errors = body
                .as_ref()
                .and_then(|b| b.get("errors"))
                .and_then(|e| e.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            return Err(ClientError::Api {
                method: method.to_string(),
                url,
                status,
                errors,
                body: body.map(Box::new),
            });
        }
        Ok(Reply { status, body })
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

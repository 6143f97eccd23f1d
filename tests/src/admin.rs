//! A client of a running server's admin API for the tests: real HTTP with reqwest, a token
//! made directly in the server's store, and JSON answers with their status.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use syncline_server::app::RunningServer;
use syncline_server::storage::AdminRole;

/// Calls one server's admin API with one set of credentials.
#[derive(Clone)]
pub struct AdminClient {
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<String>,
}

/// Returns a new API token of `role`, made in the running server's store.
pub fn token_for(server: &RunningServer, role: AdminRole) -> String {
    syncline_server::admin::create_token_in(server.store().as_ref(), "test", role).expect("token")
}

impl AdminClient {
    /// Returns a client of `server`'s admin API with a new token of `role` (`None`: none).
    pub fn new(server: &RunningServer, role: Option<AdminRole>) -> Self {
        Self { base: server.admin_url(), http: reqwest::Client::new(), token: role.map(|role| token_for(server, role)) }
    }

    /// Sends `method path` with an optional JSON body; returns the status and the JSON
    /// answer (`Null` for an empty one). Panics when the answer is not JSON.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the admin API answers");
        read(response).await
    }

    /// Sends a raw body with a content type (malformed-input tests).
    pub async fn call_raw(&self, method: Method, path: &str, content_type: &str, body: &str) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("the admin API answers")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
}

/// Returns a response's status and JSON body (`Null` when empty).
pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a body");
    if text.is_empty() {
        return (status, Value::Null);
    }
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
    (status, json)
}

/// Asserts that an answer is a typed error: `status` and a body with `code` and `message`.
pub fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert_eq!(answer.1["code"], code, "{answer:?}");
    assert!(answer.1["message"].as_str().is_some_and(|message| !message.is_empty()), "{answer:?}");
}

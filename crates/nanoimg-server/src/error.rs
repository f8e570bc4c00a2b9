//! The server's one error type and its wire form, the OpenAI error body:
//! `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nanoimg_core::InvalidParam;
use nanoimg_store::StoreError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error`, `server_error`, …
    pub kind: &'static str,
    /// A stable machine-readable code.
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Further fields of the error object (e.g. moderation's `categories`).
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

/// Puts a response that the framework made (a path or query that does not parse, a method the
/// route does not have, a wrong content type) into the API's error shape, keeping its status and
/// its text as the message. Responses already in JSON pass through.
pub async fn framework_rejection(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_lowercase()
    } else {
        text
    };
    let (kind, code) = match status {
        StatusCode::NOT_FOUND => ("not_found_error", "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => ("invalid_request_error", "method_not_allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "request_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("invalid_request_error", "unsupported_media_type"),
        s if s.is_server_error() => ("server_error", "server_error"),
        _ => ("invalid_request_error", "invalid_request"),
    };
    let mut out = ApiError::new(status, kind, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            headers: Vec::new(),
            extra: None,
        }
    }

    /// 400 for a parameter, naming it.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_value",
                message,
            )
        }
    }

    /// 400 for a body that could not be read at all.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", code, message)
            .with_header("www-authenticate", "Bearer")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "insufficient_scope",
            message,
        )
    }

    /// 404 that says the same whether the object is missing or someone else's.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_request_error", code, message)
    }

    /// 429 with `Retry-After` (whole seconds, at least 1).
    pub fn rate_limited(code: &'static str, message: impl Into<String>, retry_after_s: f64) -> Self {
        let secs = retry_after_s.ceil().max(1.0) as u64;
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", code, message)
            .with_header("retry-after", &secs.to_string())
    }

    /// 503 when the server cannot take more work now.
    pub fn overloaded(code: &'static str, message: impl Into<String>, retry_after_s: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", code, message)
            .with_header("retry-after", &retry_after_s.max(1).to_string())
    }

    /// 500: the details go to the log, the client gets the request id to quote.
    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "the server failed to handle this request; quote the x-request-id header when reporting it",
        )
    }

    /// The same error with another status (for body errors that are 413 rather than 400).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        if status.is_client_error() {
            self.status = status;
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                self.code = "payload_too_large";
            }
        }
        self
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    /// The same error, naming the request field it is about.
    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    /// Adds a field to the error object.
    pub fn with_extra(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        });
        for (k, v) in self.extra.iter().flat_map(|m| m.iter()) {
            error[k] = v.clone();
        }
        serde_json::json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(self.body());
        let mut res = (self.status, body).into_response();
        for (k, v) in self.headers {
            res.headers_mut().append(k, v);
        }
        res
    }
}

impl From<InvalidParam> for ApiError {
    fn from(e: InvalidParam) -> Self {
        ApiError::invalid(e.param, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(m) => ApiError::conflict("conflict", m),
            StoreError::Invalid(m) => ApiError::bad_request("invalid_value", m),
            e => ApiError::internal(e),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<crate::jobs::JobError> for ApiError {
    /// The one place a job's refusal or failure becomes an HTTP error.
    fn from(e: crate::jobs::JobError) -> Self {
        use crate::jobs::JobError as J;
        let code = e.code();
        match e {
            J::Cancelled => ApiError::conflict(code, "the job was cancelled"),
            J::ShuttingDown(m) => ApiError::overloaded(code, m, 5),
            e @ J::TooManyJobs { .. } => ApiError::rate_limited(code, e.to_string(), 2.0),
            e @ J::QueueFull(_) => ApiError::overloaded(code, e.to_string(), 5),
            J::InvalidValue(m) | J::InvalidImage(m) | J::InputUnavailable(m) => {
                ApiError::bad_request(code, m)
            }
            J::ModerationBlocked { message, categories } => ApiError::bad_request(code, message)
                .with_param("prompt")
                .with_extra("categories", serde_json::json!(categories)),
            J::TimedOut(m) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", code, m),
            J::ModelUnavailable(m) | J::WorkerLost(m) | J::Internal(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", code, m)
            }
        }
    }
}

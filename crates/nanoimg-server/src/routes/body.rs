//! Reading request bodies into typed values with errors in the API's format: JSON with unknown
//! fields refused by name, and multipart forms with text fields and image files.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::Multipart;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Parses a JSON body; the message says which field and what was wrong.
pub(crate) fn json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty; send a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| schema_error("invalid_json", e))
}

/// Parses an already-read JSON value into `T`.
pub(crate) fn from_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| schema_error("invalid_value", e))
}

/// As [`from_value`], for a value that was a JSON body: errors as [`json`]'s.
pub(crate) fn from_body_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| schema_error("invalid_json", e))
}

/// The error for a body that does not fit the schema, naming the field: the path where the
/// value was wrong, or the field that was unknown or missing.
fn schema_error(code: &'static str, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let msg = e.inner().to_string();
    // serde names unknown and missing fields in backticks.
    let named = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.contains("field"))
        .map(str::to_owned);
    let param = if path != "." { Some(path) } else { named };
    let message = match &param {
        Some(p) if !msg.contains(&format!("`{p}`")) => format!("invalid request body: `{p}`: {msg}"),
        _ => format!("invalid request body: {msg}"),
    };
    let mut err = ApiError::bad_request(code, message);
    err.param = param;
    err
}

/// A parsed multipart form.
#[derive(Default)]
pub(crate) struct Form {
    /// Text fields, in order.
    pub fields: Vec<(String, String)>,
    /// File fields: (field name, bytes).
    pub files: Vec<(String, Bytes)>,
}

impl Form {
    pub async fn read(mut mp: Multipart) -> Result<Self, ApiError> {
        let mut form = Form::default();
        let bad = |e: axum::extract::multipart::MultipartError| {
            ApiError::bad_request(
                "invalid_multipart",
                format!("cannot read the form: {}", e.body_text()),
            )
            .with_status(e.status())
        };
        while let Some(field) = mp.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or_default().to_owned();
            if form.fields.len() + form.files.len() >= 64 {
                return Err(ApiError::bad_request("invalid_multipart", "too many form fields"));
            }
            if field.file_name().is_some() || field.content_type().is_some_and(|c| !c.starts_with("text/")) {
                form.files.push((name, field.bytes().await.map_err(bad)?));
            } else {
                let text = field.text().await.map_err(bad)?;
                if text.len() > 64 * 1024 {
                    return Err(ApiError::invalid(name, "this field is longer than 64 KiB"));
                }
                form.fields.push((name, text));
            }
        }
        Ok(form)
    }

    /// The text fields as a JSON object for typed parsing: the fields named in `typed` are
    /// read as JSON numbers or booleans, every other field stays text.
    pub fn to_json(&self, typed: &[&str]) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        for (k, v) in &self.fields {
            let value = serde_json::from_str::<serde_json::Value>(v.trim())
                .ok()
                .filter(|j| typed.contains(&k.as_str()) && (j.is_number() || j.is_boolean()))
                .unwrap_or_else(|| serde_json::Value::String(v.clone()));
            obj.insert(k.clone(), value);
        }
        serde_json::Value::Object(obj)
    }

    /// The file fields named `name` (also `name[]`).
    pub fn files_named(&self, name: &str) -> Vec<&Bytes> {
        let alt = format!("{name}[]");
        self.files
            .iter()
            .filter(|(n, _)| n == name || *n == alt)
            .map(|(_, b)| b)
            .collect()
    }
}

/// Parses a form's text fields into `T`, with the same error messages as JSON bodies.
pub(crate) fn form_fields<T: DeserializeOwned>(
    form: &Form,
    files: &[&str],
    typed: &[&str],
) -> Result<T, ApiError> {
    from_value(form_value(form, files, typed)?)
}

/// A form's text fields as a JSON object (see [`Form::to_json`]), after checking that files
/// and text fields are where they belong.
pub(crate) fn form_value(form: &Form, files: &[&str], typed: &[&str]) -> Result<serde_json::Value, ApiError> {
    for (name, _) in &form.fields {
        let base = name.trim_end_matches("[]");
        if files.contains(&base) {
            return Err(ApiError::invalid(
                base,
                format!("`{base}` must be sent as a file"),
            ));
        }
    }
    for (name, _) in &form.files {
        let base = name.trim_end_matches("[]");
        if !files.contains(&base) {
            return Err(ApiError::invalid(base, format!("unexpected file field `{name}`")));
        }
    }
    Ok(form.to_json(typed))
}

/// `?limit=` of listings that page by count only (jobs, edit sessions).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pub limit: Option<u32>,
}

//! A JSON body extractor whose rejections are genq errors: syntax errors are 400, wrong values
//! are 422 naming the field (via serde_path_to_error), oversized bodies are 413, bodies that do not
//! arrive in time are 408.

use axum::{
    body::Bytes,
    extract::{
        FromRequest, Request,
        rejection::{BytesRejection, FailedToBufferBody},
    },
};
use serde::de::DeserializeOwned;

use crate::{AppState, error::ApiError};

pub struct JsonBody<T>(pub T);

/// A route's own body limit, when it sets one beside `DefaultBodyLimit` (bulk intake): named in
/// its 413 answers.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(crate::BODY_LIMIT, |l| l.0);
        // A deadline for the whole body, not per chunk: a client sending a byte at a time must
        // not hold the request open.
        let read = tokio::time::timeout(state.body_timeout, Bytes::from_request(req, state))
            .await
            .map_err(|_| ApiError::RequestTimeout {
                secs: state.body_timeout.as_secs(),
            })?;
        let bytes = read.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::PayloadTooLarge { limit }
            }
            // Broken chunked encoding, or a client gone mid-body.
            other => ApiError::MalformedJson(format!(
                "the request body could not be read: {}",
                other.body_text()
            )),
        })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(refusal)?;
        // Text after the value (`{...} xx`, `{...}{}`) is a malformed body, not one to ignore.
        deserializer
            .end()
            .map_err(|e| ApiError::MalformedJson(format!("the body is not valid JSON: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// Why a body that is not the request it should be is refused: a wrong value (422, naming the
/// field), a value nested deeper than JSON parsing allows (422 too: the syntax is valid), or
/// broken JSON (400).
fn refusal(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.to_string();
    if inner.is_data() {
        let field = match (path.as_str(), missing_field(&message)) {
            (".", _) => field_in_message(&message),
            (_, Some(missing)) => format!("{path}.{missing}"),
            (_, None) => path,
        };
        ApiError::invalid(field, format!("invalid request body: {inner}"))
    } else if message.starts_with("recursion limit exceeded") {
        // The field the nesting is in (`stop`, `jobs[3].stop`), not the levels of `[0]` below.
        let mut field = path.as_str();
        while let Some(outer) = field.strip_suffix(']').and_then(|f| f.rsplit_once('[')) {
            field = outer.0;
        }
        let field = match field {
            "." | "" => "body".to_owned(),
            field => field.to_owned(),
        };
        ApiError::invalid(
            field,
            format!("invalid request body: JSON nested more than {MAX_DEPTH} levels deep"),
        )
    } else {
        ApiError::MalformedJson(format!("the body is not valid JSON: {inner}"))
    }
}

/// serde_json's recursion limit, which no genq request comes near.
const MAX_DEPTH: usize = 128;

/// serde names the field of "missing field `prompts`" or "unknown field `x`" only in its message.
fn field_in_message(message: &str) -> String {
    message.split('`').nth(1).unwrap_or("body").to_owned()
}

/// A missing field's path stops at the object that lacks it (an unknown field's includes it).
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

//! A JSON body extractor whose rejections are genq errors: syntax errors are 400, wrong values
//! are 422 naming the field (via serde_path_to_error), oversized bodies are 413.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, rejection::BytesRejection},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge {
                limit: crate::BODY_LIMIT,
            },
            other => ApiError::MalformedJson(other.body_text()),
        })?;
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(deserializer) {
            Ok(value) => Ok(JsonBody(value)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_data() {
                    let field = if path == "." {
                        field_in_message(&inner.to_string())
                    } else {
                        path
                    };
                    Err(ApiError::invalid(
                        field,
                        format!("invalid request body: {inner}"),
                    ))
                } else {
                    Err(ApiError::MalformedJson(format!(
                        "the body is not valid JSON: {inner}"
                    )))
                }
            }
        }
    }
}

/// serde names the field of "missing field `prompts`" or "unknown field `x`" only in its message.
fn field_in_message(message: &str) -> String {
    message.split('`').nth(1).unwrap_or("body").to_owned()
}

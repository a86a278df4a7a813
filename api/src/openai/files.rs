//! OpenAI's Files API: `POST /v1/files` (multipart upload), list, retrieve, download, delete.
//!
//! Files are stored in PostgreSQL (`files`, `file_chunks`), where every API replica reads them,
//! in chunks of 1 MiB, inside one transaction per upload: an upload that breaks off leaves
//! nothing. Neither an upload nor a download holds more than a chunk and a line in memory.
//! A `batch` file is checked as it arrives: UTF-8 JSONL, each line a JSON object of at most
//! [`MAX_LINE_BYTES`], at most [`MAX_LINES`] lines.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    body::{Body, Bytes},
    extract::{
        DefaultBodyLimit, Multipart, Path, Query, State,
        multipart::{Field, MultipartRejection},
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use genq_shared::db::{self, files::FileRow};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{OpenAiErrorBody, unix};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
    routes::query_map,
};

/// Largest file, as OpenAI allows for batch input.
pub const MAX_FILE_BYTES: usize = 200 * 1024 * 1024;
/// Most request lines in a batch file, as OpenAI allows.
pub const MAX_LINES: usize = 50_000;
/// Longest line: a genq request body's limit.
pub const MAX_LINE_BYTES: usize = crate::BODY_LIMIT;
/// What may be uploaded; only `batch` files can start a batch.
const PURPOSES: [&str; 6] = [
    "batch",
    "assistants",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

pub fn router() -> OpenApiRouter<AppState> {
    let upload = OpenApiRouter::new()
        .routes(routes!(upload_file, list_files))
        // The multipart framing around the file, beside the file itself.
        .route_layer(DefaultBodyLimit::max(MAX_FILE_BYTES + 64 * 1024));
    OpenApiRouter::new()
        .merge(upload)
        .routes(routes!(retrieve_file, delete_file))
        .routes(routes!(file_content))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileObject {
    pub id: String,
    /// Always `file`.
    pub object: &'static str,
    pub bytes: i64,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub filename: String,
    /// `batch` (uploaded batch input), `batch_output` (a batch's output or error file), or
    /// another of OpenAI's purposes, stored unchecked.
    pub purpose: String,
    /// Always `processed`: a file is stored whole or not at all.
    pub status: &'static str,
    pub expires_at: Option<i64>,
    pub status_details: Option<String>,
}

impl From<FileRow> for FileObject {
    fn from(row: FileRow) -> Self {
        FileObject {
            id: row.id,
            object: "file",
            bytes: row.bytes,
            created_at: unix(row.created_at),
            filename: row.filename,
            purpose: row.purpose,
            status: "processed",
            expires_at: None,
            status_details: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<FileObject>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileDeleted {
    pub id: String,
    /// Always `file`.
    pub object: &'static str,
    pub deleted: bool,
}

/// The multipart form `POST /v1/files` takes.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// `batch` for batch input (checked as JSONL); `assistants`, `fine-tune`, `vision`,
    /// `user_data` and `evals` are stored unchecked.
    purpose: String,
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Upload a file
///
/// A `batch` file is UTF-8 JSONL: at most 50,000 lines, each a JSON object of at most 4 MiB, at
/// most 200 MB in all; its requests are checked when a batch is created from it.
#[utoipa::path(
    post,
    path = "/v1/files",
    tag = "openai",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The file, stored", body = FileObject),
        (status = 400, body = OpenAiErrorBody, description = "Not a multipart form with a \
            `purpose` and one `file`, an unknown purpose, or a `batch` file that is not JSONL \
            within the limits (the message names the line)"),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 408, body = OpenAiErrorBody, description = "The upload did not finish in time"),
        (status = 413, body = OpenAiErrorBody, description = "Larger than 200 MB"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable, or too \
            many uploads are in progress on this replica (a fifth of `GENQ_DB_MAX_CONNECTIONS`)"),
    )
)]
async fn upload_file(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Json<FileObject>> {
    let Ok(_permit) = state.uploads.clone().try_acquire_owned() else {
        return Err(ApiError::Unavailable(
            "too many uploads are in progress on this replica; retry shortly".into(),
        ));
    };
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(
            "file",
            format!("the body must be multipart/form-data: {}", e.body_text()),
        )
    })?;
    let received = tokio::time::timeout(
        state.upload_timeout,
        receive(&state, &caller, &mut multipart),
    )
    .await
    .map_err(|_| ApiError::RequestTimeout {
        secs: state.upload_timeout.as_secs(),
    })??;
    Ok(Json(received.into()))
}

async fn receive(state: &AppState, caller: &Caller, multipart: &mut Multipart) -> Result<FileRow> {
    let mut tx = state.db.begin().await?;
    // Open while the client sends the file, at its pace.
    db::allow_idle_in(&mut tx).await?;
    let id = db::files::new_id();
    let mut purpose: Option<String> = None;
    let mut stored: Option<(String, Stored)> = None;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        match field.name() {
            Some("purpose") => {
                let value = small_text(field).await?;
                if !PURPOSES.contains(&value.as_str()) {
                    return Err(ApiError::invalid(
                        "purpose",
                        format!(
                            "purpose must be one of {}; got '{value}'",
                            PURPOSES.join(", ")
                        ),
                    ));
                }
                purpose = Some(value);
            }
            Some("file") if stored.is_some() => {
                return Err(ApiError::invalid("file", "give one file per upload"));
            }
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
                if filename.len() > 512 {
                    return Err(ApiError::invalid(
                        "file",
                        "the file name is longer than 512 bytes",
                    ));
                }
                db::files::insert(&mut tx, &id, &caller.tenant, caller.key_id(), "", &filename)
                    .await?;
                let check = match purpose.as_deref() {
                    None => Check::UntilPurpose,
                    Some("batch") => Check::Batch,
                    Some(_) => Check::No,
                };
                stored = Some((filename, store(&mut tx, &id, field, check).await?));
            }
            // OpenAI's optional expiry fields: files here last until deleted.
            Some(name) if name.starts_with("expires_after") => drain(field).await?,
            Some(name) => {
                return Err(ApiError::invalid(
                    name.to_owned(),
                    format!("unknown form field '{name}'"),
                ));
            }
            None => return Err(ApiError::invalid("file", "a form field has no name")),
        }
    }
    let purpose =
        purpose.ok_or_else(|| ApiError::invalid("purpose", "the form has no purpose field"))?;
    let Some((filename, stored)) = stored else {
        return Err(ApiError::invalid("file", "the form has no file field"));
    };
    if purpose == "batch" {
        if let Some(problem) = stored.problem {
            return Err(ApiError::invalid("file", problem));
        }
        if stored.lines == 0 {
            return Err(ApiError::invalid("file", "the file has no request lines"));
        }
    }
    db::files::finish(
        &mut tx,
        &id,
        &purpose,
        stored.bytes as i64,
        stored.lines as i32,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(file = %id, bytes = stored.bytes, lines = stored.lines, %purpose, "file stored");
    Ok(FileRow {
        id,
        tenant: caller.tenant.clone(),
        purpose,
        filename,
        bytes: stored.bytes as i64,
        lines: stored.lines as i32,
        created_at: chrono::Utc::now(),
    })
}

/// What storing a file found.
struct Stored {
    bytes: usize,
    lines: usize,
    /// The first thing that makes it no batch file.
    problem: Option<String>,
}

/// Whether an arriving file is checked as batch input.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    /// Its purpose is `batch`: the first problem refuses it.
    Batch,
    /// Its purpose comes after it: a problem is kept for the purpose to decide.
    UntilPurpose,
    No,
}

/// Streams the field into chunks, checking it as `check` says.
async fn store(
    tx: &mut sqlx::PgConnection,
    id: &str,
    mut field: Field<'_>,
    mut check: Check,
) -> Result<Stored> {
    let mut lines = LineCheck::default();
    let mut buffer = Vec::with_capacity(db::files::CHUNK_BYTES);
    let (mut bytes, mut seq) = (0usize, 0i32);
    loop {
        let piece = field.chunk().await.map_err(malformed)?;
        let last = piece.is_none();
        if let Some(piece) = piece {
            bytes += piece.len();
            if bytes > MAX_FILE_BYTES {
                return Err(ApiError::PayloadTooLarge {
                    limit: MAX_FILE_BYTES,
                });
            }
            buffer.extend_from_slice(&piece);
        }
        if buffer.len() >= db::files::CHUNK_BYTES || (last && !buffer.is_empty()) {
            let chunk = std::mem::take(&mut buffer);
            // Parsing a MiB of JSON is CPU work: off the runtime.
            let checked = check != Check::No;
            let (returned, checker) = tokio::task::spawn_blocking(move || {
                let mut checker = lines;
                if checked {
                    checker.feed(&chunk, last);
                }
                (chunk, checker)
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
            lines = checker;
            if let Some(problem) = &lines.problem {
                if check == Check::Batch {
                    return Err(ApiError::invalid("file", problem.clone()));
                }
                check = Check::No;
            }
            db::files::insert_chunk(tx, id, seq, &returned).await?;
            seq += 1;
            buffer = returned;
            buffer.clear();
        }
        if last {
            break;
        }
    }
    Ok(Stored {
        bytes,
        lines: lines.lines,
        problem: lines.problem,
    })
}

/// Checks JSONL as it arrives: lines split across chunks are joined first.
#[derive(Default)]
struct LineCheck {
    partial: Vec<u8>,
    lines: usize,
    problem: Option<String>,
}

impl LineCheck {
    fn feed(&mut self, mut data: &[u8], last: bool) {
        while self.problem.is_none() {
            match data.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.partial.extend_from_slice(&data[..end]);
                    data = &data[end + 1..];
                    let line = std::mem::take(&mut self.partial);
                    self.line(&line);
                }
                None => {
                    self.partial.extend_from_slice(data);
                    if self.partial.len() > MAX_LINE_BYTES {
                        self.problem = Some(format!(
                            "line {} is longer than {MAX_LINE_BYTES} bytes",
                            self.lines + 1
                        ));
                    } else if last && !self.partial.is_empty() {
                        let line = std::mem::take(&mut self.partial);
                        self.line(&line);
                    }
                    return;
                }
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        self.lines += 1;
        let number = self.lines;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.problem = if line.len() > MAX_LINE_BYTES {
            Some(format!(
                "line {number} is longer than {MAX_LINE_BYTES} bytes"
            ))
        } else if number > MAX_LINES {
            Some(format!("the file has more than {MAX_LINES} lines"))
        } else if std::str::from_utf8(line).is_err() {
            Some(format!("line {number} is not UTF-8"))
        } else if line.trim_ascii().first() != Some(&b'{') {
            Some(format!(
                "line {number} is not a JSON object (a batch file is JSONL: one request a line)"
            ))
        } else {
            serde_json::from_slice::<serde::de::IgnoredAny>(line)
                .err()
                .map(|e| format!("line {number} is not valid JSON: {e}"))
        };
    }
}

async fn small_text(mut field: Field<'_>) -> Result<String> {
    let mut text = Vec::new();
    while let Some(piece) = field.chunk().await.map_err(malformed)? {
        text.extend_from_slice(&piece);
        if text.len() > 64 {
            return Err(ApiError::invalid(
                "purpose",
                "purpose is longer than 64 bytes",
            ));
        }
    }
    String::from_utf8(text).map_err(|_| ApiError::invalid("purpose", "purpose is not UTF-8"))
}

async fn drain(mut field: Field<'_>) -> Result<()> {
    while field.chunk().await.map_err(malformed)?.is_some() {}
    Ok(())
}

fn malformed(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge {
            limit: MAX_FILE_BYTES,
        };
    }
    ApiError::invalid(
        "file",
        format!("the multipart body is malformed: {}", e.body_text()),
    )
}

/// List files
#[utoipa::path(
    get,
    path = "/v1/files",
    tag = "openai",
    params(
        ("purpose" = Option<String>, Query, nullable = false, description = "Only files of this purpose"),
        ("limit" = Option<i64>, Query, nullable = false, minimum = 1, maximum = 10000,
            description = "At most this many (default 10,000)"),
        ("after" = Option<String>, Query, nullable = false,
            description = "The last id of the previous page"),
        ("order" = Option<String>, Query, nullable = false,
            description = "`desc` (newest first, the default) or `asc`"),
    ),
    responses(
        (status = 200, description = "The caller's files", body = FileList),
        (status = 400, body = OpenAiErrorBody, description = "A query parameter is not valid"),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn list_files(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<FileList>> {
    let query = query_map(query)?;
    let limit = super::batches::limit_of(&query, 10_000, 10_000)?;
    let newest_first = match query.get("order").map(String::as_str) {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(ApiError::invalid("order", "order must be asc or desc")),
    };
    let purpose = query.get("purpose").map(String::as_str);
    let after = query.get("after").map(String::as_str);
    let mut rows = db::files::list(
        &state.db,
        caller.scope(),
        purpose,
        limit + 1,
        after,
        newest_first,
    )
    .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data: Vec<FileObject> = rows.into_iter().map(FileObject::from).collect();
    Ok(Json(FileList {
        object: "list",
        first_id: data.first().map(|f| f.id.clone()),
        last_id: data.last().map(|f| f.id.clone()),
        has_more,
        data,
    }))
}

/// Retrieve a file
#[utoipa::path(
    get,
    path = "/v1/files/{file_id}",
    tag = "openai",
    params(("file_id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "The file", body = FileObject),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "No such file (for this tenant)"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn retrieve_file(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    file_id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<FileObject>> {
    let file = find(&state, &caller, file_id).await?;
    Ok(Json(file.into()))
}

/// Delete a file
#[utoipa::path(
    delete,
    path = "/v1/files/{file_id}",
    tag = "openai",
    params(("file_id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "Deleted", body = FileDeleted),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "No such file (for this tenant)"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn delete_file(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    file_id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<FileDeleted>> {
    let id = path_id(file_id)?;
    if !db::files::delete(&state.db, &id, caller.scope()).await? {
        return Err(no_file(&id));
    }
    Ok(Json(FileDeleted {
        id,
        object: "file",
        deleted: true,
    }))
}

/// Download a file
///
/// The file's bytes as uploaded (or as the batch wrote them), streamed.
#[utoipa::path(
    get,
    path = "/v1/files/{file_id}/content",
    tag = "openai",
    params(("file_id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream",
            body = Vec<u8>),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "No such file (for this tenant)"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn file_content(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    file_id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let file = find(&state, &caller, file_id).await?;
    let (pool, id) = (state.db.clone(), file.id.clone());
    // One chunk at a time: memory does not grow with the file.
    let chunks = futures::stream::unfold(Some(0), move |seq| {
        let (pool, id) = (pool.clone(), id.clone());
        async move {
            let seq = seq?;
            match db::files::chunk(&pool, &id, seq).await {
                Ok(Some(data)) => Some((Ok(Bytes::from(data)), Some(seq + 1))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.bytes));
    Ok(response)
}

async fn find(
    state: &AppState,
    caller: &Caller,
    file_id: std::result::Result<Path<String>, PathRejection>,
) -> Result<FileRow> {
    let id = path_id(file_id)?;
    db::files::get(&state.db, &id, caller.scope())
        .await?
        .ok_or_else(|| no_file(&id))
}

pub(super) fn path_id(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::NotFound(format!("no such object: {}", e.body_text())))
}

pub(super) fn no_file(id: &str) -> ApiError {
    ApiError::NotFound(format!("no file '{id}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(data: &[&[u8]]) -> LineCheck {
        let mut check = LineCheck::default();
        for (i, piece) in data.iter().enumerate() {
            check.feed(piece, i + 1 == data.len());
        }
        check
    }

    #[test]
    fn lines_split_across_chunks_are_checked_whole() {
        let checked = check(&[b"{\"a\": 1}\n{\"b\"", b": 2}\n{\"c\": 3}"]);

        assert_eq!(checked.problem, None);
        assert_eq!(checked.lines, 3);
    }

    #[test]
    fn the_first_bad_line_is_named() {
        assert_eq!(
            check(&[b"{}\n[1]\n{}\n"]).problem.as_deref(),
            Some("line 2 is not a JSON object (a batch file is JSONL: one request a line)")
        );
        assert!(
            check(&[b"{}\n{\"a\": }\n"])
                .problem
                .unwrap()
                .starts_with("line 2 is not valid JSON")
        );
        assert_eq!(
            check(&[b"{}\n\xff\n"]).problem.as_deref(),
            Some("line 2 is not UTF-8")
        );
    }

    #[test]
    fn a_line_past_the_limit_is_refused_before_it_ends() {
        let long = vec![b' '; MAX_LINE_BYTES + 1];

        assert_eq!(
            check(&[b"{}\n", &long, b"x"]).problem.as_deref(),
            Some(format!("line 2 is longer than {MAX_LINE_BYTES} bytes").as_str())
        );
    }

    #[test]
    fn more_lines_than_allowed_are_refused() {
        let file = "{}\n".repeat(MAX_LINES + 1);

        assert_eq!(
            check(&[file.as_bytes()]).problem.as_deref(),
            Some("the file has more than 50000 lines")
        );
    }
}

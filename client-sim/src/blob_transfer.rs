//! Blob uploads and downloads over HTTP(S) on the device listener (see "Blobs" in
//! `device.proto`): [`BlobClient`] uploads a file in pieces, resuming from what the server
//! holds after a cut, and downloads with `Range`, resuming the same way, checking the
//! SHA-256 of what it got.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use syncline_proto::v1::{Blob, ErrorCode};

/// Bytes sent per upload request: a cut costs at most this much again, and a piece is one
/// request's worth of memory.
pub const UPLOAD_PIECE_BYTES: usize = 1024 * 1024;

/// Attempts of one upload or download before it gives up (each resumes where the previous
/// one stopped).
pub const MAX_TRANSFER_ATTEMPTS: usize = 8;

/// Limit on one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's header of the bytes it holds of an upload.
const UPLOAD_OFFSET: &str = "upload-offset";

/// The server's header of a stored blob's size, on `HEAD`.
const UPLOAD_LENGTH: &str = "upload-length";

/// Why a blob transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobTransferError {
    /// The server refused the blob for good (too large, bytes that do not match the hash,
    /// no right to read it, unknown): `code` says which, as a device protocol code.
    #[error("the server refused the blob ({code:?}): {message}")]
    Refused {
        /// The kind of refusal.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The session token was refused: log in again, then retry.
    #[error("the session token was refused: {0}")]
    Unauthenticated(String),
    /// The network or the server failed; retrying later may work.
    #[error("the transfer failed; retry later: {0}")]
    Transient(String),
    /// The bytes downloaded do not hash to the blob's hash.
    #[error("the downloaded bytes hash to {actual}, not {expected}")]
    Corrupt {
        /// The blob's hash.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

impl BlobTransferError {
    /// Returns true when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, BlobTransferError::Transient(_) | BlobTransferError::Unauthenticated(_))
    }
}

/// Returns the SHA-256 of `bytes` as 64 lowercase hex digits (a blob's hash).
pub fn blob_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Returns the reference to `bytes` a record carries.
pub fn blob_of(bytes: &[u8], media_type: &str, name: &str) -> Blob {
    Blob { hash: blob_hash(bytes), size: bytes.len() as u64, media_type: media_type.to_owned(), name: name.to_owned() }
}

/// An HTTP client of one server's blob endpoint.
#[derive(Clone, Debug)]
pub struct BlobClient {
    http: reqwest::Client,
    /// `http(s)://host:port/v1/blobs`.
    base: String,
}

impl BlobClient {
    /// Returns a client of the server whose device socket is `device_url`
    /// (`ws(s)://host:port/v1/sync`), trusting `ca_cert_pem` for `wss://`.
    pub fn new(device_url: &str, ca_cert_pem: Option<&[u8]>) -> Result<Self, BlobTransferError> {
        let origin = device_url
            .strip_suffix(syncline_proto::SYNC_PATH)
            .unwrap_or(device_url)
            .replacen("wss://", "https://", 1)
            .replacen("ws://", "http://", 1);
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(pem) = ca_cert_pem {
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|error| BlobTransferError::Transient(format!("bad CA certificate: {error}")))?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build().map_err(|error| BlobTransferError::Transient(error.to_string()))?;
        Ok(Self { http, base: format!("{origin}{}", syncline_proto::BLOBS_PATH) })
    }

    /// Returns the URL of blob `hash`.
    pub fn url(&self, hash: &str) -> String {
        format!("{}/{hash}", self.base)
    }

    /// Returns how many bytes of the blob the server holds for this device, and whether it
    /// is stored whole.
    pub async fn held(&self, token: &str, hash: &str) -> Result<(u64, bool), BlobTransferError> {
        let response = self.http.head(self.url(hash)).bearer_auth(token).send().await.map_err(transient)?;
        let response = checked(response).await?;
        let header = |name: &str| {
            response.headers().get(name).and_then(|value| value.to_str().ok()).and_then(|text| text.parse::<u64>().ok())
        };
        match header(UPLOAD_LENGTH) {
            Some(size) => Ok((size, true)),
            None => Ok((header(UPLOAD_OFFSET).unwrap_or(0), false)),
        }
    }

    /// Uploads `bytes` as blob `blob`: asks what the server holds, then sends the rest in
    /// pieces of [`UPLOAD_PIECE_BYTES`]; after a cut it asks again and resumes, at most
    /// [`MAX_TRANSFER_ATTEMPTS`] times. Returns once the server stored the blob (at once
    /// when it had it already).
    pub async fn upload(&self, token: &str, blob: &Blob, bytes: &[u8]) -> Result<(), BlobTransferError> {
        let total = bytes.len() as u64;
        let mut last_error = None;
        for _ in 0..MAX_TRANSFER_ATTEMPTS {
            match self.upload_from_held(token, blob, bytes, total).await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_transient() && !matches!(error, BlobTransferError::Unauthenticated(_)) => {
                    tracing::debug!(%error, hash = %blob.hash, "blob upload cut; resuming");
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| BlobTransferError::Transient("no attempt made".to_owned())))
    }

    async fn upload_from_held(
        &self,
        token: &str,
        blob: &Blob,
        bytes: &[u8],
        total: u64,
    ) -> Result<(), BlobTransferError> {
        let (mut held, stored) = self.held(token, &blob.hash).await?;
        if stored {
            return Ok(());
        }
        // Every piece moves the upload on; a server that keeps answering otherwise is cut off.
        let most_requests = bytes.len() / UPLOAD_PIECE_BYTES + MAX_TRANSFER_ATTEMPTS;
        for _ in 0..=most_requests {
            let first = usize::try_from(held).unwrap_or(usize::MAX).min(bytes.len());
            let end = (first + UPLOAD_PIECE_BYTES).min(bytes.len());
            let mut request = self
                .http
                .put(self.url(&blob.hash))
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, blob.media_type.as_str())
                .body(bytes[first..end].to_vec());
            request = if total == 0 {
                request.header(reqwest::header::CONTENT_RANGE, "bytes */0")
            } else {
                request.header(reqwest::header::CONTENT_RANGE, format!("bytes {first}-{}/{total}", end - 1))
            };
            let response = request.send().await.map_err(transient)?;
            let status = response.status();
            let offset = response
                .headers()
                .get(UPLOAD_OFFSET)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.parse::<u64>().ok());
            if status == reqwest::StatusCode::CONFLICT
                && let Some(offset) = offset
            {
                // The server holds another amount (a piece of ours arrived after all).
                held = offset;
                continue;
            }
            let response = checked(response).await?;
            match response.status() {
                reqwest::StatusCode::OK | reqwest::StatusCode::CREATED => return Ok(()),
                _ => held = offset.unwrap_or(end as u64),
            }
        }
        Err(BlobTransferError::Transient(format!("the server took no more than {held} bytes of the upload")))
    }

    /// Downloads blob `blob` (naming the record that references it, when given, as
    /// `(source, key, id)`), resuming with `Range` after a cut, at most
    /// [`MAX_TRANSFER_ATTEMPTS`] times; checks the bytes against the blob's hash.
    pub async fn download(
        &self,
        token: &str,
        blob: &Blob,
        record: Option<(&str, &str, &str)>,
    ) -> Result<Vec<u8>, BlobTransferError> {
        let mut bytes: Vec<u8> = Vec::new();
        let mut last_error = None;
        for _ in 0..MAX_TRANSFER_ATTEMPTS {
            let mut request = self.http.get(self.url(&blob.hash)).bearer_auth(token);
            if let Some((source, key, id)) = record {
                request = request.query(&[("source", source), ("key", key), ("id", id)]);
            }
            if !bytes.is_empty() {
                request = request.header(reqwest::header::RANGE, format!("bytes={}-", bytes.len()));
            }
            let response = match request.send().await.map_err(transient) {
                Ok(response) => checked(response).await?,
                Err(error) => {
                    last_error = Some(error);
                    continue;
                }
            };
            let mut response = response;
            let cut = loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                    Ok(None) => break None,
                    Err(error) => break Some(transient(error)),
                }
            };
            match cut {
                Some(error) => last_error = Some(error),
                None => {
                    let actual = blob_hash(&bytes);
                    if actual != blob.hash {
                        return Err(BlobTransferError::Corrupt { expected: blob.hash.clone(), actual });
                    }
                    return Ok(bytes);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| BlobTransferError::Transient("no attempt made".to_owned())))
    }
}

fn transient(error: reqwest::Error) -> BlobTransferError {
    BlobTransferError::Transient(error.to_string())
}

/// Returns a successful response, or the typed error of a refusal (JSON `{"code",
/// "message"}`).
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, BlobTransferError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    #[derive(serde::Deserialize, Default)]
    struct ErrorBody {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let body: ErrorBody = response.json().await.unwrap_or_default();
    let message = if body.message.is_empty() { status.to_string() } else { body.message };
    let code = match (status.as_u16(), body.code.as_str()) {
        (401, _) => return Err(BlobTransferError::Unauthenticated(message)),
        (413, _) | (_, "blob_too_large") => ErrorCode::ResourceExhausted,
        (422, _) | (_, "hash_mismatch") | (400, _) => ErrorCode::BadRequest,
        (403, _) => ErrorCode::Forbidden,
        (404, _) => ErrorCode::NotFound,
        (code, _) if code >= 500 || code == 429 || code == 409 => return Err(BlobTransferError::Transient(message)),
        _ => ErrorCode::BadRequest,
    };
    Err(BlobTransferError::Refused { code, message })
}

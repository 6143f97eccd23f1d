//! CORS on the device listener's HTTP routes: a browser app served from another origin (the
//! usual case: the app on `https://app.example.com`, Syncline on `https://sync.example.com`)
//! downloads bulk files and uploads and downloads blobs with `fetch`, which the browser only
//! allows when the answers say so.
//!
//! Allowed origins come from `device.cors_origins`; the default, any origin, is acceptable
//! only because every one of these routes authenticates with a bearer token the page itself
//! must hold (`Authorization: Bearer`: a bulk file's token or the session token) and none
//! with cookies or other credentials a browser attaches on its own. A page of another site
//! therefore gets nothing it could not get without a browser, and the answers never allow
//! credentials (`Access-Control-Allow-Credentials` is never sent), so a cookie could not be
//! used even if one existed.
//!
//! Preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered by the layer
//! itself, before authentication: it carries no token by definition.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::blobs::{UPLOAD_LENGTH, UPLOAD_OFFSET};
use crate::config::CorsOrigins;

/// How long a browser may cache a preflight answer: ten minutes (Chromium's own cap is two
/// hours; shorter keeps a changed allow-list effective soon).
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Request headers a page may send: the bearer token, a resumed download's range and
/// `If-Range`, an upload's media type and piece (`Content-Range`).
const ALLOWED_REQUEST_HEADERS: [HeaderName; 5] =
    [header::AUTHORIZATION, header::RANGE, header::IF_RANGE, header::CONTENT_TYPE, header::CONTENT_RANGE];

/// Returns the CORS layer for `origins`.
pub fn layer(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => {
            // Validated as plain ASCII origins when the config was read.
            AllowOrigin::list(list.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()))
        }
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::HEAD, Method::PUT])
        .allow_headers(ALLOWED_REQUEST_HEADERS)
        .expose_headers(exposed_headers())
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Response headers a page may read: what a resumed download and a resumed upload need, and
/// the bulk file's sequence and checksum.
fn exposed_headers() -> [HeaderName; 9] {
    [
        header::CONTENT_RANGE,
        header::CONTENT_LENGTH,
        header::ETAG,
        header::ACCEPT_RANGES,
        header::LAST_MODIFIED,
        HeaderName::from_static(UPLOAD_OFFSET),
        HeaderName::from_static(UPLOAD_LENGTH),
        HeaderName::from_static("syncline-sequence"),
        HeaderName::from_static("syncline-checksum"),
    ]
}

//! The one pagination helper of the admin API's list endpoints: `?cursor=...&limit=...` in,
//! `{"items": [...], "next_cursor": "..."}` out. A cursor is opaque to callers: the
//! base64url of the last key a page returned, which the next page starts after.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};

/// Items per page when the caller names no limit.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// Most items per page: bounds one answer and the store read behind it.
pub const MAX_PAGE_LIMIT: usize = 500;
/// Longest cursor accepted, in characters: longer than any key the API pages by.
const MAX_CURSOR_CHARS: usize = 4096;

/// The paging parameters of a list request.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Where to continue: the `next_cursor` of the previous page (absent: from the start).
    pub cursor: Option<String>,
    /// Most items to return (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A validated page request: the key to start after and how many items to return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// The last key of the previous page (`None`: from the start).
    pub after: Option<String>,
    pub limit: usize,
}

impl PageQuery {
    /// Checks the parameters: 400 for a cursor this API did not hand out or a limit out of
    /// range.
    pub fn request(&self) -> ApiResult<PageRequest> {
        let limit = match self.limit {
            None => DEFAULT_PAGE_LIMIT,
            Some(limit) if (1..=MAX_PAGE_LIMIT as u32).contains(&limit) => limit as usize,
            Some(limit) => return Err(ApiError::bad_request(format!("limit {limit} is not 1 to {MAX_PAGE_LIMIT}"))),
        };
        let after = self.cursor.as_deref().filter(|cursor| !cursor.is_empty()).map(decode_cursor).transpose()?;
        Ok(PageRequest { after, limit })
    }
}

fn decode_cursor(cursor: &str) -> ApiResult<String> {
    let bad = || ApiError::bad_request("the cursor is not one this API returned");
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// Returns the cursor that continues after `key`.
pub(super) fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// One page of a list.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` items read after the request's cursor: the
    /// extra item, when there, only says that another page follows (`key` names an item's
    /// position).
    pub fn from_overfetched(mut items: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> String) -> Self {
        let more = items.len() > request.limit;
        items.truncate(request.limit);
        let next_cursor = if more { items.last().map(|item| encode_cursor(&key(item))) } else { None };
        Self { items, next_cursor }
    }

    /// Builds a page from every item of a small, sorted list (`key` gives each item's
    /// position, ascending).
    pub fn from_sorted(items: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> String) -> Self {
        let after: Vec<T> = match &request.after {
            Some(after) => items.into_iter().filter(|item| key(item).as_str() > after.as_str()).collect(),
            None => items,
        };
        let taken: Vec<T> = after.into_iter().take(request.limit + 1).collect();
        Self::from_overfetched(taken, request, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_a_list_without_gaps_or_repeats() {
        let items: Vec<String> = (0..7).map(|n| format!("k{n}")).collect();
        let mut seen = Vec::new();
        let mut query = PageQuery { cursor: None, limit: Some(3) };
        loop {
            let request = query.request().unwrap();
            let page = Page::from_sorted(items.clone(), &request, Clone::clone);
            seen.extend(page.items.clone());
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn bad_limits_and_cursors_are_bad_requests() {
        for limit in [0, 501] {
            let error = PageQuery { cursor: None, limit: Some(limit) }.request().unwrap_err();
            assert_eq!(error.status, 400);
        }
        let error = PageQuery { cursor: Some("!!".into()), limit: None }.request().unwrap_err();
        assert_eq!((error.status.as_u16(), error.code), (400, "bad_request"));
        assert_eq!(PageQuery::default().request().unwrap(), PageRequest { after: None, limit: DEFAULT_PAGE_LIMIT });
    }
}

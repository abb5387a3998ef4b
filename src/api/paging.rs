//! Paged listings: ListOrders, ListTickets and GetInventory answer at most a page of read
//! models, bounded in count and in bytes, with a cursor for the next page. A store's
//! history is not bounded, and one answer must never hold all of it in memory.

use prost::Message;

use super::error::ApiError;
use crate::store::StoreError;

/// Items in a page when the request names no limit.
pub const PAGE_ITEMS_DEFAULT: usize = 100;
/// Items in a page at most.
pub const PAGE_ITEMS_MAX: usize = 1_000;
/// Encoded bytes in a page at most (one item more may cross it; one order is at most a few
/// tens of KB under the rules' bounds).
pub const PAGE_BYTES_MAX: usize = 1 << 20;

/// One page and the cursor of its last item, if more items follow.
pub struct Page<P> {
    pub items: Vec<P>,
    /// Empty on the last page.
    pub next: String,
}

/// The items of `listing` that `keep` selects, converted by `to_pb`, up to `limit` (0: the
/// default) items or `PAGE_BYTES_MAX` bytes.
pub fn page<T, P: Message>(
    listing: impl Iterator<Item = Result<(String, T), StoreError>>,
    limit: u32,
    keep: impl Fn(&T) -> bool,
    to_pb: impl Fn(T) -> P,
) -> Result<Page<P>, ApiError> {
    let limit = match usize::try_from(limit) {
        Ok(0) => PAGE_ITEMS_DEFAULT,
        Ok(n) if n <= PAGE_ITEMS_MAX => n,
        _ => return Err(ApiError::PageTooLarge { limit }),
    };
    let mut items = Vec::new();
    let mut bytes = 0;
    let mut last = String::new();
    for item in listing {
        let (cursor, item) = item?;
        if !keep(&item) {
            continue;
        }
        if items.len() == limit || bytes >= PAGE_BYTES_MAX {
            return Ok(Page { items, next: last });
        }
        let item = to_pb(item);
        bytes += item.encoded_len();
        items.push(item);
        last = cursor;
    }
    Ok(Page {
        items,
        next: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(
        n: usize,
        size: usize,
    ) -> impl Iterator<Item = Result<(String, String), StoreError>> {
        (0..n).map(move |i| Ok((format!("{i:04}"), "x".repeat(size))))
    }

    fn wrap(s: String) -> prost_types::Value {
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(s)),
        }
    }

    #[test]
    fn pages_stop_at_the_limit_and_name_the_cursor_of_their_last_item() {
        let first = page(listing(5, 1), 2, |_| true, wrap).expect("a page");
        assert_eq!((first.items.len(), first.next.as_str()), (2, "0001"));
        let exact = page(listing(2, 1), 2, |_| true, wrap).expect("a page");
        assert_eq!(
            (exact.items.len(), exact.next.as_str()),
            (2, ""),
            "no empty page follows the last"
        );
        // A filter that keeps nothing after the first page's end: no next page either.
        let filtered = page(listing(5, 1), 2, |s: &String| s.len() == 1, wrap).expect("page");
        assert_eq!(filtered.next, "0001");
        let default = page(listing(500, 1), 0, |_| true, wrap).expect("a page");
        assert_eq!(default.items.len(), PAGE_ITEMS_DEFAULT);
    }

    #[test]
    fn pages_stop_at_the_byte_bound_and_refuse_oversize_limits() {
        let big = page(listing(100, 100_000), 1_000, |_| true, wrap).expect("a page");
        assert_eq!(
            big.items.len(),
            11,
            "the item that crosses 1 MiB is the last"
        );
        assert_eq!(big.next, "0010");
        let refused = page(listing(1, 1), 1_001, |_| true, wrap)
            .err()
            .expect("refused");
        let status = tonic::Status::from(refused);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("1001"), "{status:?}");
    }
}

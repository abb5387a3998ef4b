//! Bootstrap: the live state (orders, tickets, stock) as of one seq, in messages bounded
//! like listing pages, for a device that starts without the history (a new screen, or one
//! whose cursor fell below retention). The state is copied in one step
//! (`StateReader::live_state`), so every message names the same seq and the device
//! subscribes from it with nothing missed or applied twice. Kitchen and bar screens get
//! orders without payments, as ListOrders gives them; the events after the seq reach them
//! redacted the same way.

use prost::Message;

use super::paging::{PAGE_BYTES_MAX, PAGE_ITEMS_MAX};
use super::view::View;
use crate::proto::{convert, pb};
use crate::store::LiveState;

/// The messages of one bootstrap: each at most `PAGE_ITEMS_MAX` records and about
/// `PAGE_BYTES_MAX` bytes (the record that crosses it is the last), the last one marked.
/// A store with nothing live still answers one message, with its seq.
pub fn messages(live: LiveState, view: View) -> Vec<pb::BootstrapResponse> {
    let LiveState {
        applied,
        orders,
        tickets,
        stocks,
    } = live;
    let blank = pb::BootstrapResponse {
        seq: applied.last_seq,
        lamport: applied.lamport,
        ..pb::BootstrapResponse::default()
    };
    let mut pages = Pages {
        blank: blank.clone(),
        current: blank,
        items: 0,
        bytes: 0,
        done: Vec::new(),
    };
    for order in orders {
        let order = view.order(order);
        pages.add(order.encoded_len(), |m| m.orders.push(order));
    }
    for ticket in tickets {
        let ticket = convert::ticket(ticket);
        pages.add(ticket.encoded_len(), |m| m.tickets.push(ticket));
    }
    for stock in stocks {
        let stock = convert::stock(stock);
        pages.add(stock.encoded_len(), |m| m.stocks.push(stock));
    }
    pages.finish()
}

struct Pages {
    blank: pb::BootstrapResponse,
    current: pb::BootstrapResponse,
    items: usize,
    bytes: usize,
    done: Vec<pb::BootstrapResponse>,
}

impl Pages {
    fn add(&mut self, len: usize, put: impl FnOnce(&mut pb::BootstrapResponse)) {
        if self.items == PAGE_ITEMS_MAX || self.bytes >= PAGE_BYTES_MAX {
            let full = std::mem::replace(&mut self.current, self.blank.clone());
            self.done.push(full);
            self.items = 0;
            self.bytes = 0;
        }
        put(&mut self.current);
        self.items += 1;
        self.bytes += len;
    }

    fn finish(mut self) -> Vec<pb::BootstrapResponse> {
        self.current.last = true;
        self.done.push(self.current);
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Head;
    use crate::domain::inventory::Stock;
    use crate::domain::order::{Order, OrderStatus, Payment};
    use crate::store::Applied;

    fn order(n: usize, note_bytes: usize) -> Order {
        Order {
            id: format!("o-{n:05}"),
            status: OrderStatus::Paid,
            table_number: Some("x".repeat(note_bytes)),
            guest_count: Some(2),
            currency: Some("EUR".into()),
            items: Vec::new(),
            total: 1250,
            payments: vec![Payment {
                method: "card".into(),
                amount: 1250,
            }],
            head: Head {
                version: 2,
                lamport: 5,
                event_id: uuid::Uuid::from_u128(n as u128),
                seq: n as u64,
                hub_time_ms: 1_000,
            },
            lock: None,
            tickets: Vec::new(),
            created_ms: 900,
        }
    }

    fn live(orders: Vec<Order>) -> LiveState {
        LiveState {
            applied: Applied {
                last_seq: 4242,
                lamport: 77,
                ..Applied::default()
            },
            orders,
            tickets: Vec::new(),
            stocks: vec![Stock::empty("FRIES")],
        }
    }

    #[test]
    fn an_empty_store_answers_one_last_message_naming_its_seq() {
        let messages = messages(
            LiveState {
                stocks: Vec::new(),
                ..live(Vec::new())
            },
            View::Full,
        );
        assert_eq!(messages.len(), 1);
        assert!(messages[0].last);
        assert_eq!((messages[0].seq, messages[0].lamport), (4242, 77));
    }

    #[test]
    fn pages_are_bounded_in_count_and_bytes_and_only_the_final_one_is_last() {
        // 2,500 small orders: three pages by count.
        let by_count = messages(live((0..2_500).map(|n| order(n, 1)).collect()), View::Full);
        let sizes: Vec<usize> = by_count.iter().map(|m| m.orders.len()).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
        assert_eq!(by_count.last().map(|m| m.stocks.len()), Some(1));
        // 40 orders of 100 KB: about 1 MiB a page.
        let by_bytes = messages(
            live((0..40).map(|n| order(n, 100_000)).collect()),
            View::Full,
        );
        assert!(by_bytes.len() >= 4, "{} pages", by_bytes.len());
        for m in &by_bytes {
            assert!(
                m.encoded_len() < PAGE_BYTES_MAX + 200_000,
                "{}",
                m.encoded_len()
            );
        }
        for set in [&by_count, &by_bytes] {
            let lasts: Vec<bool> = set.iter().map(|m| m.last).collect();
            assert_eq!(lasts.iter().filter(|l| **l).count(), 1);
            assert_eq!(lasts.last(), Some(&true));
            assert!(set.iter().all(|m| m.seq == 4242 && m.lamport == 77));
        }
        let total: usize = by_bytes.iter().map(|m| m.orders.len()).sum();
        assert_eq!(total, 40);
    }

    #[test]
    fn kitchen_screens_get_orders_without_payments() {
        let full = messages(live(vec![order(1, 1)]), View::Full);
        let kitchen = messages(live(vec![order(1, 1)]), View::Kitchen);
        assert_eq!(full[0].orders[0].payments.len(), 1);
        assert!(kitchen[0].orders[0].payments.is_empty());
        assert_eq!(kitchen[0].orders[0].total, 1250);
    }
}

//! Order flows as a shop makes them, for `--hold`: each order is `order.created`, then
//! `order.updated` twice (more dishes, another round), then `order.paid`, with a fixed
//! number of orders open at any time whose next steps interleave. Every event is 0.5–2 KB
//! as JSON, and every flow is valid under the hub's rules (versions 1 to 4, payments that
//! add up to the order's total), so a hub accepts all of it.
//!
//! Deterministic: the same seed, client number, number of open orders and time base give
//! the same events, eventIds included.

use pos_hub::domain::{Actor, Clock, Event};
use serde_json::{Map, Value, json};

use super::load::{STORE, TENANT};

/// The smallest event the generator makes, as JSON bytes.
pub const EVENT_JSON_MIN: usize = 512;
/// The largest event the generator makes, as JSON bytes.
pub const EVENT_JSON_MAX: usize = 2048;

/// The order event types of one flow, in order.
pub const FLOW: [&str; 4] = [
    "order.created",
    "order.updated",
    "order.updated",
    "order.paid",
];

/// A small deterministic generator (SplitMix64): the bench needs reproducible flows, not
/// cryptographic randomness.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// (sku, name, unit price in cents, category): a diner's menu.
const MENU: [(&str, &str, i64, &str); 25] = [
    ("BURGER-CLASSIC", "Classic burger", 1250, "food"),
    ("BURGER-CHEESE", "Cheeseburger", 1395, "food"),
    ("BURGER-VEGGIE", "Veggie burger", 1295, "food"),
    ("FRIES", "Fries", 350, "food"),
    ("FRIES-SWEET", "Sweet potato fries", 450, "food"),
    ("ONION-RINGS", "Onion rings", 495, "food"),
    ("SALAD-CAESAR", "Caesar salad", 1095, "food"),
    ("SOUP-DAY", "Soup of the day", 695, "food"),
    ("WINGS-6", "Chicken wings (6)", 995, "food"),
    ("NACHOS", "Loaded nachos", 1195, "food"),
    ("STEAK-RIBEYE", "Ribeye steak 300 g", 2895, "food"),
    ("FISH-CHIPS", "Fish and chips", 1695, "food"),
    ("PASTA-CARBONARA", "Spaghetti carbonara", 1450, "food"),
    ("PIZZA-MARGHERITA", "Pizza margherita", 1250, "food"),
    ("BROWNIE", "Chocolate brownie", 650, "dessert"),
    ("CHEESECAKE", "New York cheesecake", 725, "dessert"),
    ("SUNDAE", "Ice cream sundae", 595, "dessert"),
    ("LEMONADE", "Lemonade", 450, "beverage"),
    ("COLA", "Cola", 350, "beverage"),
    ("ICED-TEA", "Iced tea", 395, "beverage"),
    ("COFFEE", "Filter coffee", 295, "beverage"),
    ("ESPRESSO", "Espresso", 275, "beverage"),
    ("BEER-DRAFT", "Draft beer 0.5 l", 650, "beverage"),
    ("WINE-RED", "House red, glass", 795, "beverage"),
    ("MILKSHAKE", "Vanilla milkshake", 595, "beverage"),
];

/// (id, name, price in cents): options and kitchen notes on a line.
const MODIFIERS: [(&str, &str, i64); 14] = [
    ("m-no-onion", "No onions", 0),
    ("m-extra-cheese", "Extra cheese", 150),
    ("m-bacon", "Add bacon", 250),
    ("m-gf-bun", "Gluten-free bun", 200),
    ("m-well-done", "Cooked well done", 0),
    ("m-medium-rare", "Cooked medium rare", 0),
    ("m-no-ice", "No ice", 0),
    ("m-large", "Large size", 100),
    ("m-side-salad", "Swap fries for a side salad", 0),
    ("m-extra-sauce", "Extra sauce on the side", 50),
    ("m-allergy-nuts", "ALLERGY: tree nuts, keep separate", 0),
    ("m-oat-milk", "Oat milk", 60),
    ("m-spicy", "Extra spicy", 0),
    ("m-decaf", "Decaf", 0),
];

/// One line of an open order.
#[derive(Debug, Clone)]
struct Line {
    id: u32,
    menu: usize,
    quantity: i64,
    modifiers: Vec<usize>,
}

impl Line {
    fn total(&self) -> i64 {
        let unit = MENU[self.menu].2 + self.modifiers.iter().map(|m| MODIFIERS[*m].2).sum::<i64>();
        unit * self.quantity
    }

    fn json(&self) -> Value {
        let (sku, name, price, category) = MENU[self.menu];
        let mut line = json!({
            "id": format!("li-{}", self.id),
            "sku": sku,
            "name": name,
            "unitPrice": price,
            "quantity": self.quantity,
            "category": category,
        });
        if !self.modifiers.is_empty()
            && let Value::Object(map) = &mut line
        {
            let modifiers: Vec<Value> = self
                .modifiers
                .iter()
                .map(|m| {
                    let (id, name, price) = MODIFIERS[*m];
                    json!({ "id": id, "name": name, "price": price })
                })
                .collect();
            map.insert("modifiers".into(), Value::Array(modifiers));
        }
        line
    }
}

/// An order between its creation and its payment.
#[derive(Debug, Clone)]
struct OpenOrder {
    id: String,
    /// Events written so far (its version), 1 to 3.
    version: u64,
    server: u32,
    table: String,
    guests: i64,
    lines: Vec<Line>,
    next_line: u32,
}

/// One generated event and its size as JSON (the spec's wire format).
#[derive(Debug, Clone)]
pub struct FlowEvent {
    pub event: Event,
    pub json_bytes: usize,
}

/// The order flows of one till (`client`): `open` orders in flight; each call to
/// `next_event` starts an order in a free slot if there is one, or else takes the next
/// step of an open order picked at random, so the flows interleave.
#[derive(Debug, Clone)]
pub struct OrderFlows {
    rng: SplitMix,
    client: u32,
    device: String,
    slots: Vec<Option<OpenOrder>>,
    /// Orders started so far (the next order's number).
    started: u64,
    /// Events made so far (eventIds and Lamport clocks derive from it).
    made: u64,
    base_ms: u64,
    /// Drawn once from the seed: the part of every eventId that is neither time nor count.
    id_salt: [u8; 3],
}

impl OrderFlows {
    /// The flows of till `client` with `open` orders in flight (at least 1), from `seed`;
    /// events are stamped from `base_ms` (ms since the Unix epoch) on.
    pub fn new(seed: u64, client: u32, open: usize, base_ms: u64) -> Self {
        let mut rng =
            SplitMix::new(seed ^ (u64::from(client) + 1).wrapping_mul(0xa076_1d64_78bd_642f));
        let salt = rng.next_u64().to_be_bytes();
        OrderFlows {
            rng,
            client,
            device: format!("till-{client:02}"),
            slots: vec![None; open.max(1)],
            started: 0,
            made: 0,
            base_ms,
            id_salt: [salt[0], salt[1], salt[2]],
        }
    }

    /// Orders open now (created, not yet paid).
    pub fn open_now(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Orders started so far.
    pub fn orders_started(&self) -> u64 {
        self.started
    }

    /// The next event of this till's flows.
    pub fn next_event(&mut self) -> FlowEvent {
        if let Some(free) = self.slots.iter().position(Option::is_none) {
            let (order, event) = self.create();
            self.slots[free] = Some(order);
            return event;
        }
        let slot = self.rng.below(self.slots.len());
        let Some(mut order) = self.slots[slot].take() else {
            unreachable!("every slot is full here")
        };
        if order.version < 3 {
            let event = self.update(&mut order);
            self.slots[slot] = Some(order);
            event
        } else {
            self.pay(&order)
        }
    }

    fn create(&mut self) -> (OpenOrder, FlowEvent) {
        self.started += 1;
        let mut order = OpenOrder {
            id: format!("o-{:02}-{:07}", self.client, self.started),
            version: 0,
            server: self.rng.between(1, 12) as u32,
            table: match self.rng.below(10) {
                0 => format!("bar-{}", self.rng.between(1, 12)),
                1 => format!("takeaway-{}", self.started),
                _ => format!("T{}", self.rng.between(1, 40)),
            },
            guests: self.rng.between(1, 8) as i64,
            lines: Vec::new(),
            next_line: 1,
        };
        let lines = self.rng.between(2, 4);
        let event = self.sized(&mut order, lines, "order.created", |o| {
            json!({
                "tableNumber": o.table,
                "guestCount": o.guests,
                "currency": "USD",
                "items": o.lines.iter().map(Line::json).collect::<Vec<_>>(),
            })
        });
        (order, event)
    }

    /// The first update adds dishes (and sometimes a guest); the second adds a round of
    /// drinks or desserts, or another of a line already there, and sometimes moves table.
    fn update(&mut self, order: &mut OpenOrder) -> FlowEvent {
        let second = order.version == 2;
        let mut guests = None;
        let mut table = None;
        let add = if second {
            if !order.lines.is_empty() && self.rng.below(3) == 0 {
                let i = self.rng.below(order.lines.len());
                order.lines[i].quantity += 1;
            }
            if self.rng.below(6) == 0 {
                table = Some(format!("T{}", self.rng.between(1, 40)));
            }
            self.rng.between(1, 3)
        } else {
            if self.rng.below(4) == 0 {
                guests = Some(order.guests + 1);
            }
            self.rng.between(1, 4)
        };
        if let Some(g) = guests {
            order.guests = g;
        }
        if let Some(t) = &table {
            order.table = t.clone();
        }
        let target = order.lines.len() + add;
        self.sized(order, target, "order.updated", move |o| {
            let mut payload = Map::new();
            payload.insert(
                "items".into(),
                Value::Array(o.lines.iter().map(Line::json).collect()),
            );
            if let Some(g) = guests {
                payload.insert("guestCount".into(), g.into());
            }
            if let Some(t) = &table {
                payload.insert("tableNumber".into(), t.clone().into());
            }
            Value::Object(payload)
        })
    }

    /// Builds `event_type` for `order` with `lines` lines, then drops lines while the event
    /// is over `EVENT_JSON_MAX` and adds lines while it is under `EVENT_JSON_MIN` (a line
    /// is far smaller than the gap between the two, so neither undoes the other).
    fn sized(
        &mut self,
        order: &mut OpenOrder,
        lines: usize,
        event_type: &str,
        payload: impl Fn(&OpenOrder) -> Value,
    ) -> FlowEvent {
        while order.lines.len() < lines {
            self.add_line(order);
        }
        order.version += 1;
        let mut made = self.event(order, event_type, payload(order));
        while made.json_bytes > EVENT_JSON_MAX && !order.lines.is_empty() {
            order.lines.pop();
            made = self.event(order, event_type, payload(order));
        }
        while made.json_bytes < EVENT_JSON_MIN {
            self.add_line(order);
            made = self.event(order, event_type, payload(order));
        }
        self.made += 1;
        made
    }

    fn add_line(&mut self, order: &mut OpenOrder) {
        let modifiers = match self.rng.below(10) {
            0..=4 => 0,
            5..=7 => 1,
            8 => 2,
            _ => 3,
        };
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < modifiers {
            let m = self.rng.below(MODIFIERS.len());
            if !chosen.contains(&m) {
                chosen.push(m);
            }
        }
        order.lines.push(Line {
            id: order.next_line,
            menu: self.rng.below(MENU.len()),
            quantity: self.rng.between(1, 3) as i64,
            modifiers: chosen,
        });
        order.next_line += 1;
    }

    /// `order.paid`: the bill paid at once or split over up to one payment a guest (cards
    /// with their authorisation reference, cash, gift cards), split further while the event
    /// is under `EVENT_JSON_MIN`.
    fn pay(&mut self, order: &OpenOrder) -> FlowEvent {
        let total: i64 = order.lines.iter().map(Line::total).sum();
        // Half the tables pay at once; the others split the bill, up to one payment a guest.
        let guests = (order.guests as usize).max(1);
        let mut split = if guests == 1 || self.rng.below(2) == 0 {
            1
        } else {
            self.rng.between(2, guests)
        };
        let methods: Vec<String> = (0..20).map(|_| self.method()).collect();
        let paid = |split: usize| {
            let split = (split as i64).clamp(1, total.max(1));
            let share = total / split;
            let payments: Vec<Value> = (0..split)
                .map(|i| {
                    let amount = if i == split - 1 {
                        total - share * (split - 1)
                    } else {
                        share
                    };
                    json!({ "method": methods[i as usize], "amount": amount })
                })
                .collect();
            json!({ "payments": payments, "total": total, "currency": "USD" })
        };
        let mut next = order.clone();
        next.version += 1;
        let mut made = self.event(&next, "order.paid", paid(split));
        while made.json_bytes < EVENT_JSON_MIN && split < methods.len() {
            split += 1;
            made = self.event(&next, "order.paid", paid(split));
        }
        self.made += 1;
        made
    }

    fn method(&mut self) -> String {
        match self.rng.below(10) {
            0..=5 => {
                let brand = ["visa", "mastercard", "amex", "maestro"][self.rng.below(4)];
                let entry = ["contactless", "chip", "apple-pay"][self.rng.below(3)];
                format!(
                    "card:{brand}:{entry}:auth-{:08X}",
                    self.rng.next_u64() as u32
                )
            }
            6..=8 => format!("cash:drawer-{}", self.device),
            _ => format!("gift-card:GC-{:010}", self.rng.next_u64() % 10_000_000_000),
        }
    }

    /// The envelope around `payload` for `order` at its current version.
    fn event(&self, order: &OpenOrder, event_type: &str, payload: Value) -> FlowEvent {
        let n = self.made;
        let at_ms = self.base_ms + n * 10;
        let Value::Object(payload) = payload else {
            unreachable!("payloads are built as objects")
        };
        let event = Event {
            event_id: self.event_id(n),
            tenant_id: TENANT.into(),
            store_id: STORE.into(),
            aggregate_type: "order".into(),
            aggregate_id: order.id.clone(),
            version: order.version,
            event_type: event_type.into(),
            at: rfc3339_ms(at_ms),
            actor: Actor {
                device_id: self.device.clone(),
                user_id: Some(format!("u-server-{:02}", order.server)),
            },
            clock: Clock {
                lamport: n + 1,
                device_id: self.device.clone(),
            },
            payload,
            ..Event::default()
        };
        // An Event is plain data: serialising it cannot fail.
        let json_bytes = serde_json::to_vec(&event).map_or(0, |v| v.len());
        FlowEvent { event, json_bytes }
    }

    /// A UUIDv7 with the time base as its time, and the till and the event's number in its
    /// other bits, so that no two events of a run share an id.
    fn event_id(&self, n: u64) -> String {
        let client = (self.client as u16).to_be_bytes();
        let count = n.to_be_bytes();
        // Bytes 0–2 land where the version and variant bits go: only the salt is there.
        let bytes = [
            self.id_salt[0],
            self.id_salt[1],
            self.id_salt[2],
            client[0],
            client[1],
            count[3],
            count[4],
            count[5],
            count[6],
            count[7],
        ];
        uuid::Builder::from_unix_timestamp_millis(self.base_ms, &bytes)
            .into_uuid()
            .to_string()
    }
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds (an event's `at`).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests;

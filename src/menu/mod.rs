//! The store's menu: what tills offer, read from a JSON file given to `serve --menu` and
//! served by `GetMenu`. It is configuration, not log state: every node of a group is given
//! the same file, and a change takes a restart. It is checked whole when the node starts,
//! so a typo stops the node with the file, the item and the field named, instead of
//! showing up later as a till that cannot sell something.
//!
//! The file (camelCase; unknown fields are refused, so a misspelt field is caught too):
//!
//! ```json
//! {"name": "Demo Diner", "currency": "USD", "items": [
//!   {"sku": "BURGER-CLASSIC", "name": "Classic burger", "price": 1250,
//!    "category": "food", "station": "grill",
//!    "modifiers": [{"id": "extra-cheese", "name": "Extra cheese", "price": 150}]}]}
//! ```
//!
//! Prices are minor units of `currency`. `category` is free text, except that `"beverage"`
//! sends an item to the bar (BDS) and every other category to the kitchen (KDS); `station`
//! (optional) is the kitchen station its KDS tickets name. `modifiers` is optional.

use std::path::Path;

use serde::Deserialize;

use crate::domain::Rules;
use crate::domain::payload::MONEY_ABS_MAX_MINOR;

// A menu item becomes an order line and a ticket item, so its text obeys the bounds of the
// rules new events are decided under.
const ID_BYTES_MAX: usize = Rules::CURRENT.bounds().id_bytes;
const TEXT_BYTES_MAX: usize = Rules::CURRENT.bounds().name_bytes;
const MODIFIERS_PER_ITEM_MAX: usize = Rules::CURRENT.bounds().modifiers_per_item;

/// The category whose items go to the bar (BDS); every other one goes to the kitchen (KDS).
pub const BEVERAGE_CATEGORY: &str = "beverage";
/// Largest menu file, in bytes: its GetMenu answer then fits the 4 MiB a gRPC client takes
/// by default (the protobuf form is smaller than the JSON).
pub const MENU_FILE_BYTES_MAX: u64 = 1 << 20;

/// The menu example built into the binary, which `serve --dev` serves.
pub const EXAMPLE_MENU_JSON: &str = include_str!("../../examples/menu.json");
/// How the built-in example is named in messages.
pub const EXAMPLE_MENU_SOURCE: &str = "examples/menu.json (built in)";

#[derive(Debug, thiserror::Error)]
pub enum MenuError {
    #[error("cannot read the menu {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the menu {path} is {bytes} bytes; at most {MENU_FILE_BYTES_MAX} are allowed")]
    TooLarge { path: String, bytes: u64 },
    #[error("the menu {path} is not JSON: {source}")]
    NotJson {
        path: String,
        source: serde_json::Error,
    },
    #[error("the menu {path} is not in the menu's shape: {source}")]
    Shape {
        path: String,
        source: serde_json::Error,
    },
    #[error("the menu {path} lists no items")]
    NoItems { path: String },
    #[error("the menu {path}: {field} {problem}")]
    Field {
        path: String,
        field: &'static str,
        problem: String,
    },
    #[error("the menu {path}: item {index} (sku {sku:?}): {field} {problem}")]
    Item {
        path: String,
        index: usize,
        sku: String,
        field: String,
        problem: String,
    },
    #[error("the menu {path}: item {index} repeats sku {sku:?} of item {first}")]
    DuplicateSku {
        path: String,
        index: usize,
        sku: String,
        first: usize,
    },
    #[error(
        "the menu {path}: item {index} (sku {sku:?}): modifier {modifier} repeats id {id:?} of modifier {first}"
    )]
    DuplicateModifier {
        path: String,
        index: usize,
        sku: String,
        modifier: usize,
        id: String,
        first: usize,
    },
}

/// A validated menu (or the empty one of a node started without `--menu`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Menu {
    name: String,
    currency: String,
    items: Vec<MenuItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MenuItem {
    pub sku: String,
    pub name: String,
    /// Minor units.
    pub price: i64,
    /// Free text; `"beverage"` goes to the bar (BDS), anything else to the kitchen (KDS).
    pub category: String,
    /// The kitchen station of its KDS tickets, e.g. `"grill"`; optional, but not empty.
    #[serde(default)]
    pub station: Option<String>,
    #[serde(default)]
    pub modifiers: Vec<MenuModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MenuModifier {
    pub id: String,
    pub name: String,
    /// Minor units, added to the item's price per unit; may be 0 ("no onions").
    pub price: i64,
}

impl MenuItem {
    /// Whether the item is made at the bar (BDS) rather than in the kitchen (KDS).
    pub fn is_beverage(&self) -> bool {
        self.category == BEVERAGE_CATEGORY
    }
}

/// The file as written; `Menu` once checked.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a menu object"
)]
struct MenuFile {
    name: String,
    currency: String,
    items: Vec<MenuItem>,
}

/// Why a text field is unusable: empty (or blank, which shows as an empty button), or too long.
fn text_problem(value: &str, max_bytes: usize) -> Option<String> {
    if value.trim().is_empty() {
        Some("is empty".into())
    } else if value.len() > max_bytes {
        Some(format!(
            "is {} bytes long; at most {max_bytes} are allowed",
            value.len()
        ))
    } else {
        None
    }
}

fn price_problem(price: i64) -> Option<String> {
    (!(0..=MONEY_ABS_MAX_MINOR).contains(&price))
        .then(|| format!("must be between 0 and {MONEY_ABS_MAX_MINOR}, got {price}"))
}

impl Menu {
    /// Reads and checks the menu file at `path`.
    pub fn load(path: &Path) -> Result<Menu, MenuError> {
        let shown = path.display().to_string();
        let read = |source| MenuError::Read {
            path: shown.clone(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(read)?.len();
        if bytes > MENU_FILE_BYTES_MAX {
            return Err(MenuError::TooLarge { path: shown, bytes });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Menu::parse(&text, &shown)
    }

    /// The menu built into the binary (`examples/menu.json`).
    pub fn example() -> Result<Menu, MenuError> {
        Menu::parse(EXAMPLE_MENU_JSON, EXAMPLE_MENU_SOURCE)
    }

    /// Parses and checks a menu; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Menu, MenuError> {
        let file: MenuFile = serde_json::from_str(text).map_err(|source| {
            let path = path.to_owned();
            match source.classify() {
                serde_json::error::Category::Data => MenuError::Shape { path, source },
                _ => MenuError::NotJson { path, source },
            }
        })?;
        let field = |field, problem| MenuError::Field {
            path: path.to_owned(),
            field,
            problem,
        };
        if let Some(problem) = text_problem(&file.name, TEXT_BYTES_MAX) {
            return Err(field("name", problem));
        }
        if file.currency.len() != 3 || !file.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(field(
                "currency",
                format!(
                    "must be three uppercase letters (ISO 4217, e.g. \"USD\"), got {:?}",
                    file.currency
                ),
            ));
        }
        if file.items.is_empty() {
            return Err(MenuError::NoItems {
                path: path.to_owned(),
            });
        }
        for (index, item) in file.items.iter().enumerate() {
            check_item(path, index, item)?;
            if let Some(first) = file.items[..index].iter().position(|i| i.sku == item.sku) {
                return Err(MenuError::DuplicateSku {
                    path: path.to_owned(),
                    index,
                    sku: item.sku.clone(),
                    first,
                });
            }
        }
        Ok(Menu {
            name: file.name,
            currency: file.currency,
            items: file.items,
        })
    }

    /// The empty menu of a node started without `--menu`.
    pub fn empty() -> Menu {
        Menu::default()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// ISO 4217; every price is in its minor units.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn items(&self) -> &[MenuItem] {
        &self.items
    }
}

fn check_item(path: &str, index: usize, item: &MenuItem) -> Result<(), MenuError> {
    let problem = |field: String, problem: String| MenuError::Item {
        path: path.to_owned(),
        index,
        sku: item.sku.clone(),
        field,
        problem,
    };
    let station = item
        .station
        .as_deref()
        .map(|station| ("station", station, TEXT_BYTES_MAX));
    let texts = [
        Some(("sku", item.sku.as_str(), ID_BYTES_MAX)),
        Some(("name", item.name.as_str(), TEXT_BYTES_MAX)),
        Some(("category", item.category.as_str(), TEXT_BYTES_MAX)),
        station,
    ];
    for (field, value, max) in texts.into_iter().flatten() {
        if let Some(p) = text_problem(value, max) {
            return Err(problem(field.into(), p));
        }
    }
    if let Some(p) = price_problem(item.price) {
        return Err(problem("price".into(), p));
    }
    if item.modifiers.len() > MODIFIERS_PER_ITEM_MAX {
        return Err(problem(
            "modifiers".into(),
            format!(
                "lists {}; at most {MODIFIERS_PER_ITEM_MAX} are allowed (an order line takes no more)",
                item.modifiers.len()
            ),
        ));
    }
    for (m, modifier) in item.modifiers.iter().enumerate() {
        let checks = [
            ("id", text_problem(&modifier.id, ID_BYTES_MAX)),
            ("name", text_problem(&modifier.name, TEXT_BYTES_MAX)),
            ("price", price_problem(modifier.price)),
        ];
        for (field, p) in checks {
            if let Some(p) = p {
                return Err(problem(format!("modifiers[{m}].{field}"), p));
            }
        }
        if let Some(first) = item.modifiers[..m].iter().position(|o| o.id == modifier.id) {
            return Err(MenuError::DuplicateModifier {
                path: path.to_owned(),
                index,
                sku: item.sku.clone(),
                modifier: m,
                id: modifier.id.clone(),
                first,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

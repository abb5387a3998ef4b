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

use crate::domain::payload::{
    ID_BYTES_MAX, MODIFIERS_PER_ITEM_MAX, MONEY_ABS_MAX_MINOR, TEXT_BYTES_MAX,
};

/// The category whose items go to the bar (BDS); every other one goes to the kitchen (KDS).
pub const BEVERAGE_CATEGORY: &str = "beverage";
/// Largest menu file, in bytes: its GetMenu answer then fits the 4 MiB a gRPC client takes
/// by default (the protobuf form is smaller than the JSON).
pub const MENU_FILE_BYTES_MAX: u64 = 1 << 20;

/// The menu example built into the binary, which `serve --dev` serves.
pub const EXAMPLE_MENU_JSON: &str = include_str!("../examples/menu.json");
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
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const PATH: &str = "menus/test.json";

    fn valid() -> Value {
        json!({
            "name": "Test Cafe",
            "currency": "EUR",
            "items": [
                {"sku": "TOAST", "name": "Toast", "price": 300, "category": "food",
                 "station": "grill",
                 "modifiers": [{"id": "butter", "name": "Butter", "price": 0},
                               {"id": "jam", "name": "Jam", "price": 50}]},
                {"sku": "TEA", "name": "Tea", "price": 250, "category": "beverage"}
            ]
        })
    }

    /// Parses `valid()` changed by `edit`; the error, with its message.
    fn refused(edit: impl FnOnce(&mut Value)) -> (MenuError, String) {
        let mut menu = valid();
        edit(&mut menu);
        let err = Menu::parse(&menu.to_string(), PATH).expect_err("the menu is refused");
        let message = err.to_string();
        assert!(message.contains(PATH), "{message} names the file");
        (err, message)
    }

    /// The item-level refusal `edit` causes: its index, sku, field and problem.
    fn item_refused(edit: impl FnOnce(&mut Value)) -> (usize, String, String, String) {
        match refused(edit) {
            (
                MenuError::Item {
                    index,
                    sku,
                    field,
                    problem,
                    ..
                },
                message,
            ) => {
                assert!(
                    message.contains(&format!("item {index} (sku {sku:?}): {field}")),
                    "{message}"
                );
                (index, sku, field, problem)
            }
            (other, _) => panic!("not an item error: {other:?}"),
        }
    }

    #[test]
    fn a_valid_menu_keeps_every_field() {
        let menu = Menu::parse(&valid().to_string(), PATH).expect("valid");
        assert_eq!(menu.name(), "Test Cafe");
        assert_eq!(menu.currency(), "EUR");
        assert!(!menu.is_empty());
        let items = menu.items();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].sku, "TOAST");
        assert_eq!(items[0].name, "Toast");
        assert_eq!(items[0].price, 300);
        assert_eq!(items[0].category, "food");
        assert_eq!(items[0].station.as_deref(), Some("grill"));
        assert!(!items[0].is_beverage());
        assert_eq!(
            items[0].modifiers,
            vec![
                MenuModifier {
                    id: "butter".into(),
                    name: "Butter".into(),
                    price: 0
                },
                MenuModifier {
                    id: "jam".into(),
                    name: "Jam".into(),
                    price: 50
                },
            ]
        );
        assert_eq!(items[1].station, None);
        assert!(items[1].modifiers.is_empty());
        assert!(items[1].is_beverage());
        assert!(Menu::empty().is_empty());
    }

    #[test]
    fn the_limits_themselves_are_accepted() {
        let mut menu = valid();
        menu["items"][0]["sku"] = json!("S".repeat(ID_BYTES_MAX));
        menu["items"][0]["name"] = json!("n".repeat(TEXT_BYTES_MAX));
        menu["items"][0]["price"] = json!(MONEY_ABS_MAX_MINOR);
        menu["items"][0]["modifiers"][0]["id"] = json!("m".repeat(ID_BYTES_MAX));
        menu["items"][0]["modifiers"][1]["price"] = json!(MONEY_ABS_MAX_MINOR);
        menu["items"][1]["price"] = json!(0);
        Menu::parse(&menu.to_string(), PATH).expect("values at their limits are valid");
    }

    #[test]
    fn the_example_menu_is_valid_and_matches_the_example_order() {
        let menu = Menu::example().expect("examples/menu.json is valid");
        assert_eq!(menu.name(), "Demo Diner");
        assert_eq!(menu.currency(), "USD");
        assert!((12..=16).contains(&menu.items().len()), "{menu:?}");
        let item = |sku: &str| {
            menu.items()
                .iter()
                .find(|i| i.sku == sku)
                .unwrap_or_else(|| panic!("{sku} is on the example menu"))
        };
        let burger = item("BURGER-CLASSIC");
        assert_eq!(
            (burger.name.as_str(), burger.price, burger.category.as_str()),
            ("Classic burger", 1250, "food")
        );
        assert_eq!(burger.station.as_deref(), Some("grill"));
        let modifiers: Vec<_> = burger
            .modifiers
            .iter()
            .map(|m| (m.id.as_str(), m.name.as_str(), m.price))
            .collect();
        assert_eq!(
            modifiers,
            [
                ("no-onions", "No onions", 0),
                ("extra-cheese", "Extra cheese", 150)
            ]
        );
        let fries = item("FRIES");
        assert_eq!((fries.name.as_str(), fries.price), ("Fries", 350));
        assert_eq!(fries.station.as_deref(), Some("grill"));
        assert!(!fries.is_beverage());
        let lemonade = item("LEMONADE");
        assert_eq!((lemonade.name.as_str(), lemonade.price), ("Lemonade", 450));
        assert!(lemonade.is_beverage());
        assert!(menu.items().iter().any(|i| !i.is_beverage()));
        assert!(menu.items().iter().filter(|i| i.is_beverage()).count() >= 3);
    }

    #[test]
    fn an_unreadable_or_oversized_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.json");
        let err = Menu::load(&missing).expect_err("no such file");
        assert!(matches!(err, MenuError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        let big = dir.path().join("big.json");
        std::fs::write(&big, " ".repeat(MENU_FILE_BYTES_MAX as usize + 1)).expect("writes");
        let err = Menu::load(&big).expect_err("too large");
        assert!(matches!(err, MenuError::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("big.json"), "{err}");

        let good = dir.path().join("good.json");
        std::fs::write(&good, valid().to_string()).expect("writes");
        assert_eq!(Menu::load(&good).expect("loads").items().len(), 2);
    }

    #[test]
    fn text_that_is_not_json_is_refused_with_line_and_column() {
        let err = Menu::parse("{\n  \"name\": \"x\",\n  oops\n}", PATH).expect_err("not JSON");
        assert!(matches!(err, MenuError::NotJson { .. }), "{err:?}");
        assert!(err.to_string().contains("line 3 column"), "{err}");
        let err = Menu::parse("", PATH).expect_err("empty");
        assert!(matches!(err, MenuError::NotJson { .. }), "{err:?}");
    }

    #[test]
    fn json_of_the_wrong_shape_is_refused_with_line_and_column() {
        for (edit, words) in [
            (
                Box::new(|m: &mut Value| m["items"][0]["price"] = json!("3.00"))
                    as Box<dyn FnOnce(&mut Value)>,
                "invalid type: string",
            ),
            (
                Box::new(|m: &mut Value| m["items"][0]["price"] = json!(3.5)),
                "invalid type: floating point",
            ),
            (
                Box::new(|m: &mut Value| m["items"][0]["colour"] = json!("red")),
                "unknown field `colour`",
            ),
            (
                Box::new(|m: &mut Value| m["items"][0]["modifiers"][0]["cost"] = json!(1)),
                "unknown field `cost`",
            ),
            (
                Box::new(|m: &mut Value| m["taxRate"] = json!(7)),
                "unknown field `taxRate`",
            ),
            (
                Box::new(|m: &mut Value| {
                    m["items"][1].as_object_mut().map(|o| o.remove("category"));
                }),
                "missing field `category`",
            ),
            (
                Box::new(|m: &mut Value| *m = json!("Demo Diner")),
                "invalid type: string \"Demo Diner\", expected a menu object",
            ),
        ] {
            let (err, message) = refused(edit);
            assert!(matches!(err, MenuError::Shape { .. }), "{err:?}");
            assert!(message.contains(words), "{message} should say {words:?}");
            assert!(message.contains("line 1 column"), "{message}");
        }
    }

    #[test]
    fn a_menu_without_items_is_refused() {
        let (err, _) = refused(|m| m["items"] = json!([]));
        assert!(matches!(err, MenuError::NoItems { .. }), "{err:?}");
    }

    #[test]
    fn the_menu_name_and_currency_are_checked() {
        for (edit, field, words) in [
            (
                Box::new(|m: &mut Value| m["name"] = json!(" ")) as Box<dyn FnOnce(&mut Value)>,
                "name",
                "is empty",
            ),
            (
                Box::new(|m: &mut Value| m["name"] = json!("n".repeat(TEXT_BYTES_MAX + 1))),
                "name",
                "at most 1024",
            ),
            (
                Box::new(|m: &mut Value| m["currency"] = json!("usd")),
                "currency",
                "\"usd\"",
            ),
            (
                Box::new(|m: &mut Value| m["currency"] = json!("US")),
                "currency",
                "\"US\"",
            ),
            (
                Box::new(|m: &mut Value| m["currency"] = json!("USDX")),
                "currency",
                "\"USDX\"",
            ),
            (
                Box::new(|m: &mut Value| m["currency"] = json!("U5D")),
                "currency",
                "\"U5D\"",
            ),
            (
                Box::new(|m: &mut Value| m["currency"] = json!("ÜSD")),
                "currency",
                "\"ÜSD\"",
            ),
        ] {
            let (err, message) = refused(edit);
            assert!(
                matches!(&err, MenuError::Field { field: f, .. } if *f == field),
                "{err:?}"
            );
            assert!(message.contains(words), "{message} should say {words:?}");
        }
    }

    #[test]
    fn empty_and_too_long_texts_are_refused_with_the_item_and_field() {
        let long_id = "x".repeat(ID_BYTES_MAX + 1);
        let long_text = "x".repeat(TEXT_BYTES_MAX + 1);
        let cases: Vec<(&str, Value, &str)> = vec![
            ("/items/0/sku", json!(""), "is empty"),
            ("/items/0/sku", json!(long_id), "at most 128 are allowed"),
            ("/items/0/name", json!("  "), "is empty"),
            (
                "/items/0/name",
                json!(long_text),
                "at most 1024 are allowed",
            ),
            ("/items/0/category", json!(""), "is empty"),
            ("/items/0/category", json!(long_text), "at most 1024"),
            ("/items/0/station", json!(""), "is empty"),
            ("/items/0/station", json!(long_text), "at most 1024"),
            ("/items/0/modifiers/1/id", json!(""), "is empty"),
            ("/items/0/modifiers/1/id", json!(long_id), "at most 128"),
            ("/items/0/modifiers/1/name", json!(""), "is empty"),
            (
                "/items/0/modifiers/1/name",
                json!(long_text),
                "at most 1024",
            ),
        ];
        for (pointer, value, words) in cases {
            let (index, sku, field, problem) = item_refused(|m| {
                *m.pointer_mut(pointer).expect("the field exists") = value.clone();
            });
            let want_field = pointer
                .trim_start_matches("/items/0/")
                .replace("modifiers/1/", "modifiers[1].");
            assert_eq!(index, 0, "{pointer}");
            assert_eq!(field, want_field, "{pointer}");
            assert!(problem.contains(words), "{pointer}: {problem}");
            if pointer != "/items/0/sku" {
                assert_eq!(sku, "TOAST", "{pointer}");
            }
        }
        // The second item is named by its own index and sku.
        let (index, sku, field, _) = item_refused(|m| m["items"][1]["name"] = json!(""));
        assert_eq!((index, sku.as_str(), field.as_str()), (1, "TEA", "name"));
    }

    #[test]
    fn prices_out_of_range_are_refused_with_the_item() {
        let cases = [
            ("/items/1/price", -1),
            ("/items/1/price", MONEY_ABS_MAX_MINOR + 1),
            ("/items/0/modifiers/0/price", -5),
            ("/items/0/modifiers/0/price", MONEY_ABS_MAX_MINOR + 1),
        ];
        for (pointer, price) in cases {
            let (index, sku, field, problem) = item_refused(|m| {
                *m.pointer_mut(pointer).expect("the field exists") = json!(price);
            });
            let (want_index, want_sku, want_field) = if pointer.starts_with("/items/1") {
                (1, "TEA", "price")
            } else {
                (0, "TOAST", "modifiers[0].price")
            };
            assert_eq!(
                (index, sku.as_str(), field.as_str()),
                (want_index, want_sku, want_field)
            );
            assert!(problem.contains(&format!("got {price}")), "{problem}");
        }
    }

    #[test]
    fn duplicate_skus_and_modifier_ids_are_refused() {
        let (err, message) = refused(|m| m["items"][1]["sku"] = json!("TOAST"));
        assert!(
            matches!(&err, MenuError::DuplicateSku { index: 1, first: 0, sku, .. } if sku == "TOAST"),
            "{err:?}"
        );
        assert!(
            message.contains("item 1 repeats sku \"TOAST\" of item 0"),
            "{message}"
        );

        let (err, message) = refused(|m| m["items"][0]["modifiers"][1]["id"] = json!("butter"));
        assert!(
            matches!(
                &err,
                MenuError::DuplicateModifier { index: 0, modifier: 1, first: 0, id, .. }
                    if id == "butter"
            ),
            "{err:?}"
        );
        assert!(message.contains("(sku \"TOAST\")"), "{message}");

        // The same modifier id on two items is fine: ids are per item.
        let mut menu = valid();
        menu["items"][1]["modifiers"] = json!([{"id": "butter", "name": "Butter", "price": 0}]);
        Menu::parse(&menu.to_string(), PATH).expect("modifier ids are per item");
    }

    #[test]
    fn too_many_modifiers_on_one_item_are_refused() {
        let (index, _, field, problem) = item_refused(|m| {
            let many: Vec<Value> = (0..=MODIFIERS_PER_ITEM_MAX)
                .map(|i| json!({"id": format!("m{i}"), "name": "M", "price": 0}))
                .collect();
            m["items"][1]["modifiers"] = json!(many);
        });
        assert_eq!((index, field.as_str()), (1, "modifiers"));
        assert!(problem.contains("at most 100"), "{problem}");
    }
}

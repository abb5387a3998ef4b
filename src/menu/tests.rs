//! The menu's checks: a valid menu (and the built-in example) keeps every field, and each
//! mistake a menu file can hold is refused with the file, the item and the field named.

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
            "at most 64",
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
        ("/items/0/sku", json!(long_id), "at most 64 are allowed"),
        ("/items/0/name", json!("  "), "is empty"),
        ("/items/0/name", json!(long_text), "at most 64 are allowed"),
        ("/items/0/category", json!(""), "is empty"),
        ("/items/0/category", json!(long_text), "at most 64"),
        ("/items/0/station", json!(""), "is empty"),
        ("/items/0/station", json!(long_text), "at most 64"),
        ("/items/0/modifiers/1/id", json!(""), "is empty"),
        ("/items/0/modifiers/1/id", json!(long_id), "at most 64"),
        ("/items/0/modifiers/1/name", json!(""), "is empty"),
        ("/items/0/modifiers/1/name", json!(long_text), "at most 64"),
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
    assert!(problem.contains("at most 10 "), "{problem}");
}

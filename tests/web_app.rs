//! What the browser app needs from a node, against real `pos-hub` processes: the app's
//! files on the client port (with their types and caching), 404 for unknown pages while
//! gRPC and gRPC-web keep working on the same port, CORS for a page served by another
//! node, the store's menu (GetMenu), and the pairing link `token issue --pair-url` prints.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::*;
use common::{phase, with_token};
use pos_hub::auth::{keys, token};
use pos_hub::proto::pb;
use tonic::Code;

const WEB_DIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist");
const MENU_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/menu.json");
const LAN_ORIGIN: &str = "http://192.168.1.20:5173";

/// Every file under `dir` (dotfiles left out, as the build leaves them out).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("lists web/dist") {
        let path = entry.expect("a dir entry").path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The Content-Type a browser needs for each kind of file the app ships (written out here,
/// not taken from the server's table, so a wrong entry there fails).
fn expected_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "webmanifest" => "application/manifest+json",
        other => panic!("web/dist ships a .{other} file ({path}): add its type to this test"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_the_web_app_beside_grpc_and_grpc_web() {
    let c = Cluster::start(1).await;
    let addr = c.client_addr(1);

    phase("GET /: web/dist/index.html byte for byte, as HTML, revalidated, nosniff");
    let index = std::fs::read(Path::new(WEB_DIST).join("index.html")).expect("reads index.html");
    let r = c.http_get(1, "/").await.expect("GET /");
    assert_eq!(r.status, 200, "GET /: {r:?}");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(
        r.body == index,
        "GET / is not web/dist/index.html: {}",
        r.text()
    );

    phase("every file of web/dist at its own path, with its type and caching");
    let mut files = Vec::new();
    files_under(Path::new(WEB_DIST), &mut files);
    assert!(!files.is_empty(), "web/dist has files");
    for file in &files {
        let relative = file.strip_prefix(WEB_DIST).expect("under web/dist");
        let url: String = relative
            .components()
            .map(|c| format!("/{}", c.as_os_str().to_string_lossy()))
            .collect();
        let r = c
            .http_get(1, &url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status, 200, "GET {url}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(expected_type(&url)), "{url}");
        let cache = if url.starts_with("/assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        assert_eq!(r.header("cache-control"), Some(cache), "{url}");
        let bytes = std::fs::read(file).expect("reads the file");
        assert!(r.body == bytes, "GET {url}: not the file's bytes");
    }

    phase("GET of unknown paths: 404 naming the path, never the gRPC router");
    for path in ["/no-such-file", "/assets/gone-1234.js", "/pos.v1.Hub/Hello"] {
        let r = c
            .http_get(1, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 404, "GET {path}: {r:?}");
        assert!(r.text().contains(path), "GET {path}: {}", r.text());
        assert!(r.header("grpc-status").is_none(), "GET {path}: {r:?}");
    }

    phase("the node's own endpoints are still there");
    let r = c.http_get(1, "/healthz").await.expect("GET /healthz");
    assert_eq!((r.status, r.text().trim()), (200, "ok"));

    phase("gRPC (HTTP/2) and gRPC-web (HTTP/1.1 POST) Hello on the same port");
    c.hello(1).await.expect("gRPC Hello");
    let hello = pb::HelloRequest {
        device_id: "till-web".into(),
        cursor: 0,
    };
    let (response, reply) = grpc_web_call(&addr, "/pos.v1.Hub/Hello", &hello, LAN_ORIGIN).await;
    let answer: pb::HelloResponse = grpc_web_answer(&response, &reply);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(LAN_ORIGIN),
        "{response:?}"
    );
    assert_eq!(answer.nodes.len(), 1, "{answer:?}");
    assert!(answer.hub_time > 0, "{answer:?}");

    phase("an unknown gRPC method POSTed is still answered by gRPC: UNIMPLEMENTED");
    let (response, reply) =
        grpc_web_call(&addr, "/pos.v1.Hub/NoSuchCall", &hello, LAN_ORIGIN).await;
    assert_eq!(
        grpc_web_status(&response, &reply).as_deref(),
        Some("12"),
        "{response:?} {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_node_may_call_this_one() {
    let c = Cluster::start(1).await;
    let addr = c.client_addr(1);
    // The page came from another node of the group: another loopback port.
    let other = free_ports(1)[0];
    let origin = format!("http://127.0.0.1:{other}");
    let wanted = [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
    ];
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /pos.v1.Hub/GetMenu HTTP/1.0\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: {}\r\n\r\n",
            wanted.join(",")
        )
    };

    phase("a CORS preflight from a LAN origin: allowed, with every header gRPC-web sends");
    let r = http_exchange(&addr, preflight(&origin).as_bytes(), Duration::from_secs(5))
        .await
        .expect("OPTIONS");
    assert!((200..300).contains(&r.status), "preflight: {r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin.as_str()),
        "{r:?}"
    );
    let methods = r
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(methods.contains("post"), "{r:?}");
    let headers = r
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let allowed: Vec<&str> = headers.split(',').map(str::trim).collect();
    for header in wanted {
        assert!(allowed.contains(&header), "{header} not allowed: {r:?}");
    }

    phase("a preflight from outside the LAN gets no permission");
    let r = http_exchange(
        &addr,
        preflight("https://example.com").as_bytes(),
        Duration::from_secs(5),
    )
    .await
    .expect("OPTIONS");
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "an internet origin is not allowed: {r:?}"
    );

    phase("the call itself from that origin: GetMenu over gRPC-web");
    let (response, reply) = grpc_web_call(
        &addr,
        "/pos.v1.Hub/GetMenu",
        &pb::GetMenuRequest {},
        &origin,
    )
    .await;
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(origin.as_str()),
        "{response:?}"
    );
    assert_eq!(
        grpc_web_status(&response, &reply).as_deref(),
        Some("0"),
        "{response:?} {reply:?}"
    );
    // A trailers-only error carries its status in headers, which the page must be let read.
    let exposed = response
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for header in ["grpc-status", "grpc-message"] {
        assert!(
            exposed.contains(header),
            "{header} not exposed: {response:?}"
        );
    }
}

/// GetMenu (without a token) on node 1, and what that node has logged so far.
async fn menu_and_log(c: &Cluster) -> (pb::GetMenuResponse, String) {
    let menu = c
        .client(1)
        .get_menu(pb::GetMenuRequest {})
        .await
        .expect("GetMenu")
        .into_inner();
    let log = std::fs::read_to_string(&c.node(1).log_path).expect("reads the node log");
    (menu, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_menu_answers_the_menu_file_the_node_was_started_with() {
    let menu_dir = tempfile::tempdir().expect("tempdir");
    let menu_path = menu_dir.path().join("menu.json");
    let menu = serde_json::json!({
        "name": "Harbour Cafe",
        "currency": "EUR",
        "items": [
            {"sku": "FLAT-WHITE", "name": "Flat white", "price": 380, "category": "beverage",
             "modifiers": [{"id": "oat", "name": "Oat milk", "price": 40},
                           {"id": "decaf", "name": "Decaf", "price": 0}]},
            {"sku": "CROISSANT", "name": "Croissant", "price": 290, "category": "bakery",
             "station": "oven"},
            {"sku": "SOUP", "name": "Soup of the day", "price": 650, "category": "food",
             "station": "stove"}
        ]
    });
    std::fs::write(&menu_path, serde_json::to_vec_pretty(&menu).expect("JSON"))
        .expect("writes the menu");
    let options = Options {
        extra_args: vec![
            "--menu".into(),
            menu_path.to_str().expect("a UTF-8 path").into(),
        ],
        ..Options::default()
    };
    let c = Cluster::start_with(1, options).await;

    let (got, log) = menu_and_log(&c).await;
    assert_eq!(got.name, "Harbour Cafe");
    assert_eq!(got.currency, "EUR");
    let want_items = menu["items"].as_array().expect("items");
    assert_eq!(got.items.len(), want_items.len(), "{got:?}");
    for (item, want) in got.items.iter().zip(want_items) {
        assert_eq!(item.sku, want["sku"].as_str().expect("sku"));
        assert_eq!(item.name, want["name"].as_str().expect("name"));
        assert_eq!(item.price, want["price"].as_i64().expect("price"));
        assert_eq!(item.category, want["category"].as_str().expect("category"));
        assert_eq!(item.station, want["station"].as_str().unwrap_or(""));
        let want_modifiers = want["modifiers"].as_array().cloned().unwrap_or_default();
        let modifiers: Vec<(String, String, i64)> = item
            .modifiers
            .iter()
            .map(|m| (m.id.clone(), m.name.clone(), m.price))
            .collect();
        let want_modifiers: Vec<(String, String, i64)> = want_modifiers
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().expect("id").to_owned(),
                    m["name"].as_str().expect("name").to_owned(),
                    m["price"].as_i64().expect("price"),
                )
            })
            .collect();
        assert_eq!(modifiers, want_modifiers, "{}", item.sku);
    }
    assert!(
        !log.contains("no --menu"),
        "a node with a menu does not warn about its absence:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_menu_get_menu_is_empty_and_the_node_says_so_once() {
    let c = Cluster::start(1).await;
    let (got, log) = menu_and_log(&c).await;
    assert_eq!(got, pb::GetMenuResponse::default());
    assert_eq!(
        log.matches("no --menu: tills will show an empty menu")
            .count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_menu_needs_a_token_of_any_role_and_pairing_links_carry_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys_dir = dir.path().join("keys");
    common::succeeded(&common::keygen(&keys_dir), "keygen");
    let public = keys_dir.join("store.pub.pem");
    let private = keys_dir.join("store.key.pem");
    let c = Cluster::start_with(
        1,
        Options {
            public_key: Some(public.clone()),
            extra_args: vec!["--menu".into(), MENU_EXAMPLE.into()],
            ..Options::default()
        },
    )
    .await;
    let url = c.url(1);

    phase("`token issue --pair-url URL/`: one line, URL/#/pair/TOKEN, a valid token");
    let issue =
        |pair_url: &str| common::token_issue(&private, "kds-1", "kds", &["--pair-url", pair_url]);
    let stdout = common::succeeded(&issue(&format!("{url}/")), "token issue");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stdout:?}");
    let prefix = format!("{url}/#/pair/");
    let kds_token = lines[0]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{:?} does not start with {prefix:?}", lines[0]));
    let key = keys::load_verifying_key(&public).expect("loads the public key");
    let claims = token::verify(kds_token, &key, common::now()).expect("the link's token is valid");
    assert_eq!(claims.sub, "kds-1");
    assert_eq!(claims.role, token::Role::Kds);

    phase("bad --pair-url: refused with the reason, no token printed");
    for (bad, reason) in [
        ("127.0.0.1:4001", "must start with http:// or https://"),
        ("http://127.0.0.1:4001/app", "more than HOST:PORT"),
        ("http://127.0.0.1:99999", "the port must be"),
    ] {
        let out = issue(bad);
        common::refused(&out, bad, reason);
        assert!(
            common::stdout(&out).is_empty(),
            "{bad}: {}",
            common::stdout(&out)
        );
    }

    phase("GetMenu without a token: UNAUTHENTICATED; with a bad one too");
    let mut hub = c.client(1);
    let refused = hub
        .get_menu(with_token(pb::GetMenuRequest {}, None))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = hub
        .get_menu(with_token(pb::GetMenuRequest {}, Some("not.a.token")))
        .await
        .expect_err("bad token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    phase("GetMenu with the pairing link's token (a kitchen screen): the menu");
    let menu = hub
        .get_menu(with_token(pb::GetMenuRequest {}, Some(kds_token)))
        .await
        .expect("any role reads the menu")
        .into_inner();
    assert_eq!(menu.name, "Demo Diner");
    assert!(
        menu.items.iter().any(|i| i.sku == "BURGER-CLASSIC"),
        "{menu:?}"
    );

    phase("over gRPC-web without a token: UNAUTHENTICATED (16)");
    let (response, reply) = grpc_web_call(
        &c.client_addr(1),
        "/pos.v1.Hub/GetMenu",
        &pb::GetMenuRequest {},
        LAN_ORIGIN,
    )
    .await;
    assert_eq!(
        grpc_web_status(&response, &reply).as_deref(),
        Some("16"),
        "{response:?} {reply:?}"
    );
}

#[test]
fn serve_refuses_a_bad_menu_by_name_and_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let duplicate = dir.path().join("duplicate.json");
    std::fs::write(
        &duplicate,
        r#"{"name": "Demo Diner", "currency": "USD", "items": [
            {"sku": "FRIES", "name": "Fries", "price": 350, "category": "food"},
            {"sku": "FRIES", "name": "Large fries", "price": 450, "category": "food"}]}"#,
    )
    .expect("writes");
    let typo = dir.path().join("typo.json");
    std::fs::write(
        &typo,
        r#"{"name": "Demo Diner", "currency": "USD", "items": [
            {"sku": "FRIES", "name": "Fries", "prize": 350, "category": "food"}]}"#,
    )
    .expect("writes");
    let missing = dir.path().join("missing.json");
    let cases = [
        (&duplicate, "item 1 repeats sku \"FRIES\" of item 0"),
        (&typo, "unknown field `prize`"),
        (&missing, "cannot read the menu"),
    ];
    for (menu, problem) in cases {
        let ports = free_ports(2);
        let data = dir.path().join("data");
        let args = [
            "serve",
            "--node-id",
            "1",
            "--no-mdns",
            "--insecure-no-auth",
            "--data-dir",
            data.to_str().expect("UTF-8"),
            "--listen",
            &format!("127.0.0.1:{}", ports[0]),
            "--peer-listen",
            &format!("127.0.0.1:{}", ports[1]),
            "--menu",
            menu.to_str().expect("UTF-8"),
        ];
        // A node that started anyway is killed after the timeout, failing the test.
        let out = run_cli(&args, dir.path(), Duration::from_secs(30));
        let stderr = common::failed(&out, &format!("serve --menu {}", menu.display()));
        assert!(
            stderr.contains(&menu.display().to_string()),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(problem), "names {problem:?}: {stderr}");
    }
}

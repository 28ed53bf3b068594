//! Tests of the simulator over real HTTP, calling the provider API as a client does.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ishosting_operator::simulator::{
    AdminClient, Faults, Simulator, SimulatorConfig, SimulatorHandle,
};
use reqwest::{Client, Method, StatusCode};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};

const KEY: &str = "test-key";

struct Sim {
    handle: SimulatorHandle,
    http: Client,
    admin: AdminClient,
}

async fn start_with(config: SimulatorConfig) -> Sim {
    let handle = Simulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts");
    let admin = handle.admin();
    let http = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Sim {
        handle,
        http,
        admin,
    }
}

/// Starts a simulator with one account of `balance` dollars and 50 ms provisioning steps.
async fn start(balance: Decimal) -> Sim {
    start_with(SimulatorConfig {
        speed: 1.0,
        provision: Duration::from_millis(50),
        accounts: vec![(KEY.to_owned(), balance)],
    })
    .await
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    async fn call_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = key {
            request = request.header("X-Api-Token", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("a response");
        let status = response.status();
        let text = response.text().await.expect("a body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call_as(Some(KEY), Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call_as(Some(KEY), Method::POST, path, Some(body))
            .await
    }

    async fn patch(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(Some(KEY), Method::PATCH, path, body).await
    }

    /// Places an order and returns the invoice id and the first service id.
    async fn order(&self, body: Value) -> (u64, String) {
        let (status, invoice) = self.post("/billing/order", body).await;
        assert_eq!(status, StatusCode::OK, "{invoice}");
        let id = invoice["id"].as_u64().expect("invoice ids are numbers");
        let service = invoice["services"][0]["service"]["id"]
            .as_str()
            .expect("service ids are strings")
            .to_owned();
        (id, service)
    }

    async fn pay(&self, invoice: u64) -> (StatusCode, Value) {
        self.post(
            &format!("/billing/invoice/{invoice}/pay"),
            json!({"balance": "true", "renew": "false", "method": "not set", "redirect": "not set"}),
        )
        .await
    }

    /// Polls the VPS until its status code is `code`, for at most 2 s.
    async fn wait_for_status(&self, id: &str, code: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let (status, vps) = self.get(&format!("/vps/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{vps}");
            if vps["status"]["code"] == code {
                return vps;
            }
            assert!(Instant::now() < deadline, "VPS never reached {code}: {vps}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn balance(&self, key: &str) -> Decimal {
        let stats = self.admin.stats().await.unwrap();
        stats.balances[&fingerprint(key)].parse().unwrap()
    }
}

fn fingerprint(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses money as the provider writes it: `"93.40$"`, `"20$"` or a number.
fn money(value: &Value) -> Decimal {
    match value {
        Value::String(s) => s.trim_end_matches('$').parse().expect("money"),
        Value::Number(n) => n.to_string().parse().expect("money"),
        other => panic!("not money: {other}"),
    }
}

/// Builds the walkthrough's order: Lite Linux NVMe in the Netherlands for 6 months
/// with Debian, 4 more IPv4 addresses and 2 GB RAM.
fn walkthrough_order(identity: Option<&str>, comment: &str) -> Value {
    let mut item = json!({
        "action": "new",
        "type": "vps",
        "plan": "29_6m",
        "location": {"city": "ams"},
        "quantity": 1,
        "options": {"ssh": {"is_enabled": true, "keys": ["ssh-1"]}, "vnc": {"is_enabled": false}},
        "additions": [
            {"code": "linux/debian11#64", "category": "os"},
            {"quantity": 4, "category": "ip"},
            {"code": "2g", "category": "ram"},
        ],
        "comment": comment,
    });
    if let Some(identity) = identity {
        item["identity"] = json!(identity);
    }
    json!({"items": [item]})
}

fn plain_order(identity: &str) -> Value {
    json!({"items": [{"action": "new", "type": "vps", "plan": "29_1m", "identity": identity}]})
}

fn codes(plans: &Value) -> Vec<String> {
    plans
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["plan"]["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn plans_filter_location_platform_period() {
    let sim = start(dec!(0)).await;

    let (status, plans) = sim
        .get("/vps/plans?locations[]=NL&platforms[]=linux&period=6m")
        .await;
    assert_eq!(status, StatusCode::OK);
    let found = codes(&plans);
    assert!(found.contains(&"29_6m".to_owned()), "{found:?}");
    for plan in plans.as_array().unwrap() {
        assert_eq!(plan["location"]["code"], "NL");
        assert_eq!(plan["platform"]["code"], "PLATFORM_CODE_LINUX");
        assert_eq!(plan["plan"]["period"]["code"], "PLAN_PERIOD_6_MONTH");
        assert!(plan["plan"]["price"].as_str().unwrap().ends_with('$'));
    }

    // The walkthrough's path gives the same list.
    let (_, same) = sim
        .get("/services/vps/plans?locations[]=NL&platforms[]=linux&period=6m")
        .await;
    assert_eq!(codes(&same), found);

    let (_, two) = sim
        .get("/vps/plans?locations[]=PL&locations[]=EE&platforms[]=windows")
        .await;
    let countries: Vec<&str> = two
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["location"]["code"].as_str().unwrap())
        .collect();
    assert!(countries.contains(&"PL"));
    assert!(countries.contains(&"EE"));
    assert!(countries.iter().all(|c| *c == "PL" || *c == "EE"));
    for plan in two.as_array().unwrap() {
        assert_eq!(plan["platform"]["code"], "PLATFORM_CODE_WINDOWS");
        assert_eq!(plan["plan"]["period"]["code"], "PLAN_PERIOD_MONTH");
    }

    let (status, error) = sim.get("/vps/plans?period=2m").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["data"]["period"].is_string(), "{error}");

    let (status, plan) = sim.get("/vps/plan/29_6m").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plan["plan"]["name"], "Lite");
    assert_eq!(plan["location"]["variant"]["city"]["code"], "ams");
    let (status, error) = sim.get("/vps/plan/999_6m").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["status"], 404);

    let (status, configs) = sim.get("/vps/configs/29_6m").await;
    assert_eq!(status, StatusCode::OK);
    let fixed = &configs["platforms"]["additions"]["fixed"];
    let default = |category: &str| {
        fixed[category]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["is_default"] == true)
            .map(|o| o["code"].as_str().unwrap().to_owned())
    };
    assert_eq!(default("os").as_deref(), Some("linux/ubuntu22#64"));
    assert_eq!(default("ram").as_deref(), Some("1g"));
    let os: Vec<&str> = fixed["os"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["code"].as_str().unwrap())
        .collect();
    assert!(os.contains(&"linux/debian11#64"));
    assert!(os.contains(&"linux/debian12#64"));
    assert_eq!(configs["network"]["protocols"]["ipv4"]["max"], 32);
    assert_eq!(configs["location"]["variants"]["city"][0]["code"], "ams");
    let (status, _) = sim.get("/services/vps/configs/29_6m").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn validate_prices_walkthrough_order() {
    let sim = start(dec!(0)).await;
    let (_, configs) = sim.get("/vps/configs/29_6m").await;
    let period = configs["periods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plan"] == "29_6m")
        .expect("the plan's own period");
    let option = |category: &str, code: &str| {
        configs["platforms"]["additions"]["fixed"][category]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["code"] == code)
            .cloned()
            .unwrap_or_else(|| panic!("{category} {code}"))
    };
    let step = &configs["network"]["protocols"]["ipv4"]["step"];
    let expected = money(&period["price"])
        + money(&option("os", "linux/debian11#64")["price"])
        + money(&option("ram", "2g")["price"])
        + dec!(4) * (money(&step["price"]) + money(&step["once"]));

    let (status, validated) = sim
        .post(
            "/billing/order/validate",
            walkthrough_order(Some("walk"), "walkthrough"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{validated}");
    let item = &validated["items"][0];
    assert_eq!(money(&item["total"]), expected, "{item}");
    assert_eq!(
        money(&item["price"]) + money(&item["once"]) + money(&item["discount"]),
        money(&item["total"])
    );
    assert!(money(&item["discount"]) < Decimal::ZERO);
    assert_eq!(item["identity"], "walk");
    assert_eq!(item["comment"], "walkthrough");
    assert_eq!(item["service"]["plan"]["code"], "29_6m");
    assert_eq!(
        item["service"]["platform"]["config"]["os"]["code"],
        "linux/debian11#64"
    );

    // Validating orders nothing.
    let stats = sim.admin.stats().await.unwrap();
    assert!(stats.invoices.is_empty());
    assert!(stats.services.is_empty());
}

#[tokio::test]
async fn order_invalid_fields_rejected() {
    let sim = start(dec!(100)).await;
    let (status, error) = sim
        .post(
            "/billing/order",
            json!({"items": [{"action": "new", "type": "vps", "plan": "999_6m"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["status"], 400);
    assert!(error["message"].as_str().unwrap().contains("999_6m"));
    assert!(error["data"]["items.0.plan"].is_string(), "{error}");

    let bad = json!({"items": [{
        "action": "new",
        "type": "vps",
        "plan": "29_6m",
        "location": {"city": "fra"},
        "quantity": 0,
        "additions": [
            {"category": "gpu", "code": "x"},
            {"category": "ip", "quantity": 33},
            {"category": "ram", "code": "3g"},
        ],
    }]});
    for path in ["/billing/order/validate", "/billing/order"] {
        let (status, error) = sim.post(path, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let data = error["data"].as_object().unwrap();
        for field in [
            "items.0.location.city",
            "items.0.quantity",
            "items.0.additions.0.category",
            "items.0.additions.1.quantity",
            "items.0.additions.2.code",
        ] {
            assert!(
                data.contains_key(field),
                "{path}: {field} missing in {error}"
            );
        }
    }
    let (status, error) = sim.post("/billing/order", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["data"]["items"].is_string());

    let stats = sim.admin.stats().await.unwrap();
    assert!(stats.invoices.is_empty());
    assert!(stats.services.is_empty());
    assert!(stats.orders_by_identity.is_empty());
}

#[tokio::test]
async fn order_creates_unpaid_invoice() {
    let sim = start(dec!(0)).await;
    let (status, invoice) = sim
        .post(
            "/billing/order",
            walkthrough_order(Some("web-1"), "for the web tier"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{invoice}");
    let id = invoice["id"].as_u64().expect("a number");
    assert_eq!(invoice["status"]["code"], "STATUS_UNPAID");
    assert_eq!(
        invoice["due_to"].as_i64().unwrap() - invoice["invoiced_at"].as_i64().unwrap(),
        3 * 86_400
    );
    assert!(invoice["paid_at"].is_null());
    let line = &invoice["services"][0];
    assert_eq!(line["identity"], "web-1");
    assert_eq!(line["comment"], "for the web tier");
    assert_eq!(money(&line["total"]), money(&invoice["total"]));
    let service = line["service"]["id"].as_str().unwrap();
    let parts: Vec<&str> = service.split('_').collect();
    assert_eq!(parts.len(), 3, "{service}");
    assert_eq!(parts[0], "NL");
    assert!(parts[1..].iter().all(|p| p.parse::<u64>().is_ok()));

    let (status, vps) = sim.get(&format!("/vps/{service}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vps["status"]["code"], "STATUS_CODE_PENDING");
    assert_eq!(vps["status"]["state"]["code"], "STATE_CODE_PENDING");
    assert!(vps["network"]["public_ip"].is_null());

    let (_, again) = sim.get(&format!("/billing/invoice/{id}")).await;
    assert_eq!(again["id"], id);
    let (_, status_answer) = sim.get(&format!("/billing/invoice/{id}/status")).await;
    assert_eq!(status_answer["status"]["code"], "STATUS_UNPAID");
    assert_eq!(status_answer["paid"], 0);
    let (_, services) = sim.get("/services/list").await;
    assert_eq!(services[0]["id"], service);
    assert_eq!(services[0]["type"], "vps");

    let stats = sim.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity,
        BTreeMap::from([("web-1".into(), 1)])
    );
    assert_eq!(stats.invoices[0].identity, "web-1");
    assert_eq!(stats.invoices[0].comment, "for the web tier");
    assert_eq!(stats.services[0].status, "STATUS_CODE_PENDING");
}

#[tokio::test]
async fn pay_provisions_vps() {
    let sim = start(dec!(500)).await;
    let (invoice, service) = sim.order(walkthrough_order(Some("db-1"), "")).await;
    let (_, unpaid) = sim.get(&format!("/billing/invoice/{invoice}")).await;
    let total = money(&unpaid["total"]);

    let (status, paid) = sim.pay(invoice).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["transaction"]["status"], "TRANSACTION_SUCCESS");
    assert_eq!(money(&paid["transaction"]["total"]), total);
    assert_eq!(sim.balance(KEY).await, dec!(500) - total);

    let (_, after) = sim.get(&format!("/billing/invoice/{invoice}")).await;
    assert_eq!(after["status"]["code"], "STATUS_PAID");
    assert!(after["paid_at"].is_i64());

    let vps = sim.wait_for_status(&service, "STATUS_CODE_RUNNING").await;
    assert_eq!(vps["status"]["state"]["code"], "STATE_CODE_ACTIVE");
    let ip: Ipv4Addr = vps["network"]["public_ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ip.octets()[..3], [203, 0, 113]);
    assert_eq!(
        vps["network"]["protocols"]["ipv4"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert!(
        !vps["access"]["ssh"]["users"][0]["password"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(vps["plan"]["code"], "29_6m");
    assert_eq!(vps["plan"]["auto_renew"], false, "renew false was sent");
    assert!(vps["plan"]["next_charge"].is_i64());

    let stats = sim.admin.stats().await.unwrap();
    assert_eq!(stats.payments_by_identity["db-1"], 1);
}

#[tokio::test]
async fn pay_twice_charges_once() {
    let sim = start(dec!(500)).await;
    let (invoice, _) = sim.order(walkthrough_order(Some("twice"), "")).await;
    let (status, _) = sim.pay(invoice).await;
    assert_eq!(status, StatusCode::OK);
    let balance = sim.balance(KEY).await;

    let (status, error) = sim.pay(invoice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["message"].as_str().unwrap().contains("already paid"),
        "{error}"
    );
    assert_eq!(sim.balance(KEY).await, balance);

    let stats = sim.admin.stats().await.unwrap();
    assert_eq!(stats.payments_by_identity["twice"], 1);
    assert_eq!(stats.failed_payments, 1);
}

#[tokio::test]
async fn pay_insufficient_funds_then_top_up() {
    let sim = start(dec!(10)).await;
    let (invoice, _) = sim.order(walkthrough_order(Some("poor"), "")).await;

    let (status, error) = sim.pay(invoice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Insufficient funds"),
        "{error}"
    );
    assert!(error["data"]["balance"].as_str().unwrap().contains("10$"));
    let (_, unpaid) = sim.get(&format!("/billing/invoice/{invoice}/status")).await;
    assert_eq!(unpaid["status"]["code"], "STATUS_UNPAID");
    assert_eq!(unpaid["transactions"][0]["status"], "TRANSACTION_FAILED");
    assert_eq!(sim.balance(KEY).await, dec!(10));

    sim.admin.top_up(KEY, dec!(100)).await.unwrap();
    let (status, paid) = sim.pay(invoice).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(sim.balance(KEY).await, dec!(110) - money(&unpaid["total"]));

    // Paying with anything but the balance is refused.
    let (invoice, _) = sim.order(plain_order("card")).await;
    let (status, error) = sim
        .post(
            &format!("/billing/invoice/{invoice}/pay"),
            json!({"balance": false, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["data"]["balance"].is_string());
}

#[tokio::test]
async fn auth_missing_unknown_expired_keys() {
    let sim = start(dec!(0)).await;
    let (status, error) = sim.call_as(None, Method::GET, "/services/list", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["status"], 401);
    let (status, _) = sim
        .call_as(Some("nobody"), Method::GET, "/services/list", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The walkthrough's header name works too.
    let response = sim
        .http
        .get(sim.url("/services/list"))
        .header("X-Authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    sim.admin.set_expired(KEY, true).await.unwrap();
    let (status, error) = sim.get("/services/list").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        error["message"].as_str().unwrap().contains("expired"),
        "{error}"
    );
    sim.admin.set_expired(KEY, false).await.unwrap();
    let (status, _) = sim.get("/services/list").await;
    assert_eq!(status, StatusCode::OK);

    // A key lapses 70 simulated days after it is issued.
    sim.admin.advance_clock(6_048_000.0).await.unwrap();
    let (status, error) = sim.get("/services/list").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn invoices_filters_and_paging() {
    let sim = start(dec!(500)).await;
    let (first, first_service) = sim.order(plain_order("a")).await;
    let (second, _) = sim.order(plain_order("b")).await;
    sim.pay(first).await;

    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().expect("listed ids are strings").to_owned())
            .collect()
    };
    let (status, all) = sim.get("/billing/invoices?limit=10").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&all), [second.to_string(), first.to_string()]);

    let (_, paid) = sim
        .get("/billing/invoices?limit=10&status=STATUS_PAID")
        .await;
    assert_eq!(ids(&paid), [first.to_string()]);
    let (_, unpaid) = sim.get("/billing/invoices?limit=10&status=unpaid").await;
    assert_eq!(ids(&unpaid), [second.to_string()]);
    let (_, by_service) = sim
        .get(&format!(
            "/billing/invoices?limit=10&service={first_service}"
        ))
        .await;
    assert_eq!(ids(&by_service), [first.to_string()]);
    let (_, by_service) = sim
        .get(&format!(
            "/billing/invoices?limit=10&service_id={first_service}"
        ))
        .await;
    assert_eq!(ids(&by_service), [first.to_string()]);

    let now = all[0]["invoiced_at"].as_i64().unwrap();
    let (_, later) = sim
        .get(&format!(
            "/billing/invoices?limit=10&period[from]={}",
            now + 60
        ))
        .await;
    assert!(ids(&later).is_empty());
    let (_, window) = sim
        .get(&format!(
            "/billing/invoices?limit=10&period%5Bfrom%5D={}&period%5Bto%5D={}",
            now - 60,
            now + 60
        ))
        .await;
    assert_eq!(ids(&window).len(), 2);

    let (_, page) = sim.get("/billing/invoices?limit=1&offset=1").await;
    assert_eq!(ids(&page), [first.to_string()]);
    let (status, error) = sim.get("/billing/invoices").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["data"]["limit"].is_string());
    let (status, _) = sim.get("/billing/invoices?limit=10&status=lost").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim.get("/billing/invoice/1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn vps_patch_requires_tags() {
    let sim = start(dec!(0)).await;
    let (_, service) = sim.order(plain_order("tags")).await;
    let path = format!("/vps/{service}");

    let (status, error) = sim.patch(&path, Some(json!({"name": "web"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["data"]["tags"].is_string(), "{error}");

    let (status, patched) = sim
        .patch(
            &path,
            Some(json!({"name": "web", "tags": ["k8s", "web"], "plan": {"auto_renew": false}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "web");
    assert_eq!(patched["plan"]["auto_renew"], false);
    let (_, vps) = sim.get(&path).await;
    assert_eq!(vps["name"], "web");
    assert_eq!(vps["tags"], json!(["k8s", "web"]));
    assert_eq!(vps["plan"]["auto_renew"], false);

    let (status, _) = sim.patch("/vps/NL_1_1", Some(json!({"tags": []}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn vps_actions_change_status() {
    let sim = start(dec!(500)).await;
    let (invoice, service) = sim.order(plain_order("actions")).await;
    let action = |name: &str| format!("/vps/{service}/status/{name}");

    // Nothing can be started before it is paid and installed.
    let (status, _) = sim.patch(&action("start"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    sim.pay(invoice).await;
    sim.wait_for_status(&service, "STATUS_CODE_RUNNING").await;

    let (status, answer) = sim.patch(&action("stop"), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["code"], "STATUS_CODE_STOPPED");
    let (_, answer) = sim.get(&format!("/vps/{service}/status")).await;
    assert_eq!(answer["code"], "STATUS_CODE_STOPPED");
    assert_eq!(answer["state"]["code"], "STATE_CODE_ACTIVE");

    let (_, answer) = sim.patch(&action("start"), None).await;
    assert_eq!(answer["code"], "STATUS_CODE_RUNNING");

    let (_, answer) = sim.patch(&action("reboot"), None).await;
    assert_eq!(answer["code"], "STATUS_CODE_REBOOTING");
    sim.wait_for_status(&service, "STATUS_CODE_RUNNING").await;

    // The list spells codes as words.
    let (_, list) = sim.get("/vps/list?limit=10").await;
    assert_eq!(list[0]["status"]["code"], "running");
    assert_eq!(list[0]["status"]["state"]["code"], "Active");
    let (_, filtered) = sim
        .get("/vps/list?limit=10&statuses[]=STATUS_CODE_STOPPED")
        .await;
    assert!(filtered.as_array().unwrap().is_empty());

    let (status, _) = sim.patch(&action("explode"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, answer) = sim.patch(&action("cancel"), None).await;
    assert_eq!(answer["code"], "STATUS_CODE_CANCELED");
    assert_eq!(answer["state"]["code"], "STATE_CODE_CANCELED");
    let (status, _) = sim.patch(&action("start"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, error) = sim.get("/vps/NL_0_0").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["status"], 404);
}

#[tokio::test]
async fn invoice_unpaid_cancelled_when_due() {
    let sim = start(dec!(500)).await;
    let (invoice, service) = sim.order(plain_order("late")).await;
    sim.admin
        .advance_clock(3.0 * 86_400.0 - 60.0)
        .await
        .unwrap();
    let (_, status) = sim.get(&format!("/billing/invoice/{invoice}/status")).await;
    assert_eq!(status["status"]["code"], "STATUS_UNPAID");

    sim.admin.advance_clock(61.0).await.unwrap();
    let (_, status) = sim.get(&format!("/billing/invoice/{invoice}/status")).await;
    assert_eq!(status["status"]["code"], "STATUS_CANCELLED");
    let (_, vps) = sim.get(&format!("/vps/{service}")).await;
    assert_eq!(vps["status"]["code"], "STATUS_CODE_CANCELED");
    let (status, error) = sim.pay(invoice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["message"].as_str().unwrap().contains("cancelled"));
    assert_eq!(sim.balance(KEY).await, dec!(500));
}

#[tokio::test]
async fn clock_speed_factor_due_dates() {
    // 3 simulated days pass in about 0.65 real seconds.
    let sim = start_with(SimulatorConfig {
        speed: 400_000.0,
        provision: Duration::from_millis(50),
        accounts: vec![(KEY.to_owned(), dec!(0))],
    })
    .await;
    let (invoice, _) = sim.order(plain_order("fast")).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, status) = sim.get(&format!("/billing/invoice/{invoice}/status")).await;
        if status["status"]["code"] == "STATUS_CANCELLED" {
            break;
        }
        assert!(Instant::now() < deadline, "never cancelled: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn renewal_charges_suspends_or_terminates() {
    const MONTH: f64 = 30.0 * 86_400.0;
    // Enough for the first month (6$) and one renewal, not for a second one.
    let sim = start(dec!(12.50)).await;
    let (invoice, service) = sim.order(plain_order("renew")).await;
    let (status, _) = sim
        .post(
            &format!("/billing/invoice/{invoice}/pay"),
            json!({"balance": true, "renew": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let vps = sim.wait_for_status(&service, "STATUS_CODE_RUNNING").await;
    let next_charge = vps["plan"]["next_charge"].as_i64().unwrap();
    let balance = sim.balance(KEY).await;

    // With auto-renew on, the next month is charged from the balance.
    sim.admin.advance_clock(MONTH + 1.0).await.unwrap();
    let (_, vps) = sim.get(&format!("/vps/{service}")).await;
    assert_eq!(vps["status"]["code"], "STATUS_CODE_RUNNING");
    assert_eq!(
        vps["plan"]["next_charge"].as_i64().unwrap(),
        next_charge + 30 * 86_400
    );
    let (_, paid) = sim.get("/billing/invoices?limit=10&status=paid").await;
    assert_eq!(paid.as_array().unwrap().len(), 2);
    assert_eq!(paid[0]["services"][0]["action"], "renew");
    let renewal = money(&paid[0]["total"]);
    assert_eq!(sim.balance(KEY).await, balance - renewal);
    let stats = sim.admin.stats().await.unwrap();
    assert_eq!(stats.payments_by_identity["renew"], 2);

    // Without funds the VPS is suspended until its renewal invoice is paid.
    assert!(sim.balance(KEY).await < renewal);
    sim.admin.advance_clock(MONTH).await.unwrap();
    let (_, vps) = sim.get(&format!("/vps/{service}")).await;
    assert_eq!(vps["status"]["code"], "STATUS_CODE_SUSPENDED");
    assert_eq!(vps["status"]["state"]["code"], "STATE_CODE_SUSPENDED");
    let (_, unpaid) = sim.get("/billing/invoices?limit=10&status=unpaid").await;
    let id: u64 = unpaid[0]["id"].as_str().unwrap().parse().unwrap();
    sim.admin.top_up(KEY, dec!(50)).await.unwrap();
    let (status, _) = sim.pay(id).await;
    assert_eq!(status, StatusCode::OK);
    let (_, vps) = sim.get(&format!("/vps/{service}")).await;
    assert_eq!(vps["status"]["code"], "STATUS_CODE_RUNNING");

    // With auto-renew off it ends with its paid period.
    let (status, _) = sim
        .patch(
            &format!("/vps/{service}"),
            Some(json!({"tags": [], "plan": {"auto_renew": false}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Keys last 70 days: reissue it before the third month.
    sim.admin.set_expired(KEY, false).await.unwrap();
    sim.admin.advance_clock(MONTH).await.unwrap();
    let (_, vps) = sim.get(&format!("/vps/{service}")).await;
    assert_eq!(vps["status"]["code"], "STATUS_CODE_TERMINATED");
}

#[tokio::test]
async fn invoice_cancel_only_unpaid() {
    let sim = start(dec!(500)).await;
    let (invoice, service) = sim.order(plain_order("undo")).await;
    let path = format!("/billing/invoice/{invoice}/cancel");
    let (status, cancelled) = sim.patch(&path, None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"]["code"], "STATUS_CANCELLED");
    let (_, vps) = sim.get(&format!("/vps/{service}")).await;
    assert_eq!(vps["status"]["code"], "STATUS_CODE_CANCELED");
    let (status, _) = sim.patch(&path, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (paid, _) = sim.order(plain_order("keep")).await;
    sim.pay(paid).await;
    let (status, _) = sim
        .patch(&format!("/billing/invoice/{paid}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn order_concurrent_gets_conflict() {
    let sim = start(dec!(0)).await;
    let (a, b) = tokio::join!(
        sim.post("/billing/order", plain_order("first")),
        sim.post("/billing/order", plain_order("second")),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let conflict = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(conflict["status"], 409);
    assert_eq!(sim.admin.stats().await.unwrap().invoices.len(), 1);
}

#[tokio::test]
async fn rate_limit_blocks_key_for_hour() {
    let sim = start(dec!(0)).await;
    sim.admin
        .create_account("other-key", dec!(0))
        .await
        .unwrap();
    for i in 0..150 {
        let (status, _) = sim.get("/services/list").await;
        assert_eq!(status, StatusCode::OK, "call {i}");
    }
    let (status, error) = sim.get("/services/list").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["status"], 429);
    assert!(error["message"].as_str().unwrap().contains("blocked"));

    // Still blocked after the window has passed; other keys are not affected.
    sim.admin.advance_clock(60.0).await.unwrap();
    let (status, _) = sim.get("/services/list").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = sim
        .call_as(Some("other-key"), Method::GET, "/services/list", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    sim.admin.advance_clock(3600.0).await.unwrap();
    let (status, _) = sim.get("/services/list").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rate_windows_record_maxima() {
    let sim = start(dec!(0)).await;
    for _ in 0..5 {
        sim.get("/services/list").await;
    }
    // Past the 10 s window, within the minute.
    sim.admin.advance_clock(11.0).await.unwrap();
    for _ in 0..3 {
        sim.get("/services/list").await;
    }
    let fingerprint = ishosting_operator::ishosting::ApiKey::new(KEY.into()).fingerprint();
    let stats = sim.admin.stats().await.unwrap();
    assert_eq!(stats.max_requests_per_10s.get(&fingerprint), Some(&5));
    assert_eq!(stats.max_requests_per_60s.get(&fingerprint), Some(&8));
    assert_eq!(stats.rate_limit_refusals, 0);

    // 147 more fill the 10 s window to 150 requests, so the next is rejected and counted.
    for _ in 0..147 {
        sim.get("/services/list").await;
    }
    let (status, _) = sim.get("/services/list").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let stats = sim.admin.stats().await.unwrap();
    assert_eq!(stats.max_requests_per_10s.get(&fingerprint), Some(&151));
    assert_eq!(stats.rate_limit_refusals, 1);
}

#[tokio::test]
async fn rate_limit_minute_html_challenge() {
    let sim = start(dec!(0)).await;
    for round in 0..2 {
        for i in 0..150 {
            let (status, _) = sim.get("/services/list").await;
            assert_eq!(status, StatusCode::OK, "round {round}, call {i}");
        }
        // Past the 10 s window, well within the minute.
        sim.admin.advance_clock(11.0).await.unwrap();
    }
    let response = sim
        .http
        .get(sim.url("/services/list"))
        .header("X-Api-Token", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = response.text().await.unwrap();
    assert!(body.contains("Just a moment"));
    assert!(serde_json::from_str::<Value>(&body).is_err());

    // Once the minute has passed, calls go through again.
    sim.admin.advance_clock(61.0).await.unwrap();
    let (status, _) = sim.get("/services/list").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn fault_dropped_response_commits_order() {
    let sim = start(dec!(0)).await;
    let faults = Faults {
        drop_answers: BTreeMap::from([("order".to_owned(), 1)]),
        hold_answers_ms: 50,
        ..Faults::default()
    };
    sim.admin.set_faults(&faults).await.unwrap();

    let started = Instant::now();
    let result = sim
        .http
        .post(sim.url("/billing/order"))
        .header("X-Api-Token", KEY)
        .json(&plain_order("lost"))
        .send()
        .await;
    let error = result.expect_err("the client got an answer");
    assert!(!error.is_timeout(), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(50), "held first");

    let stats = sim.admin.stats().await.unwrap();
    assert_eq!(stats.orders_by_identity["lost"], 1);
    assert_eq!(stats.invoices.len(), 1);
    assert_eq!(stats.invoices[0].status, "STATUS_UNPAID");
    let log = sim.admin.requests().await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.status),
        ("POST", "/billing/order", 0)
    );

    // Only one response was to be dropped.
    let (status, _) = sim.post("/billing/order", plain_order("found")).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = sim.get("/vps/plans").await;
    assert_eq!(status, StatusCode::OK);
    let mut bad = Faults::default();
    bad.drop_answers.insert("ordr".into(), 1);
    assert!(sim.admin.set_faults(&bad).await.is_err());
}

#[tokio::test]
async fn faults_apply_to_provider_only() {
    let sim = start(dec!(0)).await;
    let all = |set: fn(&mut Faults)| {
        let mut faults = Faults::default();
        set(&mut faults);
        faults
    };

    sim.admin
        .set_faults(&all(|f| f.error_rate = 1.0))
        .await
        .unwrap();
    let response = sim
        .http
        .get(sim.url("/vps/plans"))
        .header("X-Api-Token", KEY)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error());
    // The admin API is not disturbed.
    sim.admin.stats().await.unwrap();

    sim.admin
        .set_faults(&all(|f| f.rate_limit_rate = 1.0))
        .await
        .unwrap();
    let (status, _) = sim.get("/vps/plans").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    sim.admin
        .set_faults(&all(|f| f.challenge_rate = 1.0))
        .await
        .unwrap();
    let (status, body) = sim.get("/vps/plans").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.as_str().unwrap().contains("<html"));

    sim.admin
        .set_faults(&all(|f| f.reset_rate = 1.0))
        .await
        .unwrap();
    let result = sim
        .http
        .get(sim.url("/vps/plans"))
        .header("X-Api-Token", KEY)
        .send()
        .await;
    assert!(result.is_err(), "a reset call got an answer: {result:?}");

    sim.admin
        .set_faults(&all(|f| f.latency_ms = 200))
        .await
        .unwrap();
    let started = Instant::now();
    let (status, _) = sim.get("/vps/plans").await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));

    sim.admin.clear_faults().await.unwrap();
    let (status, _) = sim.get("/vps/plans").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn stats_count_by_identity() {
    let sim = start(dec!(1000)).await;
    let (a, _) = sim.order(plain_order("alpha")).await;
    sim.order(plain_order("beta")).await;
    let (c, _) = sim
        .order(json!({"items": [{"action": "new", "type": "vps", "plan": "37_1m"}]}))
        .await;
    sim.pay(a).await;
    sim.pay(c).await;

    let stats = sim.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity,
        BTreeMap::from([("".into(), 1), ("alpha".into(), 1), ("beta".into(), 1)])
    );
    assert_eq!(
        stats.payments_by_identity,
        BTreeMap::from([("".into(), 1), ("alpha".into(), 1)])
    );
    assert_eq!(stats.services.len(), 3);
    assert!(stats.services[2].id.starts_with("DE_"));
    assert_eq!(stats.requests_total, 5);
    assert_eq!(stats.balances.len(), 1);

    let log = sim.admin.requests().await.unwrap();
    assert_eq!(log.len(), 5);
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    let fp = fingerprint(KEY);
    for record in &log {
        assert_eq!(record.key_fingerprint.as_deref(), Some(fp.as_str()));
        assert_eq!(record.status, 200);
        assert!(record.at_ms > 0);
    }
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(KEY));
}

#[tokio::test]
async fn unknown_paths_json_errors() {
    let sim = start(dec!(0)).await;
    let (status, error) = sim.get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["status"], 404);
    let (status, error) = sim
        .call_as(Some(KEY), Method::DELETE, "/vps/plans", None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error["status"], 405);
    let response = sim
        .http
        .post(sim.url("/billing/order"))
        .header("X-Api-Token", KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn run_serves_accounts_from_args() {
    use clap::Parser;
    use ishosting_operator::simulator::{SimulateArgs, run};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        simulate: SimulateArgs,
    }

    // A port that was free a moment ago; good enough on a test machine.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args =
        Cli::parse_from(["simulate", "--listen", &listen, "--account", "cli-key=25"]).simulate;
    let server = tokio::spawn(run(args));

    let http = Client::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        let result = http
            .get(format!("http://{listen}/services/list"))
            .header("X-Api-Token", "cli-key")
            .send()
            .await;
        match result {
            Ok(response) => break response.status(),
            Err(e) => assert!(Instant::now() < deadline, "never served: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, StatusCode::OK);
    let stats = AdminClient::new(&format!("http://{listen}"))
        .stats()
        .await
        .unwrap();
    assert_eq!(stats.balances[&fingerprint("cli-key")], "25");
    server.abort();
}

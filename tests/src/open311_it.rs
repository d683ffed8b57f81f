//! Open311 GeoReport v2 on the HTTP port, against the whole platform in one
//! process: a request created through the facade is routed and gets an SLA
//! deadline, and the facade shows both as `agency_responsible` and
//! `expected_datetime`. (A third-party client library reads the same
//! endpoint in `tests/python/test_open311.py`.)

use std::net::SocketAddr;

use baladiya_platform::auth::Role;
use baladiya_proto::intake::v1 as pb;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
use serde_json::Value;

use crate::{DevToken, RunningPlatform, TestEnv, authorized, eventually, http_request};

const API_KEY: &str = "test-open311-app-key-0001";
/// In Riyadh's service area.
const OLAYA: (&str, &str) = ("24.6900", "46.6850");

async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let headers: &[(&str, &str)] = if method == "POST" {
        &[(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )]
    } else {
        &[]
    };
    http_request(addr, method, path, headers, body)
        .await
        .expect("the HTTP port answers")
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn descriptions(body: &str) -> Vec<String> {
    json(body)
        .as_array()
        .expect("an error array")
        .iter()
        .map(|e| e["description"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn open311_clients_create_and_follow_requests_in_json_and_xml() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let mut config = env.config();
    config.sections.insert(
        "open311".into(),
        toml::from_str(&format!(
            "[clients.app]\napi_key = \"{API_KEY}\"\nchannel = \"CHANNEL_OPEN311\"\n"
        ))?,
    );
    let platform = RunningPlatform::start(config, baladiya_server::catalogue()).await?;
    crate::sla_watcher_has_the_seed(&env).await?;
    let http = platform.http;

    // Discovery and the service list.
    let (status, body) = call(http, "GET", "/open311/discovery.json", "").await;
    assert_eq!(status, 200, "{body}");
    let discovery = json(&body);
    assert_eq!(
        discovery["endpoints"][0]["specification"],
        "http://wiki.open311.org/GeoReport_v2"
    );
    assert_eq!(
        discovery["endpoints"][0]["url"],
        "http://localhost/open311/v2"
    );
    let (status, body) = call(http, "GET", "/open311/v2/services.json", "").await;
    assert_eq!(status, 200, "{body}");
    let services = json(&body);
    let pothole = services
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["service_code"] == "POTHOLE")
        .expect("POTHOLE is a service");
    assert_eq!(pothole["service_name"], "Pothole");
    assert_eq!(pothole["metadata"], true);
    assert_eq!(pothole["type"], "realtime");
    let (status, body) = call(http, "GET", "/open311/v2/services/POTHOLE.xml", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("<?xml"), "{body}");
    assert!(
        body.contains("<code>observed_at</code>") && body.contains("<key>URGENT</key>"),
        "{body}"
    );
    let (status, body) = call(http, "GET", "/open311/v2/services/NOPE.json", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(descriptions(&body)[0].starts_with("service_code:"));
    let (status, _) = call(http, "GET", "/open311/v2/services.html", "").await;
    assert_eq!(status, 404);
    for path in [
        "/open311/v2/services.json?jurisdiction_id=NOWHERE",
        "/open311/v2/services/POTHOLE.json?jurisdiction_id=NOWHERE",
        "/open311/v2/requests.json?jurisdiction_id=NOWHERE",
    ] {
        let (status, body) = call(http, "GET", path, "").await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            descriptions(&body)[0].starts_with("jurisdiction_id:"),
            "{body}"
        );
    }
    let (status, body) = call(
        http,
        "GET",
        "/open311/v2/services.json?jurisdiction_id=RIYADH",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Creating: the key is checked first, then every parameter at once.
    let valid = [
        ("jurisdiction_id", "RIYADH"),
        ("service_code", "POTHOLE"),
        ("lat", OLAYA.0),
        ("long", OLAYA.1),
        ("description", "حفرة عميقة أمام المدرسة"),
        ("first_name", "Sara"),
        ("attribute[priority_hint]", "high"),
        ("attribute[observed_at]", "2026-03-01T07:00:00+03:00"),
        ("media_url", "https://example.org/p.jpg"),
    ];
    let (status, body) = call(http, "POST", "/open311/v2/requests.json", &form(&valid)).await;
    assert_eq!(status, 403, "{body}");
    assert!(descriptions(&body)[0].starts_with("api_key:"));
    let wrong = [&[("api_key", "not-a-key-of-anyone")][..], &valid[..]].concat();
    let (status, _) = call(http, "POST", "/open311/v2/requests.xml", &form(&wrong)).await;
    assert_eq!(status, 403);
    let bad = form(&[
        ("api_key", API_KEY),
        ("service_code", "POTHOLE"),
        ("lat", "north"),
        ("long", OLAYA.1),
    ]);
    let (status, body) = call(http, "POST", "/open311/v2/requests.json", &bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(descriptions(&body)[0].starts_with("lat:"), "{body}");
    let unknown = form(&[
        ("api_key", API_KEY),
        ("service_code", "NOPE"),
        ("lat", OLAYA.0),
        ("long", OLAYA.1),
        ("description", "x"),
    ]);
    let (status, body) = call(http, "POST", "/open311/v2/requests.json", &unknown).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        descriptions(&body)[0].starts_with("service_code:"),
        "{body}"
    );
    let outside = form(&[
        ("api_key", API_KEY),
        ("service_code", "POTHOLE"),
        ("lat", "10.0"),
        ("long", "10.0"),
        ("description", "x"),
    ]);
    let (status, body) = call(http, "POST", "/open311/v2/requests.json", &outside).await;
    assert_eq!(status, 400, "{body}");
    assert!(descriptions(&body)[0].starts_with("lat:"), "{body}");

    let create = [&[("api_key", API_KEY)][..], &valid[..]].concat();
    let (status, body) = call(http, "POST", "/open311/v2/requests.json", &form(&create)).await;
    assert_eq!(status, 201, "{body}");
    let created = json(&body);
    let id = created[0]["service_request_id"]
        .as_str()
        .expect("an id")
        .to_string();
    assert!(id.starts_with("RUH-"), "{id}");
    assert!(
        created[0]["service_notice"]
            .as_str()
            .is_some_and(|n| n.contains("media_url")),
        "{body}"
    );
    // A client retrying after a lost answer gets the same request back.
    let (status, body) = call(http, "POST", "/open311/v2/requests.xml", &form(&create)).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.contains(&format!("<service_request_id>{id}</service_request_id>")),
        "{body}"
    );
    // A second request by National Address short code.
    let by_address = form(&[
        ("api_key", API_KEY),
        ("jurisdiction_id", "RIYADH"),
        ("service_code", "STREET_LIGHTING"),
        ("address_string", "RRRD2929, King Fahd Road"),
        ("description", "Street light out"),
    ]);
    let (status, body) = call(http, "POST", "/open311/v2/requests.json", &by_address).await;
    assert_eq!(status, 201, "{body}");
    let lighting = json(&body)[0]["service_request_id"]
        .as_str()
        .expect("an id")
        .to_string();

    // Following: routed, with its deadline.
    let path = format!("/open311/v2/requests/{id}.json");
    let request = eventually(30, "the request is routed and has a deadline", || async {
        let (status, body) = call(http, "GET", &path, "").await;
        let r = json(&body)[0].clone();
        Ok((status == 200
            && r["agency_responsible"].is_string()
            && r["expected_datetime"].is_string())
        .then_some(r))
    })
    .await?;
    assert_eq!(request["status"], "open");
    assert_eq!(request["service_code"], "POTHOLE");
    assert_eq!(request["service_name"], "Pothole");
    assert_eq!(request["lat"].as_f64(), Some(24.69));
    assert_eq!(request["requested_datetime"], "2026-03-01T04:30:00Z");
    let (status, body) = call(
        http,
        "GET",
        "/open311/v2/requests/RUH-2026-9999999.json",
        "",
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Lists: by service, by status, by ids; dates need a time zone.
    let (status, body) = call(
        http,
        "GET",
        "/open311/v2/requests.xml?service_code=POTHOLE&status=open&jurisdiction_id=RIYADH",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&id) && !body.contains(&lighting), "{body}");
    let (_, body) = call(http, "GET", "/open311/v2/requests.json?status=closed", "").await;
    assert_eq!(json(&body), serde_json::json!([]));
    let (_, body) = call(
        http,
        "GET",
        &format!("/open311/v2/requests.json?service_request_id={id},{lighting}&status=closed"),
        "",
    )
    .await;
    assert_eq!(json(&body).as_array().map(Vec::len), Some(2), "{body}");
    let (_, body) = call(http, "GET", "/open311/v2/requests.json", "").await;
    assert_eq!(json(&body).as_array().map(Vec::len), Some(2), "{body}");
    let (status, body) = call(
        http,
        "GET",
        "/open311/v2/requests.json?start_date=2026-02-01T00:00:00",
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(descriptions(&body)[0].starts_with("start_date:"));
    let (_, body) = call(
        http,
        "GET",
        "/open311/v2/requests.json?start_date=2026-02-01T00:00:00%2B03:00&end_date=2026-02-28T00:00:00Z",
        "",
    )
    .await;
    assert_eq!(json(&body), serde_json::json!([]), "before the requests");

    // Tokens are report ids.
    let open311 = DevToken::new(Role::Channel)
        .channel("CHANNEL_OPEN311")
        .try_mint(&platform.config.auth)?;
    let mut intake = IntakeServiceClient::new(platform.channel().await?);
    let report = intake
        .get_report(authorized(
            pb::GetReportRequest {
                key: Some(pb::get_report_request::Key::TrackingNumber(id.clone())),
            },
            &open311,
        ))
        .await?
        .into_inner();
    assert_eq!(report.channel, pb::Channel::Open311 as i32);
    let (status, body) = call(
        http,
        "GET",
        &format!("/open311/v2/tokens/{}.json", report.id),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)[0]["service_request_id"], id.as_str());
    let (status, _) = call(http, "GET", "/open311/v2/tokens/nope.json", "").await;
    assert_eq!(status, 404);

    // The facade in a process of its own reaches intake over gRPC.
    let mut apart = env.config();
    apart.sections.insert(
        "open311".into(),
        toml::from_str(&format!(
            "grpc_endpoint = \"http://{}\"\n[clients.app]\napi_key = \"{API_KEY}\"\n",
            platform.grpc
        ))?,
    );
    let facade = RunningPlatform::start(
        apart,
        vec![std::sync::Arc::new(baladiya_open311::Open311Module)],
    )
    .await?;
    let (status, body) = call(facade.http, "GET", &path, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)[0]["service_request_id"], id.as_str());
    let (status, body) = call(
        facade.http,
        "POST",
        "/open311/v2/requests.json",
        &form(&create),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)[0]["service_request_id"], id.as_str());
    // Without an intake to reach, a module alone refuses to start.
    let mut lonely = env.config();
    lonely
        .sections
        .insert("open311".into(), toml::Value::Table(Default::default()));
    let refused = RunningPlatform::start(
        lonely,
        vec![std::sync::Arc::new(baladiya_open311::Open311Module)],
    )
    .await;
    assert!(refused.is_err(), "open311 without intake must not start");

    facade.stop().await?;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

//! The operator and analyst CLI (`baladiya report|case|sla|escalations|kpi
//! scorecard|events tail`), run as the built binary against the whole
//! platform: what it prints for scripts and people, and the exit codes.

use std::process::Output;

use baladiya_platform::auth::Role;
use serde_json::Value;

use crate::{DevToken, RunningPlatform, TestEnv, baladiya_binary, eventually};

/// In Riyadh's service area.
const OLAYA: (&str, &str) = ("24.6900", "46.6850");

struct Cli {
    endpoint: String,
    namespace: String,
}

impl Cli {
    async fn run(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut command = tokio::process::Command::new(baladiya_binary());
        command
            .args(args)
            .env_remove("BALADIYA_TOKEN")
            .env("BALADIYA_ENDPOINT", &self.endpoint)
            .env("BALADIYA__NATS__URL", crate::nats_url())
            .env("BALADIYA__EVENTS__NAMESPACE", &self.namespace)
            .kill_on_drop(true);
        if let Some(token) = token {
            command.env("BALADIYA_TOKEN", token);
        }
        tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
            .await
            .expect("the CLI finishes")
            .expect("the CLI runs")
    }

    async fn json(&self, args: &[&str], token: &str) -> Value {
        let out = self
            .run(&[args, &["--output", "json"]].concat(), Some(token))
            .await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn operators_and_scripts_work_the_platform_from_a_terminal() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), baladiya_server::catalogue()).await?;
    crate::sla_watcher_has_the_seed(&env).await?;
    let cli = Cli {
        endpoint: format!("http://{}", platform.grpc),
        namespace: env.namespace.clone(),
    };
    let channel = platform.token(Role::Channel);
    let operator = platform.token(Role::Operator);

    // Submit, idempotently.
    let submit = [
        "report",
        "submit",
        "--category",
        "POTHOLE",
        "--description",
        "حفرة كبيرة بعد أعمال الطرق",
        "--lat",
        OLAYA.0,
        "--lon",
        OLAYA.1,
        "--request-id",
        "cli-test-0001",
    ];
    let submitted = cli.json(&submit, &channel).await;
    let tracking = submitted["report"]["tracking_number"]
        .as_str()
        .expect("a tracking number")
        .to_string();
    assert!(tracking.starts_with("RUH-"), "{submitted}");
    assert_eq!(submitted["report"]["channel"], "CHANNEL_CALL_CENTER_940");
    let again = cli.json(&submit, &channel).await;
    assert_eq!(again["report"]["tracking_number"], tracking.as_str());
    // An operator at the 940 desk submits too, as the README shows.
    let desk = cli
        .json(
            &[
                "report",
                "submit",
                "--category",
                "STREET_LIGHTING",
                "--description",
                "Street light out",
                "--lat",
                "24.7100",
                "--lon",
                "46.7000",
                "--channel",
                "CHANNEL_CALL_CENTER_940",
            ],
            &operator,
        )
        .await;
    assert!(desk["report"]["tracking_number"].is_string(), "{desk}");

    // Read it as a table and as JSON.
    let out = cli.run(&["report", "get", &tracking], Some(&channel)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&tracking) && stdout(&out).contains("POTHOLE"),
        "{}",
        stdout(&out)
    );
    let listed = cli
        .json(&["report", "list", "--municipality", "RIYADH"], &operator)
        .await;
    assert_eq!(
        listed["reports"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_eq!(listed["reports"][1]["tracking_number"], tracking.as_str());

    // Work the case.
    let case = eventually(30, "the report is routed", || async {
        let cases = cli.json(&["case", "list"], &operator).await;
        Ok(cases["cases"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["tracking_number"] == tracking.as_str()))
            .cloned())
    })
    .await?;
    let case_id = case["id"].as_str().expect("a case id").to_string();
    // The body the case was routed to works it.
    let assignee = DevToken::new(Role::Partner)
        .subject("crew")
        .partner(case["assignee_code"].as_str())
        .try_mint(&platform.config.auth)?;
    let out = cli
        .run(
            &["case", "ack", &case_id, "--note", "on our way"],
            Some(&assignee),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("acknowledged"), "{}", stdout(&out));
    let clocks = cli.json(&["sla", "clocks", &case_id], &operator).await;
    assert!(
        clocks["clocks"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["metric"] == "resolve")),
        "{clocks}"
    );
    let out = cli.run(&["sla", "clocks", &case_id], Some(&operator)).await;
    assert!(stdout(&out).contains("resolve"), "{}", stdout(&out));
    let resolved = cli
        .json(
            &[
                "case",
                "resolve",
                &case_id,
                "--resolution",
                "filled and levelled",
            ],
            &assignee,
        )
        .await;
    assert_eq!(resolved["status"], "CASE_STATUS_RESOLVED");
    let escalations = cli
        .json(&["escalations", "list", "--partner", "MOTLS"], &operator)
        .await;
    assert_eq!(escalations["escalations"], serde_json::json!([]));

    // Scorecards.
    let card = cli
        .json(
            &[
                "kpi",
                "scorecard",
                "--municipality",
                "RIYADH",
                "--period",
                "2026-03",
            ],
            &operator,
        )
        .await;
    assert!(
        card["indicators"].as_array().is_some_and(|i| !i.is_empty()),
        "{card}"
    );
    let out = cli
        .run(
            &[
                "kpi",
                "scorecard",
                "--municipality",
                "RIYADH",
                "--period",
                "2026-03",
            ],
            Some(&operator),
        )
        .await;
    assert!(
        stdout(&out).starts_with("RIYADH ") && stdout(&out).contains("indicator"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stderr(&out).contains("no indicator has data"),
        "{}",
        stderr(&out)
    );
    // A code the platform does not know reads as no data, and says so.
    let out = cli
        .run(
            &[
                "kpi",
                "scorecard",
                "--municipality",
                "RUH",
                "--period",
                "2026-03",
            ],
            Some(&operator),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is the code right"),
        "{}",
        stderr(&out)
    );

    // The routing stream, decoded.
    let out = cli
        .run(
            &[
                "events",
                "tail",
                "baladiya.routing.>",
                "--since",
                "1h",
                "--count",
                "4",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    // Two reports routed, then ours acknowledged and resolved.
    assert_eq!(lines.len(), 4, "{}", stdout(&out));
    let ours: Vec<&str> = lines
        .iter()
        .filter(|l| l["data"]["case"]["tracking_number"] == tracking.as_str())
        .map(|l| l["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        ours[..2],
        [
            "sa.baladiya.routing.case.routed.v1",
            "sa.baladiya.routing.case.acknowledged.v1"
        ],
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("replay"),
        "progress on stderr: {}",
        stderr(&out)
    );

    // Exit codes and errors that say what to do.
    let out = cli.run(&["report", "get", &tracking], None).await;
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("BALADIYA_TOKEN"), "{}", stderr(&out));
    let out = cli
        .run(&["report", "get", "RUH-2026-9999999"], Some(&operator))
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = cli
        .run(
            &[
                "report",
                "submit",
                "--category",
                "NOPE",
                "--description",
                "x",
                "--lat",
                OLAYA.0,
                "--lon",
                OLAYA.1,
            ],
            Some(&channel),
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("category_code"), "{}", stderr(&out));
    let out = cli
        .run(
            &[
                "kpi",
                "scorecard",
                "--municipality",
                "RIYADH",
                "--period",
                "March",
            ],
            Some(&operator),
        )
        .await;
    assert_eq!(out.status.code(), Some(2));
    let out = cli
        .run(
            &["report", "list", "--endpoint", "http://127.0.0.1:9"],
            Some(&operator),
        )
        .await;
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));

    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

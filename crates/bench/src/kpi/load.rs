//! The bulk load behind the scorecard figure: the rows the projection's own
//! [`facts_of`] gives for millions of generated events, streamed into the KPI
//! tables with `COPY` (indexes dropped and rebuilt around it), because
//! projecting them through NATS would take the bench too long. Its own
//! module because it is plain SQL plumbing, unlike the timed steps.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use baladiya_kpi::domain::{FactRow, facts_of};
use baladiya_platform::events::InboundEvent;
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::connect;
use super::generate::{Generator, inbound};

/// Bytes of fact rows per `COPY` chunk.
const CHUNK_BYTES: usize = 4 << 20;
/// The columns of `kpi.facts` the projection writes, in `COPY` order.
const FACT_COLUMNS: &str = "event_id, kind, subject, occurred_at, municipality, partner, channel, \
                            category, license_type, activity, operator, level, value";

/// Rows for `COPY … FROM STDIN` (text format), one chunk of stories.
#[derive(Default)]
struct Rows {
    facts: String,
    case_reports: String,
    report_channels: String,
}

/// What a load wrote.
#[derive(Debug, Default)]
struct Loaded {
    events: u64,
    facts: u64,
    case_reports: u64,
    report_channels: u64,
    license_types: BTreeMap<String, i32>,
}

/// Writes the rows the projection gives for `events` more events of the mix
/// into the KPI tables with `COPY`, the facts' and states' indexes dropped and rebuilt
/// around it; then `VACUUM (ANALYZE)`.
pub(super) async fn load(
    database: &str,
    events: u64,
    now: DateTime<Utc>,
) -> anyhow::Result<serde_json::Value> {
    eprintln!("kpi: loading the facts of {events} more events");
    let started = Instant::now();
    let mut admin = connect(database).await?;
    sqlx::raw_sql("SET maintenance_work_mem = '1GB'")
        .execute(&mut admin)
        .await?;
    // (how to rebuild, how to drop): the primary key, then the indexes,
    // as the migrations made them.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT format('ALTER TABLE kpi.%I ADD CONSTRAINT %I %s', t.relname, c.conname,
                       pg_get_constraintdef(c.oid)),
                format('ALTER TABLE kpi.%I DROP CONSTRAINT %I', t.relname, c.conname)
           FROM pg_constraint c
           JOIN pg_class t ON t.oid = c.conrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
          WHERE n.nspname = 'kpi' AND t.relname IN ('facts', 'states') AND c.contype = 'p'
         UNION ALL
         SELECT indexdef, format('DROP INDEX kpi.%I', indexname)
           FROM pg_indexes
          WHERE schemaname = 'kpi' AND tablename IN ('facts', 'states')
            AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE contype = 'p')",
    )
    .fetch_all(&mut admin)
    .await
    .context("reading the facts and states tables' indexes")?;
    for (_, drop) in &indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop.clone()))
            .execute(&mut admin)
            .await
            .with_context(|| drop.clone())?;
    }

    let (tx, mut rx) = mpsc::channel::<Rows>(4);
    let generator = Generator::new(0x6b70_6932, now);
    let producer = tokio::task::spawn_blocking(move || rows(generator, events, &tx));
    let mut facts_conn = connect(database).await?;
    let mut cases_conn = connect(database).await?;
    let mut channels_conn = connect(database).await?;
    let mut facts = facts_conn
        .copy_in_raw(&format!("COPY kpi.facts ({FACT_COLUMNS}) FROM STDIN"))
        .await?;
    let mut cases = cases_conn
        .copy_in_raw("COPY kpi.case_reports (case_id, report_id) FROM STDIN")
        .await?;
    let mut channels = channels_conn
        .copy_in_raw("COPY kpi.report_channels (report_id, channel) FROM STDIN")
        .await?;
    while let Some(chunk) = rx.recv().await {
        facts
            .send(chunk.facts.as_bytes())
            .await
            .context("COPY facts")?;
        cases
            .send(chunk.case_reports.as_bytes())
            .await
            .context("COPY case_reports")?;
        channels
            .send(chunk.report_channels.as_bytes())
            .await
            .context("COPY report_channels")?;
    }
    let loaded = producer.await.context("the event generator")??;
    facts.finish().await.context("COPY facts")?;
    cases.finish().await.context("COPY case_reports")?;
    channels.finish().await.context("COPY report_channels")?;
    let copied = started.elapsed();

    eprintln!(
        "kpi: copied in {:.0} s; linking each state to the next",
        copied.as_secs_f64()
    );
    // What the projection's `link_states` does per batch, for every subject
    // at once (the statement of KPI migration 0102), the projected states
    // included.
    sqlx::raw_sql(
        "SET work_mem = '1GB';
         TRUNCATE kpi.states;
         INSERT INTO kpi.states (event_id, kind, subject, occurred_at, until, municipality,
                                 partner, category, value)
         SELECT event_id, kind, subject, occurred_at,
                lead(occurred_at) OVER (PARTITION BY subject, kind ORDER BY occurred_at, event_id),
                municipality, partner, category, value
           FROM kpi.facts
          WHERE kind IN ('case_status', 'resolve_overdue');
         RESET work_mem;",
    )
    .execute(&mut admin)
    .await
    .context("linking the states")?;
    eprintln!(
        "kpi: linked in {:.0} s; rebuilding the indexes",
        (started.elapsed() - copied).as_secs_f64()
    );
    for (create, _) in &indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(create.clone()))
            .execute(&mut admin)
            .await
            .with_context(|| create.clone())?;
    }
    let indexed = started.elapsed();
    for (license_type, days) in &loaded.license_types {
        sqlx::query(
            "INSERT INTO kpi.license_type_targets (license_type, target_days, as_of, event_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT (license_type) DO NOTHING",
        )
        .bind(license_type)
        .bind(days)
        .bind(now)
        .bind(Uuid::now_v7())
        .execute(&mut admin)
        .await?;
    }
    eprintln!("kpi: vacuuming and analysing");
    sqlx::raw_sql("VACUUM (ANALYZE) kpi.facts, kpi.states, kpi.case_reports, kpi.report_channels")
        .execute(&mut admin)
        .await
        .context("VACUUM (ANALYZE)")?;
    let (rows, size): (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM kpi.facts),
                pg_size_pretty(pg_total_relation_size('kpi.facts'))",
    )
    .fetch_one(&mut admin)
    .await?;
    let total = started.elapsed();
    eprintln!(
        "kpi: {rows} facts ({size}) ready in {:.0} s",
        total.as_secs_f64()
    );
    Ok(serde_json::json!({
        "events": loaded.events,
        "facts": loaded.facts,
        "case_reports": loaded.case_reports,
        "report_channels": loaded.report_channels,
        "license_types": loaded.license_types,
        "fact_rows_in_table": rows,
        "facts_table_size": size,
        "copy_s": copied.as_secs_f64(),
        "index_s": (indexed - copied).as_secs_f64(),
        "total_s": total.as_secs_f64(),
    }))
}

/// Turns `events` events of `generator`'s stories into rows through the
/// projection's [`facts_of`], sending them in chunks; runs on its own thread.
fn rows(mut generator: Generator, events: u64, tx: &mpsc::Sender<Rows>) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let mut loaded = Loaded::default();
    let mut chunk = Rows::default();
    // The lookups are upserts that keep the first row: within a story.
    let (mut cases, mut reports) = (Vec::<String>::new(), Vec::<String>::new());
    while loaded.events < events {
        cases.clear();
        reports.clear();
        for event in generator.story() {
            if loaded.events == events {
                break;
            }
            let event = inbound(event);
            let p = facts_of(&event)
                .with_context(|| format!("the projection refuses a generated {}", event.ce_type))?;
            for fact in &p.facts {
                push_fact(&mut chunk.facts, &event, fact);
            }
            loaded.facts += p.facts.len() as u64;
            if let Some((case, report)) = p.case_report
                && !cases.contains(&case)
            {
                push_row(&mut chunk.case_reports, &[case.as_str(), report.as_str()]);
                cases.push(case);
                loaded.case_reports += 1;
            }
            if let Some((report, channel)) = p.report_channel
                && !reports.contains(&report)
            {
                push_row(
                    &mut chunk.report_channels,
                    &[report.as_str(), channel.as_str()],
                );
                reports.push(report);
                loaded.report_channels += 1;
            }
            if let Some((license_type, days)) = p.license_target {
                loaded.license_types.insert(license_type, days);
            }
            loaded.events += 1;
            if loaded.events.is_multiple_of(1_000_000) {
                eprintln!(
                    "kpi: {} of {events} events, {} facts ({:.0} s)",
                    loaded.events,
                    loaded.facts,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if chunk.facts.len() >= CHUNK_BYTES {
            tx.blocking_send(std::mem::take(&mut chunk))
                .map_err(|_| anyhow::anyhow!("the COPY stopped"))?;
        }
    }
    tx.blocking_send(chunk)
        .map_err(|_| anyhow::anyhow!("the COPY stopped"))?;
    Ok(loaded)
}

/// One `kpi.facts` row, columns as in [`FACT_COLUMNS`].
fn push_fact(out: &mut String, event: &InboundEvent, f: &FactRow) {
    let id = event.id.to_string();
    let at = event
        .occurred_at
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    let (level, value) = (f.level.to_string(), f.value.to_string());
    push_row(
        out,
        &[
            id.as_str(),
            f.kind.as_str(),
            f.subject.as_str(),
            at.as_str(),
            f.municipality.as_str(),
            f.partner.as_str(),
            f.channel.as_str(),
            f.category.as_str(),
            f.license_type.as_str(),
            f.activity.as_str(),
            f.operator.as_str(),
            level.as_str(),
            value.as_str(),
        ],
    );
}

/// One row in `COPY`'s text format.
fn push_row(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        for c in field.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    out.push('\n');
}

//! Writing facts: the projections of a batch of events, one statement per
//! table however many events there are (what lets the projection keep up
//! with a busy stream), and the state facts linked in time. Every write is
//! keyed by its event, so a repeat writes nothing new.

use baladiya_platform::events::InboundEvent;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::catalogue::Fact;
use crate::domain::{FactRow, Projection};

/// Writes the projections of `events` (`projections[i]` is what
/// `events[i]` contributes): retractions first, so a withdrawn event in the
/// same batch writes nothing, then facts, states, and the lookups.
pub async fn write_projections(
    conn: &mut PgConnection,
    events: &[InboundEvent],
    projections: &[Projection],
) -> Result<(), sqlx::Error> {
    let mut facts = FactColumns::default();
    for (event, p) in events.iter().zip(projections) {
        for f in &p.facts {
            facts.push(event, f);
        }
    }
    write_withdrawals(conn, events, projections).await?;
    write_facts(conn, &facts).await?;
    link_states(conn, &facts).await?;
    write_lookups(conn, projections).await?;
    write_license_targets(conn, events, projections).await
}

/// Records the events the batch withdraws and deletes their facts and states.
async fn write_withdrawals(
    conn: &mut PgConnection,
    events: &[InboundEvent],
    projections: &[Projection],
) -> Result<(), sqlx::Error> {
    let (withdrawn, withdrawn_by, withdrawn_at): (Vec<uuid::Uuid>, Vec<uuid::Uuid>, Vec<_>) =
        events
            .iter()
            .zip(projections)
            .filter_map(|(event, p)| p.withdrawn.map(|w| (w, event.id, event.occurred_at)))
            .collect();
    if !withdrawn.is_empty() {
        sqlx::query(
            "WITH kept AS (
                 INSERT INTO withdrawn_events (event_id, withdrawn_by, withdrawn_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[])
                 ON CONFLICT (event_id) DO NOTHING),
             states_gone AS (DELETE FROM states WHERE event_id = ANY($1))
             DELETE FROM facts WHERE event_id = ANY($1)",
        )
        .bind(&withdrawn)
        .bind(&withdrawn_by)
        .bind(&withdrawn_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Inserts the batch's facts but those of withdrawn events.
async fn write_facts(conn: &mut PgConnection, facts: &FactColumns<'_>) -> Result<(), sqlx::Error> {
    if !facts.event_id.is_empty() {
        sqlx::query(
            "INSERT INTO facts (event_id, kind, subject, occurred_at, municipality, partner, channel,
                                category, license_type, activity, operator, level, value)
             SELECT f.* FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                                    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                                    $11::text[], $12::int4[], $13::float8[])
                  AS f(event_id, kind, subject, occurred_at, municipality, partner, channel,
                       category, license_type, activity, operator, level, value)
             WHERE NOT EXISTS (SELECT 1 FROM withdrawn_events w WHERE w.event_id = f.event_id)
             ON CONFLICT (event_id, kind) DO NOTHING",
        )
        .bind(&facts.event_id)
        .bind(&facts.kind)
        .bind(&facts.subject)
        .bind(&facts.occurred_at)
        .bind(&facts.municipality)
        .bind(&facts.partner)
        .bind(&facts.channel)
        .bind(&facts.category)
        .bind(&facts.license_type)
        .bind(&facts.activity)
        .bind(&facts.operator)
        .bind(&facts.level)
        .bind(&facts.value)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records which report each case is and which channel each report came by.
async fn write_lookups(
    conn: &mut PgConnection,
    projections: &[Projection],
) -> Result<(), sqlx::Error> {
    let (mut cases, mut case_reports) = (Vec::new(), Vec::new());
    let (mut reports, mut channels) = (Vec::new(), Vec::new());
    for p in projections {
        if let Some((case_id, report_id)) = &p.case_report {
            cases.push(case_id.as_str());
            case_reports.push(report_id.as_str());
        }
        if let Some((report_id, channel)) = &p.report_channel {
            reports.push(report_id.as_str());
            channels.push(channel.as_str());
        }
    }
    if !cases.is_empty() {
        sqlx::query(
            "INSERT INTO case_reports (case_id, report_id)
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT (case_id) DO NOTHING",
        )
        .bind(&cases)
        .bind(&case_reports)
        .execute(&mut *conn)
        .await?;
    }
    if !reports.is_empty() {
        sqlx::query(
            "INSERT INTO report_channels (report_id, channel)
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT (report_id) DO NOTHING",
        )
        .bind(&reports)
        .bind(&channels)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records each license type's target in working days, as of its latest event.
async fn write_license_targets(
    conn: &mut PgConnection,
    events: &[InboundEvent],
    projections: &[Projection],
) -> Result<(), sqlx::Error> {
    let (mut types, mut days, mut as_of, mut ids) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (event, p) in events.iter().zip(projections) {
        if let Some((license_type, target)) = &p.license_target {
            types.push(license_type.as_str());
            days.push(*target);
            as_of.push(event.occurred_at);
            ids.push(event.id);
        }
    }
    if !types.is_empty() {
        // The latest event wins, whatever order they are applied in. The
        // rows are locked in license-type order, so batches applied side by
        // side wait for each other instead of deadlocking.
        sqlx::query(
            "INSERT INTO license_type_targets (license_type, target_days, as_of, event_id)
             SELECT DISTINCT ON (license_type) license_type, target_days, as_of, event_id
               FROM UNNEST($1::text[], $2::int4[], $3::timestamptz[], $4::uuid[])
                    AS t(license_type, target_days, as_of, event_id)
              ORDER BY license_type, as_of DESC, event_id DESC
             ON CONFLICT (license_type) DO UPDATE
                SET target_days = excluded.target_days, as_of = excluded.as_of,
                    event_id = excluded.event_id
              WHERE (license_type_targets.as_of, license_type_targets.event_id)
                  < (excluded.as_of, excluded.event_id)",
        )
        .bind(&types)
        .bind(&days)
        .bind(&as_of)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Copies the state facts ([`Fact::STATES`]) among `facts` into `states`
/// and sets `until` on the states of their subjects: each holds until the
/// next one of its subject and kind, in (instant, event id) order, whatever
/// order they arrived in. Recomputing the few states of each touched subject
/// is what makes it order-free and idempotent. Two transactions writing
/// states of the same subject at once (batches applied side by side, or two
/// replicas) take turns on a per-subject lock, so the second one's statement
/// sees the first one's states.
async fn link_states(conn: &mut PgConnection, facts: &FactColumns<'_>) -> Result<(), sqlx::Error> {
    let rows: Vec<usize> = (0..facts.kind.len())
        .filter(|&at| Fact::STATES.iter().any(|f| f.as_str() == facts.kind[at]))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let (subjects, kinds) = (pick(&facts.subject, &rows), pick(&facts.kind, &rows));
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('kpi.states'), hashtext(kind || '/' || subject))
           FROM (SELECT DISTINCT subject, kind FROM UNNEST($1::text[], $2::text[]) AS t(subject, kind)
                  ORDER BY kind, subject) t",
    )
    .bind(&subjects)
    .bind(&kinds)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO states (event_id, kind, subject, occurred_at, municipality, partner, category, value)
         SELECT s.* FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                                $6::text[], $7::text[], $8::float8[])
              AS s(event_id, kind, subject, occurred_at, municipality, partner, category, value)
         WHERE NOT EXISTS (SELECT 1 FROM withdrawn_events w WHERE w.event_id = s.event_id)
         ON CONFLICT (event_id, kind) DO NOTHING",
    )
    .bind(pick(&facts.event_id, &rows))
    .bind(&kinds)
    .bind(&subjects)
    .bind(pick(&facts.occurred_at, &rows))
    .bind(pick(&facts.municipality, &rows))
    .bind(pick(&facts.partner, &rows))
    .bind(pick(&facts.category, &rows))
    .bind(pick(&facts.value, &rows))
    .execute(&mut *conn)
    .await?;
    // Each touched subject's states are read through `states_by_subject`
    // (the window keeps the lateral subquery from being flattened into a
    // join over the whole table, which a planner picks while it is small
    // and then pays for on every batch as it grows).
    sqlx::query(
        "UPDATE states s SET until = n.next
           FROM (SELECT DISTINCT subject, kind
                   FROM UNNEST($1::text[], $2::text[]) AS t(subject, kind)) t
          CROSS JOIN LATERAL (
                 SELECT o.event_id, o.kind,
                        lead(o.occurred_at) OVER (ORDER BY o.occurred_at, o.event_id) AS next
                   FROM states o
                  WHERE o.subject = t.subject AND o.kind = t.kind) n
          WHERE s.event_id = n.event_id AND s.kind = n.kind AND s.until IS DISTINCT FROM n.next",
    )
    .bind(&subjects)
    .bind(&kinds)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The values of `column` at `rows`.
fn pick<T: Copy>(column: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&at| column[at]).collect()
}

/// Fact rows as one array per column, for `UNNEST`.
#[derive(Default)]
struct FactColumns<'a> {
    event_id: Vec<Uuid>,
    kind: Vec<&'static str>,
    subject: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    municipality: Vec<&'a str>,
    partner: Vec<&'a str>,
    channel: Vec<&'a str>,
    category: Vec<&'a str>,
    license_type: Vec<&'a str>,
    activity: Vec<&'a str>,
    operator: Vec<&'a str>,
    level: Vec<i32>,
    value: Vec<f64>,
}

impl<'a> FactColumns<'a> {
    fn push(&mut self, event: &InboundEvent, f: &'a FactRow) {
        self.event_id.push(event.id);
        self.kind.push(f.kind.as_str());
        self.subject.push(&f.subject);
        self.occurred_at.push(event.occurred_at);
        self.municipality.push(&f.municipality);
        self.partner.push(&f.partner);
        self.channel.push(&f.channel);
        self.category.push(&f.category);
        self.license_type.push(&f.license_type);
        self.activity.push(&f.activity);
        self.operator.push(&f.operator);
        self.level.push(f.level);
        self.value.push(f.value);
    }
}

//! The template clock read from the one real case, and the [`Plan`] of
//! where each clone goes: the parameters the clone statements take, the
//! move that brings the burst's deadlines into the next minute, and the
//! subscriber that times each breach as it arrives.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use baladiya_proto::sla::events::v1::ClockBreached;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use prost::Message;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, Postgres};
use uuid::Uuid;

use super::sql::{MOVE_CLOCKS, MOVE_TIMERS};
use super::{
    BACKGROUND_DAYS, BACKGROUND_FROM_DAYS, BURST, GRACE_SECS, PARKED_DAYS, SPREAD_SECS, STRIDE,
    millis, seconds,
};
use crate::platform::Platform;

/// The clock every clone copies: the case's running resolve clock.
pub(super) struct Template {
    pub(super) id: Uuid,
    pub(super) partner: String,
    pub(super) calendar: String,
    pub(super) target_secs: i64,
    /// Its unfired timers: kinds, seqs and due instants, in due order.
    pub(super) kinds: Vec<String>,
    pub(super) seqs: Vec<i32>,
    pub(super) dues: Vec<DateTime<Utc>>,
    /// When its breach timer is due.
    pub(super) breach: DateTime<Utc>,
}

impl Template {
    /// The id of an open resolve clock with its breach still to come.
    pub(super) async fn find(conn: &mut PgConnection) -> anyhow::Result<Option<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT c.id FROM sla_watcher.clocks AS c
             WHERE c.metric = 'resolve' AND c.ended_at IS NULL AND c.deadline IS NOT NULL
               AND EXISTS (SELECT 1 FROM sla_watcher.timers AS t
                           WHERE t.clock_id = c.id AND t.kind = 'breach' AND t.fired_at IS NULL)
             ORDER BY c.started_at LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await?)
    }

    pub(super) async fn read(conn: &mut PgConnection) -> anyhow::Result<Self> {
        let id = Self::find(conn)
            .await?
            .context("the template clock is gone")?;
        let (partner, calendar, target_secs): (String, String, i64) = sqlx::query_as(
            "SELECT partner_code, calendar_id, target_secs FROM sla_watcher.clocks WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        let timers: Vec<(String, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT kind, seq, due_at FROM sla_watcher.timers
             WHERE clock_id = $1 AND fired_at IS NULL ORDER BY due_at, seq",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let breach = timers
            .iter()
            .find(|(kind, _, _)| kind == "breach")
            .map(|(_, _, due)| *due)
            .context("the template clock has no breach timer")?;
        Ok(Self {
            id,
            partner,
            calendar,
            target_secs,
            kinds: timers.iter().map(|t| t.0.clone()).collect(),
            seqs: timers.iter().map(|t| t.1).collect(),
            dues: timers.iter().map(|t| t.2).collect(),
            breach,
        })
    }
}

/// Where each clone goes (see `clones!` in [`sql`](super::sql)).
pub(super) struct Plan {
    pub(super) clones: i32,
    pub(super) template: Uuid,
    pub(super) kinds: Vec<String>,
    pub(super) seqs: Vec<i32>,
    pub(super) dues: Vec<DateTime<Utc>>,
    /// `<v7 timestamp>-7001-8000-` and `…-7002-8000-`: a clone's clock and
    /// subject ids are the prefix and n in 12 hex digits.
    pub(super) clock_prefix: String,
    pub(super) subject_prefix: String,
    /// Where the burst's breaches are parked, and that instant less the
    /// template's breach, in seconds.
    pub(super) parked_at: DateTime<Utc>,
    pub(super) parked_offset: f64,
    /// The other clones' first deadline less the template's breach, and the
    /// spacing of their deadlines, in seconds.
    pub(super) background_offset: f64,
    pub(super) background_step: f64,
}

impl Plan {
    pub(super) fn new(
        template: &Template,
        clones: i32,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let unix_ms = u64::try_from(now.timestamp_millis()).context("time before 1970")?;
        let prefix = |tag: u16| {
            format!(
                "{:08x}-{:04x}-7{tag:03x}-8000-",
                unix_ms >> 16,
                unix_ms & 0xffff
            )
        };
        let earliest = template
            .dues
            .iter()
            .min()
            .copied()
            .unwrap_or(template.breach);
        let lead = (template.breach - earliest).max(TimeDelta::zero());
        let parked_at = now + TimeDelta::days(PARKED_DAYS);
        let background_at = now + TimeDelta::days(BACKGROUND_FROM_DAYS) + lead;
        Ok(Self {
            clones,
            template: template.id,
            kinds: template.kinds.clone(),
            seqs: template.seqs.clone(),
            dues: template.dues.clone(),
            clock_prefix: prefix(1),
            subject_prefix: prefix(2),
            parked_at,
            parked_offset: seconds(parked_at - template.breach),
            background_offset: seconds(background_at - template.breach),
            background_step: seconds(TimeDelta::days(BACKGROUND_DAYS)) / f64::from(clones),
        })
    }

    pub(super) fn burst_step() -> f64 {
        SPREAD_SECS as f64 / f64::from(BURST)
    }

    /// Clone n's clock id, as `clones!` in [`sql`](super::sql) makes it.
    pub(super) fn clock_id(&self, n: i32) -> anyhow::Result<Uuid> {
        Ok(Uuid::parse_str(&format!("{}{n:012x}", self.clock_prefix))?)
    }

    /// `query` with the parameters of `clones!` in [`sql`](super::sql),
    /// for clones `lo..hi`.
    pub(super) fn bind<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
        lo: i32,
        hi: i32,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(lo)
            .bind(hi)
            .bind(STRIDE)
            .bind(BURST)
            .bind(self.parked_offset)
            .bind(Self::burst_step())
            .bind(self.background_offset)
            .bind(self.background_step)
            .bind(self.clock_prefix.as_str())
            .bind(self.subject_prefix.as_str())
    }

    /// Moves the burst's clocks so that their deadlines fall every
    /// [`Plan::burst_step`] from `first`. Returns how many other timers
    /// (not breaches) fall due in that window.
    pub(super) async fn schedule(
        &self,
        conn: &mut PgConnection,
        first: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let by = seconds(first - self.parked_at);
        let mut tx = conn.begin().await?;
        let mut moved = Vec::new();
        for (statement, what) in [(MOVE_CLOCKS, "clocks"), (MOVE_TIMERS, "timers")] {
            moved.push(
                sqlx::query(statement)
                    .bind(self.clock_prefix.as_str())
                    .bind(STRIDE)
                    .bind(BURST)
                    .bind(by)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("moving the burst's {what}"))?
                    .rows_affected(),
            );
        }
        let moved = moved[0];
        tx.commit().await?;
        anyhow::ensure!(
            moved == BURST as u64,
            "moved {moved} burst clocks, not {BURST}"
        );
        anyhow::ensure!(
            Utc::now() < first - TimeDelta::seconds(1),
            "scheduling the burst ended less than a second before its first deadline"
        );
        let window_end = first + TimeDelta::seconds(SPREAD_SECS + GRACE_SECS);
        let (due_breaches, others): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE kind = 'breach'), count(*) FILTER (WHERE kind <> 'breach')
             FROM sla_watcher.timers WHERE fired_at IS NULL AND due_at <= $1",
        )
        .bind(window_end)
        .fetch_one(&mut *conn)
        .await?;
        anyhow::ensure!(
            due_breaches == i64::from(BURST),
            "{due_breaches} breach timers fall due in the window, not {BURST}"
        );
        Ok(others)
    }

    /// Receives breach events until every burst clock's has arrived, or
    /// until [`GRACE_SECS`] after the last deadline. Samples the watcher's
    /// resident memory every second.
    pub(super) async fn receive(
        &self,
        watcher: &Platform,
        breaches: &mut async_nats::Subscriber,
        first: DateTime<Utc>,
        rss: &mut Vec<f64>,
    ) -> anyhow::Result<Arrivals> {
        let step = TimeDelta::microseconds((Self::burst_step() * 1e6).round() as i64);
        let mut expected = HashMap::with_capacity(BURST as usize);
        for k in 0..BURST {
            expected.insert(self.clock_id(k * STRIDE)?, first + step * k);
        }
        let last = first + step * (BURST - 1);
        let give_up_at = last + TimeDelta::seconds(GRACE_SECS);
        let give_up = tokio::time::sleep_until(
            tokio::time::Instant::now() + (give_up_at - Utc::now()).to_std().unwrap_or_default(),
        );
        tokio::pin!(give_up);
        let mut sampling = tokio::time::interval(Duration::from_secs(1));
        let mut arrived: HashSet<Uuid> = HashSet::with_capacity(BURST as usize);
        let mut out = Arrivals::default();
        while arrived.len() < expected.len() {
            tokio::select! {
                message = breaches.next() => {
                    let at = Utc::now();
                    let message = message.context("the NATS subscription ended")?;
                    let event = ClockBreached::decode(message.payload).ok();
                    let id = event.as_ref().and_then(|e| e.clock_id.parse::<Uuid>().ok());
                    match (event, id.and_then(|id| expected.get(&id).map(|d| (id, *d)))) {
                        (Some(event), Some((id, planned))) => {
                            if !arrived.insert(id) {
                                out.duplicates += 1;
                                continue;
                            }
                            let deadline = event
                                .deadline
                                .as_ref()
                                .and_then(baladiya_proto::convert::instant)
                                .unwrap_or(planned);
                            out.lags_ms.push(millis(at - deadline));
                        }
                        _ => out.unexpected += 1,
                    }
                }
                _ = sampling.tick() => rss.push(watcher.resident_mib()?),
                () = &mut give_up => break,
            }
        }
        out.received = arrived.len();
        let waited = Utc::now();
        for (id, deadline) in &expected {
            if !arrived.contains(id) {
                out.missing += 1;
                out.lags_ms.push(millis(waited - *deadline));
            }
        }
        Ok(out)
    }
}

/// What the subscriber saw of the burst.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    /// One lag per burst clock, in ms; for a missing breach, the time waited.
    pub(super) lags_ms: Vec<f64>,
    pub(super) received: usize,
    pub(super) missing: usize,
    pub(super) duplicates: u64,
    /// Breach events of clocks outside the burst, or undecodable ones.
    pub(super) unexpected: u64,
}

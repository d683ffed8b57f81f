//! Measuring indicators: one SQL query per indicator and period over the
//! facts, shaped by the indicator's [`Measure`]. Medians and percentiles are
//! PostgreSQL's exact `percentile_cont`/`percentile_disc` over the raw
//! values; a breakdown is a grouping set of the same query, so the overall
//! value is never an average of the rows below it. The gRPC API and the
//! dashboard both read through [`Kpis`], so they cannot disagree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::KpiConfig;
use crate::catalogue::{Catalogue, Dimension, Fact, Indicator, Measure, Target, TargetSource};
use crate::domain::{Filters, Measured, Rag, Reading, Subject};
use crate::error::KpiError;
use crate::period::Period;

/// The column (or expression) of a dimension in `facts_view`.
fn column(d: Dimension) -> &'static str {
    match d {
        Dimension::Municipality => "municipality",
        Dimension::Partner => "partner",
        Dimension::Channel => "channel",
        Dimension::Category => "category",
        Dimension::LicenseType => "license_type",
        Dimension::Activity => "activity",
        Dimension::Operator => "operator",
        Dimension::EscalationLevel => "level::text",
    }
}

/// Reads indicators out of the projections.
#[derive(Debug, Clone)]
pub struct Kpis {
    pub pool: PgPool,
    pub catalogue: &'static Catalogue,
    pub config: KpiConfig,
}

/// Whether `indicator` is a function of its facts' values in the period and
/// nothing else (no license-type set, no condition on other facts, one
/// target, neither a backlog nor a growth): then it is computed from
/// [`KindStats`] shared with the scorecard's other indicators.
fn is_plain(indicator: &Indicator) -> bool {
    indicator.license_types.is_empty()
        && indicator.only_subjects_with.is_none()
        && !matches!(indicator.target, Some(Target::From(_)))
        && !matches!(
            indicator.measure,
            Measure::Backlog { .. } | Measure::Growth { .. }
        )
}

/// What a scorecard's plain indicators need of one fact kind.
#[derive(Debug, Default)]
struct KindNeeds {
    median: bool,
    quantiles: Vec<f64>,
}

/// One fact kind's facts in a period: what plain indicators are made of.
#[derive(Debug)]
struct KindStats {
    count: i64,
    mean: Option<f64>,
    median: Option<f64>,
    /// (q, nearest-rank percentile), for the q's asked for.
    quantiles: Vec<(f64, f64)>,
}

/// A scorecard's result in the making: a kind's statistics or an indicator
/// measured on its own (by its place in the scorecard).
enum Part {
    Kind(&'static str, KindStats),
    Indicator(usize, Measured),
}

/// The reading of a plain indicator out of its kinds' statistics, the same
/// value and sample its own query would give.
fn plain_reading(indicator: &Indicator, stats: &BTreeMap<&'static str, KindStats>) -> Reading {
    let of = |fact: Fact| stats.get(fact.as_str());
    let count = |fact: Fact| of(fact).map_or(0, |s| s.count);
    let (value, sample) = match indicator.measure {
        Measure::Count { fact } => (Some(count(fact) as f64), count(fact)),
        Measure::Share { fact } | Measure::Mean { fact } => {
            (of(fact).and_then(|s| s.mean), count(fact))
        }
        Measure::Median { fact } => (of(fact).and_then(|s| s.median), count(fact)),
        Measure::Percentile { fact, q } => (
            of(fact).and_then(|s| {
                s.quantiles
                    .iter()
                    .find(|(asked, _)| *asked == q)
                    .map(|(_, v)| *v)
            }),
            count(fact),
        ),
        Measure::Ratio {
            numerator,
            denominator,
        } => {
            let d = count(denominator);
            ((d > 0).then(|| count(numerator) as f64 / d as f64), d)
        }
        Measure::Backlog { .. } | Measure::Growth { .. } => (None, 0),
    };
    let target = match indicator.target {
        Some(Target::Value(v)) => Some(v),
        _ => None,
    };
    Reading {
        value,
        target,
        status: Rag::of(indicator, value, target),
        sample: u64::try_from(sample).unwrap_or(0),
    }
}

/// One indicator of a scorecard, with the filters it was measured under.
pub type Scored = (&'static Indicator, Filters, Measured);

/// How many of a scorecard's indicators are measured at once.
const SCORECARD_CONCURRENCY: usize = 4;

/// Raw aggregate row: (group key, value, sample).
type Row3 = (Option<String>, Option<f64>, i64);

impl Kpis {
    /// The time zone periods are measured in for these filters.
    pub fn time_zone(&self, municipality: Option<&str>) -> Tz {
        self.config.time_zone_of(municipality)
    }

    /// Measures `indicator` in `period`.
    pub async fn measure(
        &self,
        indicator: &Indicator,
        filters: &Filters,
        period: Period,
        breakdown: Option<Dimension>,
    ) -> Result<Measured, KpiError> {
        let rows = self
            .aggregate(indicator, filters, period, breakdown)
            .await?;
        let targets = self.license_targets(indicator).await?;
        let target_for = |license_type: Option<&str>| match indicator.target {
            None => None,
            Some(Target::Value(v)) => Some(v),
            Some(Target::From(TargetSource::LicenseTypeTargetDays)) => license_type
                .and_then(|t| targets.get(t))
                .map(|d| f64::from(*d)),
        };
        let reading = |value: Option<f64>, sample: i64, license_type: Option<&str>| {
            let target = target_for(license_type);
            Reading {
                value,
                target,
                status: Rag::of(indicator, value, target),
                sample: u64::try_from(sample).unwrap_or(0),
            }
        };
        let mut overall = reading(None, 0, filters.license_type.as_deref());
        let mut rows_by_key = BTreeMap::new();
        for (key, value, sample) in rows {
            match key {
                None => overall = reading(value, sample, filters.license_type.as_deref()),
                Some(key) => {
                    let lt = if breakdown == Some(Dimension::LicenseType) {
                        Some(key.as_str())
                    } else {
                        filters.license_type.as_deref()
                    };
                    let r = reading(value, sample, lt);
                    rows_by_key.insert(key, r);
                }
            }
        }
        Ok(Measured {
            period,
            overall,
            breakdown: rows_by_key.into_iter().collect(),
        })
    }

    /// Every indicator of a municipality, or every partner indicator of a
    /// partner, in catalogue order.
    pub async fn scorecard(
        &self,
        subject: &Subject,
        period: Period,
    ) -> Result<Vec<Scored>, KpiError> {
        let (dimension, filters) = match subject {
            Subject::Municipality(m) => (
                Dimension::Municipality,
                Filters {
                    municipality: Some(m.clone()),
                    ..Filters::default()
                },
            ),
            Subject::Partner(p) => (
                Dimension::Partner,
                Filters {
                    partner: Some(p.clone()),
                    ..Filters::default()
                },
            ),
        };
        let indicators: Vec<&'static Indicator> = self
            .catalogue
            .indicators()
            .iter()
            .filter(|indicator| indicator.dimensions.contains(&dimension))
            .collect();
        // Plain indicators share one read of each fact kind they measure
        // (the medians and percentiles of a kind come out of the same sort);
        // the others are measured one by one.
        let mut needs: BTreeMap<&'static str, (Fact, KindNeeds)> = BTreeMap::new();
        for indicator in indicators.iter().filter(|i| is_plain(i)) {
            for fact in indicator.measure.facts() {
                let (_, need) = needs
                    .entry(fact.as_str())
                    .or_insert((fact, KindNeeds::default()));
                match indicator.measure {
                    Measure::Median { .. } => need.median = true,
                    Measure::Percentile { q, .. } => need.quantiles.push(q),
                    _ => {}
                }
            }
        }
        // The indicators measured alone are the slower reads: they start
        // first, so the scorecard does not wait on one of them at the end.
        let mut jobs: Vec<BoxFuture<'_, Result<Part, KpiError>>> = Vec::new();
        for (at, indicator) in indicators.iter().enumerate() {
            if is_plain(indicator) {
                continue;
            }
            // Per-license-type targets read best one license type at a time.
            let breakdown =
                matches!(indicator.target, Some(Target::From(_))).then_some(Dimension::LicenseType);
            let filters = filters.clone();
            jobs.push(Box::pin(async move {
                let measured = self.measure(indicator, &filters, period, breakdown).await?;
                Ok(Part::Indicator(at, measured))
            }));
        }
        for (fact, need) in needs.into_values() {
            let filters = filters.clone();
            jobs.push(Box::pin(async move {
                let stats = self.kind_stats(fact, &need, &filters, period).await?;
                Ok(Part::Kind(fact.as_str(), stats))
            }));
        }
        // A few reads at a time, each on its own connection: the database
        // works on one while the next one's rows travel.
        let parts: Vec<Part> = futures::stream::iter(jobs)
            .buffer_unordered(SCORECARD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut stats = BTreeMap::new();
        let mut measured = BTreeMap::new();
        for part in parts {
            match part {
                Part::Kind(kind, s) => {
                    stats.insert(kind, s);
                }
                Part::Indicator(at, m) => {
                    measured.insert(at, m);
                }
            }
        }
        let mut out = Vec::with_capacity(indicators.len());
        for (at, indicator) in indicators.into_iter().enumerate() {
            let m = if is_plain(indicator) {
                Measured {
                    period,
                    overall: plain_reading(indicator, &stats),
                    breakdown: Vec::new(),
                }
            } else {
                measured
                    .remove(&at)
                    .ok_or_else(|| KpiError::NotMeasured(indicator.code.clone()))?
            };
            out.push((indicator, filters.clone(), m));
        }
        Ok(out)
    }

    /// The count, mean, and asked-for median and percentiles of the facts of
    /// `fact` in `period` under `filters`.
    async fn kind_stats(
        &self,
        fact: Fact,
        need: &KindNeeds,
        filters: &Filters,
        period: Period,
    ) -> Result<KindStats, KpiError> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT count(*) AS n, avg(value) AS mean, ");
        if need.median {
            q.push("percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS median, ");
        } else {
            q.push("NULL::float8 AS median, ");
        }
        if need.quantiles.is_empty() {
            q.push("NULL::float8[] AS quantiles");
        } else {
            q.push("percentile_disc(");
            q.push_bind(need.quantiles.clone());
            q.push("::float8[]) WITHIN GROUP (ORDER BY value) AS quantiles");
        }
        q.push(" FROM facts_view f WHERE kind = ");
        q.push_bind(fact.as_str());
        push_period(&mut q, period.start(), period.end());
        push_dimension_filters(&mut q, filters);
        let row = q.build().fetch_one(&self.pool).await?;
        let quantiles: Option<Vec<f64>> = row.try_get("quantiles")?;
        Ok(KindStats {
            count: row.try_get("n")?,
            mean: row.try_get("mean")?,
            median: row.try_get("median")?,
            quantiles: need
                .quantiles
                .iter()
                .copied()
                .zip(quantiles.unwrap_or_default())
                .collect(),
        })
    }

    /// `indicator` over consecutive periods.
    pub async fn series(
        &self,
        indicator: &Indicator,
        filters: &Filters,
        periods: &[Period],
    ) -> Result<Vec<Measured>, KpiError> {
        let mut out = Vec::with_capacity(periods.len());
        for p in periods {
            out.push(self.measure(indicator, filters, *p, None).await?);
        }
        Ok(out)
    }

    async fn license_targets(
        &self,
        indicator: &Indicator,
    ) -> Result<BTreeMap<String, i32>, KpiError> {
        if !matches!(indicator.target, Some(Target::From(_))) {
            return Ok(BTreeMap::new());
        }
        let rows: Vec<(String, i32)> =
            sqlx::query_as("SELECT license_type, target_days FROM license_type_targets")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    async fn aggregate(
        &self,
        indicator: &Indicator,
        filters: &Filters,
        period: Period,
        breakdown: Option<Dimension>,
    ) -> Result<Vec<Row3>, KpiError> {
        let (start, end) = (period.start(), period.end());
        // Without a breakdown a plain aggregate gives one row, even over no facts.
        let (key, group) = match breakdown {
            Some(d) => {
                let c = column(d);
                (
                    format!("CASE WHEN GROUPING({c}) = 1 THEN NULL ELSE {c} END"),
                    format!(" GROUP BY GROUPING SETS ((), ({c}))"),
                )
            }
            None => ("NULL::text".to_string(), String::new()),
        };
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new("");
        match indicator.measure {
            Measure::Backlog { status, overdue } => {
                // The open states in force at the last instant of the period
                // (a state holds over [occurred_at, until)), read through
                // `states_open`: only the cases open then, whatever
                // the size of the history. A state carries the assignee of
                // its instant, so a partner is filtered on it too.
                let at = end - chrono::Duration::microseconds(1);
                q.push(format!(
                    "SELECT {key} AS key, count(*)::float8 AS value, count(*) AS sample
                       FROM states f
                      WHERE value = 1 AND kind = "
                ));
                q.push_bind(status.as_str());
                q.push(" AND tstzrange(occurred_at, until, '[)') @> ");
                q.push_bind(at);
                if let Some(overdue) = overdue {
                    q.push(
                        " AND EXISTS (SELECT 1 FROM states o WHERE o.subject = f.subject AND o.value = 1 AND o.kind = ",
                    );
                    q.push_bind(overdue.as_str());
                    q.push(" AND tstzrange(o.occurred_at, o.until, '[)') @> ");
                    q.push_bind(at);
                    q.push(")");
                }
                push_filters(&mut q, indicator, filters);
            }
            Measure::Growth { fact } => {
                let earlier = period.year_earlier();
                q.push(format!(
                    "SELECT {key} AS key,
                            (count(*) FILTER (WHERE occurred_at >= "
                ));
                q.push_bind(start);
                q.push(")::float8 - count(*) FILTER (WHERE occurred_at < ");
                q.push_bind(earlier.end());
                q.push(")) / NULLIF(count(*) FILTER (WHERE occurred_at < ");
                q.push_bind(earlier.end());
                q.push("), 0) AS value, count(*) FILTER (WHERE occurred_at >= ");
                q.push_bind(start);
                q.push(") AS sample FROM facts_view f WHERE kind = ");
                q.push_bind(fact.as_str());
                q.push(" AND ((occurred_at >= ");
                q.push_bind(start);
                q.push(" AND occurred_at < ");
                q.push_bind(end);
                q.push(") OR (occurred_at >= ");
                q.push_bind(earlier.start());
                q.push(" AND occurred_at < ");
                q.push_bind(earlier.end());
                q.push("))");
                push_filters(&mut q, indicator, filters);
            }
            measure => {
                q.push(format!("SELECT {key} AS key, "));
                let kinds: Vec<&str> = measure.facts().iter().map(|f| f.as_str()).collect();
                match measure {
                    Measure::Count { .. } => {
                        q.push("count(*)::float8 AS value, count(*) AS sample");
                    }
                    Measure::Share { .. } | Measure::Mean { .. } => {
                        q.push("avg(value) AS value, count(*) AS sample");
                    }
                    Measure::Median { .. } => {
                        q.push(
                            "percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS value, count(*) AS sample",
                        );
                    }
                    Measure::Percentile { q: rank, .. } => {
                        q.push("percentile_disc(");
                        q.push_bind(rank);
                        q.push(") WITHIN GROUP (ORDER BY value) AS value, count(*) AS sample");
                    }
                    Measure::Ratio {
                        numerator,
                        denominator,
                    } => {
                        q.push("count(*) FILTER (WHERE kind = ");
                        q.push_bind(numerator.as_str());
                        q.push(")::float8 / NULLIF(count(*) FILTER (WHERE kind = ");
                        q.push_bind(denominator.as_str());
                        q.push("), 0) AS value, count(*) FILTER (WHERE kind = ");
                        q.push_bind(denominator.as_str());
                        q.push(") AS sample");
                    }
                    Measure::Backlog { .. } | Measure::Growth { .. } => {
                        unreachable!("handled above")
                    }
                }
                q.push(" FROM facts_view f WHERE kind = ANY(");
                q.push_bind(kinds);
                q.push(")");
                push_period(&mut q, start, end);
                push_filters(&mut q, indicator, filters);
            }
        }
        q.push(group);
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<Option<String>, _>("key")?,
                    r.try_get::<Option<f64>, _>("value")?,
                    r.try_get::<i64, _>("sample")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?)
    }
}

/// The filter, license type and subject conditions every measure shares.
fn push_filters(q: &mut QueryBuilder<Postgres>, indicator: &Indicator, filters: &Filters) {
    push_dimension_filters(q, filters);
    if !indicator.license_types.is_empty() {
        q.push(" AND license_type = ANY(");
        q.push_bind(indicator.license_types.clone());
        q.push(")");
    }
    if let Some(other) = indicator.only_subjects_with {
        // The kind is written into the statement, not bound: a partial index
        // on one kind's subjects (facts_license_issued_subjects) serves only
        // a plan that knows the kind. It is the name of a `Fact`, never input.
        q.push(format!(
            " AND EXISTS (SELECT 1 FROM facts g WHERE g.subject = f.subject AND g.kind = '{}')",
            other.as_str()
        ));
    }
}

/// Facts from `start` up to, not including, `end`.
fn push_period(q: &mut QueryBuilder<Postgres>, start: DateTime<Utc>, end: DateTime<Utc>) {
    q.push(" AND occurred_at >= ");
    q.push_bind(start);
    q.push(" AND occurred_at < ");
    q.push_bind(end);
}

/// A condition per set filter.
fn push_dimension_filters(q: &mut QueryBuilder<Postgres>, filters: &Filters) {
    for (d, _, value) in filters.set() {
        q.push(format!(" AND {} = ", column(d)));
        q.push_bind(value);
    }
}

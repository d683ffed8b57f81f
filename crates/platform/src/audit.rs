//! The audit log: who changed what, through which RPC, when. Each service
//! keeps an append-only `audit_events` table in its own schema (a platform
//! migration), and every state-changing handler writes its row with
//! [`Audit::record`] inside the transaction of the change. Admins read the
//! logs through `baladiya.admin.v1.AuditService` ([`AuditAdmin`]).
//!
//! A row's `at` is when the change was recorded. A back-dated action (a
//! partner's acknowledgement synced minutes after it happened) is written
//! with [`Audit::record_action`], which notes when it happened beside it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tonic::Request;
use uuid::Uuid;

use crate::auth::{CallerIdentity, RpcMethod, caller};
use crate::error::{ApiError, Reply, Violations, reply};
use crate::paging::{PageTokens, page_size};

/// The caller and RPC of a state-changing request, taken before the request
/// is consumed.
#[derive(Debug, Clone)]
pub struct Audit {
    pub caller: CallerIdentity,
    pub rpc: String,
}

impl Audit {
    /// The audit context of `request` (which went through the interceptor).
    pub fn of<T>(request: &Request<T>) -> Result<Self, ApiError> {
        Ok(Self {
            caller: caller(request)?.clone(),
            rpc: request
                .extensions()
                .get::<RpcMethod>()
                .map(|m| m.0.clone())
                .unwrap_or_default(),
        })
    }

    /// Writes the audit row of this call on `target`, in the caller's
    /// transaction.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        at: DateTime<Utc>,
        target: &str,
    ) -> Result<(), ApiError> {
        self.record_action(conn, at, at, target).await
    }

    /// Writes the audit row of an action on `target` that was recorded at
    /// `recorded_at` and, as the caller says, happened at `occurred_at`; the
    /// row notes `occurred_at` only where it is earlier.
    pub async fn record_action(
        &self,
        conn: &mut PgConnection,
        recorded_at: DateTime<Utc>,
        occurred_at: DateTime<Utc>,
        target: &str,
    ) -> Result<(), ApiError> {
        let c = &self.caller;
        sqlx::query(
            "INSERT INTO audit_events (id, at, occurred_at, actor, role, partner, municipality, channel, rpc, target)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(Uuid::now_v7())
        .bind(recorded_at)
        .bind((occurred_at < recorded_at).then_some(occurred_at))
        .bind(&c.subject)
        .bind(c.role.to_string())
        .bind(c.partner.as_deref().unwrap_or_default())
        .bind(c.municipality.as_deref().unwrap_or_default())
        .bind(c.channel.as_deref().unwrap_or_default())
        .bind(&self.rpc)
        .bind(target)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// `baladiya.admin.v1.AuditService` over the services of this process.
#[derive(Debug)]
pub struct AuditAdmin {
    /// Service name to the pool pinned to its schema.
    pools: BTreeMap<String, PgPool>,
    tokens: PageTokens,
}

impl AuditAdmin {
    pub fn new(pools: BTreeMap<String, PgPool>, tokens: PageTokens) -> Self {
        Self { pools, tokens }
    }
}

type Row = (
    Uuid,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

#[tonic::async_trait]
impl baladiya_proto::admin::v1::audit_service_server::AuditService for AuditAdmin {
    async fn list_audit_events(
        &self,
        request: Request<baladiya_proto::admin::v1::ListAuditEventsRequest>,
    ) -> Reply<baladiya_proto::admin::v1::ListAuditEventsResponse> {
        reply(self.audit_events(request).await)
    }
}

/// The RPCs' work, in the crate's error type; the trait above converts each
/// outcome once.
impl AuditAdmin {
    async fn audit_events(
        &self,
        request: Request<baladiya_proto::admin::v1::ListAuditEventsRequest>,
    ) -> Result<baladiya_proto::admin::v1::ListAuditEventsResponse, ApiError> {
        use baladiya_proto::admin::v1 as pb;
        caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let pool = self.pools.get(req.service.trim());
        if pool.is_none() {
            v.add(
                "service",
                format!(
                    "must be one of the services this process runs: {}",
                    self.pools.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        let rpc = req.rpc.trim();
        let filters = format!(
            "{}|{}|{}|{}",
            req.service.trim(),
            req.actor,
            req.target,
            rpc
        );
        let after = v
            .absorb(self.tokens.keyset(&req.page_token, &filters))
            .flatten();
        let limit = v.absorb(page_size(req.page_size));
        v.finish()?;
        let (Some(pool), Some(limit)) = (pool, limit) else {
            return Err(ApiError::internal(&"checked request lost a field"));
        };
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, at, occurred_at, actor, role, partner, municipality, channel, rpc, target
               FROM audit_events
              WHERE ($1 = '' OR actor = $1)
                AND ($2 = '' OR target = $2)
                AND ($3 = '' OR rpc = $3 OR rpc LIKE '%/' || $3)
                AND ($4::timestamptz IS NULL OR (at, id) < ($4, $5))
              ORDER BY at DESC, id DESC
              LIMIT $6",
        )
        .bind(req.actor.trim())
        .bind(req.target.trim())
        .bind(rpc)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
        let (rows, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &filters, |r| (r.1, r.0));
        Ok(pb::ListAuditEventsResponse {
            events: rows
                .into_iter()
                .map(
                    |(
                        id,
                        at,
                        occurred_at,
                        actor,
                        role,
                        partner,
                        municipality,
                        channel,
                        rpc,
                        target,
                    )| {
                        pb::AuditEvent {
                            id: id.to_string(),
                            at: Some(baladiya_proto::convert::timestamp(at)),
                            occurred_at: occurred_at.map(baladiya_proto::convert::timestamp),
                            actor,
                            role,
                            partner_code: partner,
                            municipality_code: municipality,
                            channel,
                            rpc,
                            target,
                        }
                    },
                )
                .collect(),
            next_page_token,
        })
    }
}

/// The RPCs' work, in the crate's error type; the trait above converts each
/// outcome once.
impl AuditAdmin {}

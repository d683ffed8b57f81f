//! How the adapter reaches intake: the identities its calls carry (a
//! client's channel identity to submit, the read identity for the feed), the
//! transport (in-process when intake runs here, else a gRPC channel, always
//! with a deadline) and the intake calls the routes make.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use baladiya_platform::app::ServiceContext;
use baladiya_platform::auth::{DevTokenRequest, Role, mint_dev_token};
use baladiya_platform::clock::Clock;
use baladiya_platform::config::{AuthConfig, AuthMode};
use baladiya_platform::grpc::{LocalCalls, Mounted};
use baladiya_proto::intake::v1 as pb;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

use crate::Open311Config;
use crate::error::{Call, Open311Error};
use crate::georeport;
use crate::wire::{Doc, ErrorItem};

/// The service the facade adapts.
const INTAKE: &str = "baladiya.intake.v1.IntakeService";

/// How long a dev-minted token lives; one is minted per call.
const MINTED_TTL_MINUTES: i64 = 10;

/// Whose bearer token a call carries.
#[derive(Clone)]
enum Identity {
    /// Issued by the identity provider, from configuration.
    Token(String),
    /// Minted from the dev secret (only in `auth.mode = "dev"`).
    Minted {
        auth: Box<AuthConfig>,
        channel: String,
        subject: String,
    },
}

impl Identity {
    fn of(token: &str, auth: &AuthConfig, channel: &str, subject: &str) -> Result<Self, String> {
        if !token.is_empty() {
            Ok(Self::Token(token.to_string()))
        } else if auth.mode == AuthMode::Dev {
            Ok(Self::Minted {
                auth: Box::new(auth.clone()),
                channel: channel.to_string(),
                subject: subject.to_string(),
            })
        } else {
            Err("a token is required unless auth.mode = \"dev\"".into())
        }
    }

    fn bearer(&self) -> Result<String, Open311Error> {
        match self {
            Self::Token(t) => Ok(t.clone()),
            Self::Minted {
                auth,
                channel,
                subject,
            } => mint_dev_token(
                auth,
                &DevTokenRequest {
                    subject: subject.clone(),
                    role: Role::Channel,
                    partner: None,
                    municipality: None,
                    channel: Some(channel.clone()),
                    ttl: chrono::Duration::minutes(MINTED_TTL_MINUTES),
                },
            )
            .map_err(|e| {
                tracing::error!(error = %e, "open311: cannot mint a dev token");
                Open311Error::internal()
            }),
        }
    }
}

/// A configured client: the digest of its key, its channel and identity.
pub(crate) struct Client {
    pub(crate) name: String,
    key_digest: [u8; 32],
    pub(crate) channel: pb::Channel,
    identity: Identity,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// How the facade reaches intake: in-process when intake runs here (no
/// network, no TLS), else over a plaintext gRPC channel.
#[derive(Clone)]
enum Transport {
    Local {
        calls: LocalCalls,
        timeout: Duration,
    },
    Remote(Channel),
}

impl tower::Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::codegen::StdError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        match self {
            Self::Local { calls, .. } => calls.poll_ready(cx).map_err(|never| match never {}),
            Self::Remote(channel) => channel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        match self {
            Self::Local { calls, timeout } => {
                let call = calls.call(request);
                let timeout = *timeout;
                Box::pin(async move {
                    match tokio::time::timeout(timeout, call).await {
                        Ok(Ok(response)) => Ok(response),
                        Ok(Err(never)) => match never {},
                        Err(_) => Err(tonic::Status::deadline_exceeded(
                            "intake did not answer in time",
                        )
                        .into()),
                    }
                })
            }
            Self::Remote(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
        }
    }
}

/// The facade's state.
#[derive(Clone)]
pub struct Facade(Arc<Inner>);

struct Inner {
    intake: IntakeServiceClient<Transport>,
    reader: Identity,
    clients: Vec<Client>,
    clock: Clock,
    timeout: Duration,
    public_url: String,
    contact: String,
    key_service: String,
    /// Discovery's `changeset`: when this configuration came into force.
    started: DateTime<Utc>,
}

impl Facade {
    /// The facade for a validated `[open311]` section, over the intake
    /// service `mounted` in this process or at `open311.grpc_endpoint`; the
    /// error names the key.
    pub fn new(
        ctx: &ServiceContext,
        config: &Open311Config,
        mounted: &Mounted,
    ) -> Result<Self, String> {
        let timeout = Duration::from_millis(config.call_timeout_ms);
        let transport = if !config.grpc_endpoint.is_empty() {
            Transport::Remote(
                Endpoint::from_shared(config.grpc_endpoint.clone())
                    .map_err(|e| format!("open311.grpc_endpoint: {e}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .connect_lazy(),
            )
        } else if mounted.has(INTAKE) {
            Transport::Local {
                calls: mounted.local_calls(),
                timeout,
            }
        } else {
            return Err("open311.grpc_endpoint: intake does not run in this process; run them together (--services intake,open311) or set the endpoint of a process that runs intake".into());
        };
        let auth = &ctx.config.auth;
        let reader = Identity::of(
            config.read_token.expose(),
            auth,
            "CHANNEL_OPEN311",
            "open311-feed",
        )
        .map_err(|e| format!("open311.read_token: {e}"))?;
        let clients = config
            .clients
            .iter()
            .map(|(name, c)| {
                Ok(Client {
                    name: name.clone(),
                    key_digest: digest(c.api_key.expose()),
                    channel: pb::Channel::from_str_name(&c.channel)
                        .ok_or(format!("open311.clients.{name}.channel: not a channel"))?,
                    identity: Identity::of(
                        c.token.expose(),
                        auth,
                        &c.channel,
                        &format!("open311-{name}"),
                    )
                    .map_err(|e| format!("open311.clients.{name}.token: {e}"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self(Arc::new(Inner {
            intake: IntakeServiceClient::new(transport),
            reader,
            clients,
            clock: ctx.clock.clone(),
            timeout,
            public_url: config.public_url.trim_end_matches('/').to_string(),
            contact: config.contact.clone(),
            key_service: config.key_service.clone(),
            started: ctx.clock.now(),
        })))
    }

    fn request<T>(
        &self,
        message: T,
        identity: &Identity,
    ) -> Result<tonic::Request<T>, Open311Error> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", identity.bearer()?);
        request.metadata_mut().insert(
            "authorization",
            bearer.parse().map_err(|_| Open311Error::internal())?,
        );
        request.set_timeout(self.0.timeout);
        Ok(request)
    }

    pub(crate) async fn categories(&self) -> Result<Vec<pb::Category>, Open311Error> {
        let request = self.request(
            pb::ListCategoriesRequest {
                include_inactive: true,
            },
            &self.0.reader,
        )?;
        let mut intake = self.0.intake.clone();
        Ok(intake
            .list_categories(request)
            .await
            .map_err(|s| Open311Error::from_status(&s, Call::Read))?
            .into_inner()
            .categories)
    }

    /// Refuses an unknown `jurisdiction_id` (404, as the specification
    /// asks) by asking intake for one report of that municipality.
    pub(crate) async fn check_jurisdiction(
        &self,
        args: &[(String, String)],
    ) -> Result<(), Open311Error> {
        let municipality_code = georeport::arg(args, "jurisdiction_id");
        if municipality_code.is_empty() {
            return Ok(());
        }
        let request = self.request(
            pb::ListReportsRequest {
                page_size: 1,
                municipality_code,
                ..Default::default()
            },
            &self.0.reader,
        )?;
        let mut intake = self.0.intake.clone();
        intake
            .list_reports(request)
            .await
            .map_err(|s| Open311Error::from_status(&s, Call::Read))?;
        Ok(())
    }

    /// A report by tracking number or id, as the feed may show it.
    pub(crate) async fn report(&self, key: &str) -> Result<Option<pb::Report>, Open311Error> {
        let key = match key.parse::<uuid::Uuid>() {
            Ok(id) => pb::get_report_request::Key::Id(id.to_string()),
            Err(_) => pb::get_report_request::Key::TrackingNumber(key.to_string()),
        };
        let request = self.request(pb::GetReportRequest { key: Some(key) }, &self.0.reader)?;
        let mut intake = self.0.intake.clone();
        match intake.get_report(request).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound
                        | tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                ) =>
            {
                Ok(None)
            }
            Err(s) => Err(Open311Error::from_status(&s, Call::Read)),
        }
    }

    pub(crate) async fn list(
        &self,
        mut filter: pb::ListReportsRequest,
    ) -> Result<Vec<pb::Report>, Open311Error> {
        let mut found = Vec::new();
        let mut intake = self.0.intake.clone();
        loop {
            let request = self.request(filter.clone(), &self.0.reader)?;
            let page = intake
                .list_reports(request)
                .await
                .map_err(|s| Open311Error::from_status(&s, Call::Read))?
                .into_inner();
            found.extend(page.reports);
            if found.len() >= georeport::MAX_REQUESTS || page.next_page_token.is_empty() {
                break;
            }
            filter.page_token = page.next_page_token;
        }
        found.truncate(georeport::MAX_REQUESTS);
        Ok(found)
    }

    /// The platform's clock, read now.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }

    /// Discovery, at the configured public URL or else the one the request
    /// came to (its `Host` and `X-Forwarded-Proto`).
    pub(crate) fn discovery(&self, headers: &HeaderMap) -> Doc {
        let url = if self.0.public_url.is_empty() {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            let scheme = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("http");
            format!("{scheme}://{host}/open311/v2")
        } else {
            self.0.public_url.clone()
        };
        georeport::discovery(&url, self.0.started, &self.0.contact, &self.0.key_service)
    }

    /// Submits a mapped form as `client`.
    pub(crate) async fn submit(
        &self,
        client: &Client,
        submit: pb::SubmitReportRequest,
    ) -> Result<pb::SubmitReportResponse, Open311Error> {
        let request = self.request(submit, &client.identity)?;
        let mut intake = self.0.intake.clone();
        Ok(intake
            .submit_report(request)
            .await
            .map_err(|s| Open311Error::from_status(&s, Call::Submit))?
            .into_inner())
    }

    pub(crate) fn client(&self, api_key: &str) -> Result<&Client, Open311Error> {
        if api_key.is_empty() {
            return Err(Open311Error::new(
                StatusCode::FORBIDDEN,
                vec![ErrorItem {
                    code: 403,
                    description: "api_key: is required to create a request".into(),
                }],
            ));
        }
        let wanted = digest(api_key);
        self.0
            .clients
            .iter()
            .find(|c| c.key_digest == wanted)
            .ok_or_else(|| {
                Open311Error::new(
                    StatusCode::FORBIDDEN,
                    vec![ErrorItem {
                        code: 403,
                        description: "api_key: is not valid; see discovery's key_service".into(),
                    }],
                )
            })
    }
}

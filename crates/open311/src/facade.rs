//! The HTTP handlers: each parses its arguments with [`crate::georeport`],
//! makes the intake gRPC calls as the right identity, and renders the answer
//! with [`crate::wire`] in the format the path's suffix names.
//!
//! gRPC outcomes become the specification's errors: a field violation names
//! the Open311 parameter (400, or 404 for an unknown `service_code` or
//! `jurisdiction_id`), a bad or missing `api_key` is 403, an unknown request
//! or token is 404 (also when the read identity may not see it, so the feed
//! does not reveal what exists), and a dependency that is down is 503 with
//! `Retry-After`, never a hang: every call carries a deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
use tonic_types::StatusExt;

use crate::Open311Config;
use crate::georeport::{self, Lang, Query, bad, not_found};
use crate::wire::{self, Doc, ErrorItem, Format};

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

    fn bearer(&self) -> Result<String, Failure> {
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
                Failure::internal()
            }),
        }
    }
}

/// A configured client: the digest of its key, its channel and identity.
struct Client {
    name: String,
    key_digest: [u8; 32],
    channel: pb::Channel,
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

    fn request<T>(&self, message: T, identity: &Identity) -> Result<tonic::Request<T>, Failure> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", identity.bearer()?);
        request.metadata_mut().insert(
            "authorization",
            bearer.parse().map_err(|_| Failure::internal())?,
        );
        request.set_timeout(self.0.timeout);
        Ok(request)
    }

    async fn categories(&self) -> Result<Vec<pb::Category>, Failure> {
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
            .map_err(|s| Failure::from_status(&s, Call::Read))?
            .into_inner()
            .categories)
    }

    /// Refuses an unknown `jurisdiction_id` (404, as the specification
    /// asks) by asking intake for one report of that municipality.
    async fn check_jurisdiction(&self, args: &[(String, String)]) -> Result<(), Failure> {
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
            .map_err(|s| Failure::from_status(&s, Call::Read))?;
        Ok(())
    }

    /// A report by tracking number or id, as the feed may show it.
    async fn report(&self, key: &str) -> Result<Option<pb::Report>, Failure> {
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
            Err(s) => Err(Failure::from_status(&s, Call::Read)),
        }
    }

    async fn list(&self, mut filter: pb::ListReportsRequest) -> Result<Vec<pb::Report>, Failure> {
        let mut found = Vec::new();
        let mut intake = self.0.intake.clone();
        loop {
            let request = self.request(filter.clone(), &self.0.reader)?;
            let page = intake
                .list_reports(request)
                .await
                .map_err(|s| Failure::from_status(&s, Call::Read))?
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

    fn client(&self, api_key: &str) -> Result<&Client, Failure> {
        if api_key.is_empty() {
            return Err(Failure::new(
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
                Failure::new(
                    StatusCode::FORBIDDEN,
                    vec![ErrorItem {
                        code: 403,
                        description: "api_key: is not valid; see discovery's key_service".into(),
                    }],
                )
            })
    }
}

/// Which kind of call failed, for the error it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Submit,
}

/// An error answer: the HTTP status and the specification's error items.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    items: Vec<ErrorItem>,
}

impl Failure {
    fn new(status: StatusCode, items: Vec<ErrorItem>) -> Self {
        Self { status, items }
    }

    /// 404 when any item is an unknown resource, else 400.
    fn invalid(items: Vec<ErrorItem>) -> Self {
        let status = if items.iter().any(|e| e.code == 404) {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        Self { status, items }
    }

    fn not_found(description: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, vec![not_found(description)])
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            vec![ErrorItem {
                code: 500,
                description: "the endpoint failed; the operators have the details".into(),
            }],
        )
    }

    fn from_status(status: &tonic::Status, call: Call) -> Self {
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument => {
                let details = status.get_details_bad_request();
                let items: Vec<ErrorItem> = details
                    .map(|d| d.field_violations)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| {
                        let (parameter, code) = georeport::parameter_of(&v.field, &v.description);
                        ErrorItem {
                            code,
                            description: format!("{parameter}: {}", v.description),
                        }
                    })
                    .collect();
                if items.is_empty() {
                    Self::invalid(vec![bad(format!("request: {}", status.message()))])
                } else {
                    Self::invalid(items)
                }
            }
            Code::NotFound => Self::not_found(format!("not found: {}", status.message())),
            Code::PermissionDenied | Code::Unauthenticated if call == Call::Submit => Self::new(
                StatusCode::FORBIDDEN,
                vec![ErrorItem {
                    code: 403,
                    description: format!(
                        "api_key: this client may not create requests ({})",
                        status.message()
                    ),
                }],
            ),
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                vec![ErrorItem {
                    code: 503,
                    description: "the service is unavailable for a moment; try again".into(),
                }],
            ),
            _ => {
                tracing::error!(code = ?status.code(), message = status.message(), "open311: intake call failed");
                Self::internal()
            }
        }
    }

    fn render(self, format: Format) -> Response {
        let mut response = reply(format, self.status, &wire::errors(&self.items));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

fn reply(format: Format, status: StatusCode, doc: &Doc) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        doc.render(format),
    )
        .into_response()
}

/// The document with `status`, or the failure's errors, in `format`.
fn respond(format: Format, status: StatusCode, answer: Result<Doc, Failure>) -> Response {
    match answer {
        Ok(doc) => reply(format, status, &doc),
        Err(failure) => failure.render(format),
    }
}

/// The arguments of a query string or a form body, in order.
fn pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text).into_owned().collect()
}

/// The answer to a path without a `.json` or `.xml` suffix: 404, in JSON.
fn unknown_format(resource: &str) -> Response {
    Failure::not_found(format!(
        "{resource}: no such resource; add .json or .xml to the path"
    ))
    .render(Format::Json)
}

/// The facade's routes, under `/open311`.
pub fn router(facade: Facade) -> Router {
    Router::new()
        .route("/open311/{resource}", get(discovery))
        .route(
            "/open311/v2/{resource}",
            get(get_collection).post(post_requests),
        )
        .route("/open311/v2/services/{code}", get(get_service))
        .route("/open311/v2/requests/{id}", get(get_request))
        .route("/open311/v2/tokens/{token}", get(get_token))
        .with_state(facade)
}

fn lang(headers: &HeaderMap) -> Lang {
    Lang::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

async fn discovery(
    State(facade): State<Facade>,
    Path(resource): Path<String>,
    headers: HeaderMap,
) -> Response {
    match Format::split(&resource) {
        Some(("discovery", format)) => discovery_doc(&facade, format, &headers),
        Some((name, format)) => {
            Failure::not_found(format!("{name}: no such resource; see discovery")).render(format)
        }
        None => unknown_format(&resource),
    }
}

fn discovery_doc(facade: &Facade, format: Format, headers: &HeaderMap) -> Response {
    let url = if facade.0.public_url.is_empty() {
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
        facade.0.public_url.clone()
    };
    reply(
        format,
        StatusCode::OK,
        &georeport::discovery(
            &url,
            facade.0.started,
            &facade.0.contact,
            &facade.0.key_service,
        ),
    )
}

async fn get_collection(
    State(facade): State<Facade>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (name, format) = match Format::split(&resource) {
        Some(split) => split,
        None => return unknown_format(&resource),
    };
    let args = pairs(query.unwrap_or_default().as_bytes());
    let answer = match name {
        "services" => services(&facade, &args, lang(&headers)).await,
        "requests" => requests(&facade, &args, lang(&headers)).await,
        "discovery" => return discovery_doc(&facade, format, &headers),
        other => Err(Failure::not_found(format!(
            "{other}: no such resource; see discovery"
        ))),
    };
    respond(format, StatusCode::OK, answer)
}

async fn services(facade: &Facade, args: &[(String, String)], lang: Lang) -> Result<Doc, Failure> {
    facade.check_jurisdiction(args).await?;
    Ok(georeport::service_list(&facade.categories().await?, lang))
}

async fn requests(facade: &Facade, args: &[(String, String)], lang: Lang) -> Result<Doc, Failure> {
    let query = georeport::list_query(args, facade.0.clock.now()).map_err(Failure::invalid)?;
    let reports = match query {
        Query::Ids(ids) => {
            let mut found = Vec::new();
            for id in ids.iter().take(georeport::MAX_REQUESTS) {
                found.extend(facade.report(id).await?);
            }
            found
        }
        Query::Filter(filter) => facade.list(filter).await?,
    };
    let categories = facade.categories().await?;
    Ok(request_list(&reports, &categories, lang))
}

fn request_list(reports: &[pb::Report], categories: &[pb::Category], lang: Lang) -> Doc {
    let name_of = |code: &str| {
        categories
            .iter()
            .find(|c| c.code == code)
            .and_then(|c| c.name.as_ref())
            .map(|n| match lang {
                Lang::Arabic if !n.ar.is_empty() => n.ar.clone(),
                _ if !n.en.is_empty() => n.en.clone(),
                _ => n.ar.clone(),
            })
            .unwrap_or_default()
    };
    Doc::list(
        "service_requests",
        "request",
        reports
            .iter()
            .map(|r| georeport::request_record(r, &name_of(&r.category_code)))
            .collect(),
    )
}

async fn get_service(
    State(facade): State<Facade>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (code, format) = match Format::split(&resource) {
        Some(split) => split,
        None => return unknown_format(&resource),
    };
    let args = pairs(query.unwrap_or_default().as_bytes());
    let answer = async {
        facade.check_jurisdiction(&args).await?;
        let categories = facade.categories().await?;
        categories
            .iter()
            .find(|c| c.code == code && c.active)
            .map(georeport::service_definition)
            .ok_or_else(|| {
                Failure::not_found(format!(
                    "service_code: '{code}' is not a service here; see GET /services"
                ))
            })
    };
    respond(format, StatusCode::OK, answer.await)
}

async fn get_request(
    State(facade): State<Facade>,
    Path(resource): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (id, format) = match Format::split(&resource) {
        Some(split) => split,
        None => return unknown_format(&resource),
    };
    let answer = async {
        let report = facade.report(id).await?.ok_or_else(|| {
            Failure::not_found(format!("service_request_id: '{id}' is not a request here"))
        })?;
        let categories = facade.categories().await?;
        Ok::<_, Failure>(request_list(&[report], &categories, lang(&headers)))
    };
    respond(format, StatusCode::OK, answer.await)
}

async fn get_token(State(facade): State<Facade>, Path(resource): Path<String>) -> Response {
    let (token, format) = match Format::split(&resource) {
        Some(split) => split,
        None => return unknown_format(&resource),
    };
    let unknown = || Failure::not_found(format!("token: '{token}' is not a token here"));
    let answer = async {
        if token.parse::<uuid::Uuid>().is_err() {
            return Err(unknown());
        }
        let report = facade.report(token).await?.ok_or_else(unknown)?;
        Ok(georeport::token(&report, token))
    };
    respond(format, StatusCode::OK, answer.await)
}

async fn post_requests(
    State(facade): State<Facade>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let format = match Format::split(&resource) {
        Some(("requests", format)) => format,
        Some((name, format)) => {
            return Failure::not_found(format!("{name}: only requests can be created"))
                .render(format);
        }
        None => return unknown_format(&resource),
    };
    // The key may come in the form (as the specification says) or the query.
    let mut form = pairs(query.unwrap_or_default().as_bytes());
    form.extend(pairs(&body));
    let api_key = georeport::arg(&form, "api_key");
    let answer = async {
        let client = facade.client(&api_key)?;
        let new = georeport::new_request(&form, &client.name, client.channel)
            .map_err(Failure::invalid)?;
        let request = facade.request(new.submit.clone(), &client.identity)?;
        let mut intake = facade.0.intake.clone();
        let response = intake
            .submit_report(request)
            .await
            .map_err(|s| Failure::from_status(&s, Call::Submit))?
            .into_inner();
        let report = response.report.ok_or_else(Failure::internal)?;
        Ok::<_, Failure>(georeport::created(
            &report,
            &new,
            response.linked_as_duplicate,
        ))
    };
    respond(format, StatusCode::CREATED, answer.await)
}

//! The gRPC port: every mounted service, `grpc.health.v1`, server reflection
//! (v1 and v1alpha, because older grpcurl speaks only v1alpha), request limits,
//! deadlines, RED metrics and trace context, and a graceful drain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Layer, Service};

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The health-service name Kubernetes readiness probes ask for.
pub const READINESS: &str = "readiness";

/// The services to put on the port, with their full proto names.
#[derive(Default)]
pub struct Mounted {
    routes: tonic::service::RoutesBuilder,
    names: Vec<&'static str>,
    descriptors: Vec<&'static [u8]>,
    http: Vec<axum::Router>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("names", &self.names)
            .finish()
    }
}

/// Services of this process called without a network hop (an adapter
/// calling a service beside it: no TLS, no serialisation to a socket). Each
/// call goes through the service's auth interceptor and policy check exactly
/// as one from the gRPC port does.
#[derive(Debug, Clone)]
pub struct LocalCalls(tonic::service::Routes);

impl Service<http::Request<tonic::body::Body>> for LocalCalls {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = <tonic::service::Routes as Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // What the port's layer does for every call: name the method for
        // the policy check.
        let path = request.uri().path().to_string();
        request
            .extensions_mut()
            .insert(crate::auth::RpcMethod(path));
        self.0.call(request)
    }
}

impl Mounted {
    /// Adds a service; `S::NAME` is its full proto name.
    pub fn add<S>(&mut self, service: S)
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
    }

    /// Whether the service named `name` (its full proto name) is mounted.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(&name)
    }

    /// The services mounted so far, callable in-process.
    pub fn local_calls(&self) -> LocalCalls {
        LocalCalls(self.routes.clone().routes())
    }

    /// Registers an encoded descriptor set for reflection, for services whose
    /// protos are not in `baladiya-proto`.
    pub fn add_descriptors(&mut self, encoded: &'static [u8]) {
        self.descriptors.push(encoded);
    }

    /// Adds routes to the HTTP port (a dashboard, a facade); each service
    /// owns its own paths.
    pub fn add_routes(&mut self, router: axum::Router) {
        self.http.push(router);
    }

    /// Takes the HTTP routes the services added.
    pub fn take_routes(&mut self) -> Vec<axum::Router> {
        std::mem::take(&mut self.http)
    }

    /// Full proto names of the mounted services.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// The reflection services (v1 and v1alpha). They advertise exactly the
/// mounted services plus health and reflection, and know Baladiya's, health's
/// and `google.rpc`'s descriptors so grpcurl can decode error details.
fn reflection(
    mounted: &Mounted,
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(baladiya_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
        for set in &mounted.descriptors {
            b = b.register_encoded_file_descriptor_set(set);
        }
        for name in mounted.names.iter().chain(ALWAYS_MOUNTED) {
            b = b.with_service_name(*name);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Services every process serves whatever `--services` says.
pub const ALWAYS_MOUNTED: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Sets every mounted service (and the whole server, `""`) to `status`.
pub async fn set_status(health: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in names {
        health.set_service_status(*name, status).await;
    }
}

/// Serves `mounted` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for in-flight requests.
pub async fn serve(
    config: &ServerConfig,
    mounted: Mounted,
    health: (
        HealthReporter,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ),
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health_service) = health;
    set_status(&reporter, &mounted.names, ServingStatus::Serving).await;
    let (reflection_v1, reflection_v1alpha) = match reflection(&mounted) {
        Ok(r) => r,
        Err(e) => {
            // The descriptor set is compiled in; failing here is a build bug.
            tracing::error!(error = %e, "reflection descriptors are invalid");
            return Ok(());
        }
    };
    let mut routes = mounted.routes;
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let router = Server::builder()
        .timeout(config.request_timeout())
        .concurrency_limit_per_connection(config.max_concurrent_requests_per_connection)
        .http2_max_pending_accept_reset_streams(Some(64))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .max_connection_age(Duration::from_secs(30 * 60))
        .trace_fn(crate::telemetry::grpc_request_span)
        .layer(RpcMetricsLayer { metrics })
        .add_routes(routes.routes());
    if let Some(acceptor) = tls {
        router
            .serve_with_incoming_shutdown(crate::tls::incoming(listener, acceptor), shutdown)
            .await
    } else {
        router
            .serve_with_incoming_shutdown(nodelay(listener), shutdown)
            .await
    }
}

/// The connections `listener` accepts, with Nagle off: tonic sets
/// `TCP_NODELAY` only on sockets it accepts itself, and a reply of more than
/// one segment (a scorecard, a page of reports) would otherwise wait for the
/// caller's delayed ACK, 40 ms, before its last segment leaves.
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|tcp| {
            tcp.set_nodelay(true).ok();
        })
    })
}

/// Records RED metrics for every RPC, and tells the auth interceptor which
/// RPC a request calls.
#[derive(Debug, Clone)]
struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        // The auth interceptor checks the policy row of this path.
        request
            .extensions_mut()
            .insert(crate::auth::RpcMethod(path.clone()));
        let started = Instant::now();
        let future = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = future.await;
            let (service, method) = path
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or((path.as_str(), ""));
            // Errors from handlers come as trailers-only responses, so the code
            // is in the headers; a response without one is OK so far.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(tonic::Code::from_i32)
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.record_rpc(service, method, &format!("{code:?}"), started.elapsed());
            result
        })
    }
}

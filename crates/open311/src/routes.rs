//! The HTTP side of the adapter: the routes under `/open311`, each parsing
//! its arguments with [`crate::georeport`], making its intake calls through
//! the [`Facade`] and rendering the answer (or the [`Open311Error`]) with
//! [`crate::wire`] in the format the path's suffix names.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use baladiya_proto::intake::v1 as pb;

use crate::error::Open311Error;
use crate::facade::Facade;
use crate::georeport::{self, Lang, Query};
use crate::wire::{Doc, Format};

/// `doc` with `status`, in `format`.
pub(crate) fn reply(format: Format, status: StatusCode, doc: &Doc) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        doc.render(format),
    )
        .into_response()
}

/// The document with `status`, or the error document, in `format`.
fn respond(format: Format, status: StatusCode, answer: Result<Doc, Open311Error>) -> Response {
    match answer {
        Ok(doc) => reply(format, status, &doc),
        Err(error) => error.render(format),
    }
}

/// The arguments of a query string or a form body, in order.
fn pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text).into_owned().collect()
}

/// The answer to a path without a `.json` or `.xml` suffix: 404, in JSON.
fn unknown_format(resource: &str) -> Response {
    Open311Error::not_found(format!(
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
            Open311Error::not_found(format!("{name}: no such resource; see discovery"))
                .render(format)
        }
        None => unknown_format(&resource),
    }
}

fn discovery_doc(facade: &Facade, format: Format, headers: &HeaderMap) -> Response {
    reply(format, StatusCode::OK, &facade.discovery(headers))
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
        other => Err(Open311Error::not_found(format!(
            "{other}: no such resource; see discovery"
        ))),
    };
    respond(format, StatusCode::OK, answer)
}

async fn services(
    facade: &Facade,
    args: &[(String, String)],
    lang: Lang,
) -> Result<Doc, Open311Error> {
    facade.check_jurisdiction(args).await?;
    Ok(georeport::service_list(&facade.categories().await?, lang))
}

async fn requests(
    facade: &Facade,
    args: &[(String, String)],
    lang: Lang,
) -> Result<Doc, Open311Error> {
    let query = georeport::list_query(args, facade.now()).map_err(Open311Error::invalid)?;
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
                Open311Error::not_found(format!(
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
            Open311Error::not_found(format!("service_request_id: '{id}' is not a request here"))
        })?;
        let categories = facade.categories().await?;
        Ok::<_, Open311Error>(request_list(&[report], &categories, lang(&headers)))
    };
    respond(format, StatusCode::OK, answer.await)
}

async fn get_token(State(facade): State<Facade>, Path(resource): Path<String>) -> Response {
    let (token, format) = match Format::split(&resource) {
        Some(split) => split,
        None => return unknown_format(&resource),
    };
    let unknown = || Open311Error::not_found(format!("token: '{token}' is not a token here"));
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
            return Open311Error::not_found(format!("{name}: only requests can be created"))
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
            .map_err(Open311Error::invalid)?;
        let response = facade.submit(client, new.submit.clone()).await?;
        let report = response.report.ok_or_else(Open311Error::internal)?;
        Ok::<_, Open311Error>(georeport::created(
            &report,
            &new,
            response.linked_as_duplicate,
        ))
    };
    respond(format, StatusCode::CREATED, answer.await)
}

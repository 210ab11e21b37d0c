//! The HTTP side: routes of [`nexus_sync_protocol::routes`], errors as
//! [`nexus_sync_protocol::ErrorBody`], health and metrics, and serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::serve::{IncomingStream, Listener, ListenerExt as _};
use nexus_sync_protocol::{
    BlobKind, DocId, Entry, ErrorBody, ErrorCode, MAX_ENTRIES_PER_MESSAGE, MAX_FRAME_BYTES,
    SpaceId, Token, http, routes, token_hash,
};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::hub::{Event, Hub, INLINE_MAX_BYTES};
use crate::limits::{Limits, TokenLimiter};
use crate::metrics::Metrics;
use crate::storage::{Created, NewGrant, Principal, RemoteEvent, Storage, StorageError};

/// Blob bytes per entries page or message beyond its first entry (a maximal snapshot still
/// travels alone, and a message stays well under [`MAX_FRAME_BYTES`]).
pub const PAGE_BYTES: usize = 8 << 20;

/// Everything a request needs.
#[derive(Debug)]
pub struct App<S> {
    /// The database.
    pub storage: S,
    /// Live sessions per space.
    pub hub: Hub,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Rate limits.
    pub limits: Limits,
    /// Per-token buckets.
    pub tokens: TokenLimiter,
}

impl<S: Storage> App<S> {
    /// An app over `storage`.
    pub fn new(storage: S, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            storage,
            hub: Hub::default(),
            metrics: Metrics::default(),
            limits,
            tokens: TokenLimiter::default(),
        })
    }

    /// Stores a change (after access and rate checks) and fans it out; the returned sequence
    /// number is durable.
    pub(crate) async fn push(
        &self,
        space: &SpaceId,
        principal: &Principal,
        hash: &str,
        doc: &DocId,
        covers: Option<u64>,
        blob: nexus_sync_protocol::Blob,
    ) -> Result<u64, ApiError> {
        let at = Instant::now();
        let kind = if covers.is_some() {
            BlobKind::Snapshot
        } else {
            BlobKind::Change
        };
        kind.check(&blob)
            .map_err(|e| ApiError::new(ErrorCode::TooLarge, e.to_string()))?;
        if !principal.can_write(doc) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this token may not write this document",
            ));
        }
        if !self.tokens.allow(&self.limits, hash, blob.0.len()) {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many writes for this token; retry later",
            ));
        }
        let seq = match covers {
            Some(covers) => self.storage.snapshot(space, doc, covers, &blob.0).await?,
            None => self.storage.append(space, doc, &blob.0).await?,
        };
        let counter = if kind == BlobKind::Snapshot {
            &self.metrics.snapshots
        } else {
            &self.metrics.pushes
        };
        counter.fetch_add(1, Relaxed);
        self.metrics.acks.fetch_add(1, Relaxed);
        self.metrics
            .bytes_in
            .fetch_add(blob.0.len() as u64, Relaxed);
        tracing::debug!(%space, %doc, seq, bytes = blob.0.len(), ?kind, "stored");
        self.hub.publish(
            space,
            Event::Entry {
                doc: doc.clone(),
                seq,
                entry: (blob.0.len() <= INLINE_MAX_BYTES).then(|| {
                    Arc::new(Entry {
                        seq,
                        kind,
                        covers,
                        blob,
                    })
                }),
                at: Some(at),
            },
        );
        Ok(seq)
    }

    /// Deletes a document and its entries (space token only; rate limited like a write).
    pub(crate) async fn delete_doc(
        &self,
        space: &SpaceId,
        principal: &Principal,
        hash: &str,
        doc: &DocId,
    ) -> Result<(), ApiError> {
        owner_only(principal)?;
        if !self.tokens.allow(&self.limits, hash, 0) {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many writes for this token; retry later",
            ));
        }
        let had = self.storage.delete_doc(space, doc).await?;
        self.metrics.docs_deleted.fetch_add(1, Relaxed);
        tracing::info!(%space, %doc, had_entries = had, "document deleted");
        Ok(())
    }
}

/// A failed request: protocol error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Machine-readable.
    pub code: ErrorCode,
    /// For people (never contains tokens or blobs).
    pub message: String,
}

impl ApiError {
    /// An error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "unknown space or token")
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        let code = match &e {
            StorageError::NotFound => ErrorCode::NotFound,
            StorageError::Conflict(_) => ErrorCode::Conflict,
            StorageError::Invalid(_) => ErrorCode::BadRequest,
            StorageError::Gone => ErrorCode::Gone,
            StorageError::Unavailable(_) => {
                tracing::error!(error = %e, "storage failed");
                ErrorCode::Unavailable
            }
        };
        Self::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&ErrorBody {
            code: self.code,
            message: self.message,
        })
        .unwrap_or_default();
        json_response(status, body)
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(status, body),
        Err(e) => ApiError::new(ErrorCode::Internal, e.to_string()).into_response(),
    }
}

type ApiResult = Result<Response, ApiError>;

/// The router of every route.
pub fn router<S: Storage>(app: Arc<App<S>>) -> Router {
    Router::new()
        .route(routes::WS, get(ws::<S>))
        .route(routes::SPACES, post(create_space::<S>))
        .route("/v1/spaces/{space}", delete(delete_space::<S>))
        .route("/v1/spaces/{space}/docs", get(list_docs::<S>))
        .route("/v1/spaces/{space}/docs/{doc}", delete(delete_doc::<S>))
        .route("/v1/spaces/{space}/docs/{doc}/entries", get(entries::<S>))
        .route(
            "/v1/spaces/{space}/docs/{doc}/changes",
            post(push_change::<S>),
        )
        .route(
            "/v1/spaces/{space}/docs/{doc}/snapshots",
            post(push_snapshot::<S>),
        )
        .route("/v1/spaces/{space}/grants", post(create_grant::<S>))
        .route("/v1/spaces/{space}/grants/{id}", delete(delete_grant::<S>))
        .route("/v1/spaces/{space}/token", post(rotate_token::<S>))
        .route(routes::HEALTH, get(health::<S>))
        .route(routes::METRICS, get(metrics::<S>))
        .layer(DefaultBodyLimit::max(MAX_FRAME_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(app)
}

/// Refuses a body announced larger than [`MAX_FRAME_BYTES`] before reading it (bodies without
/// a length are cut off at the limit by `DefaultBodyLimit`).
async fn refuse_oversized(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if len.is_some_and(|n| n > MAX_FRAME_BYTES as u64) {
        let mut r = ApiError::new(
            ErrorCode::TooLarge,
            format!("the body is larger than {MAX_FRAME_BYTES} bytes"),
        )
        .into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    next.run(req).await
}

/// Serves plain HTTP until `shutdown` completes. Also forwards other processes' writes
/// (PostgreSQL) to the local sessions.
pub async fn serve<S: Storage>(
    app: Arc<App<S>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Small frames must not wait for delayed ACKs (Nagle): relay latency is the product.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    serve_on(app, listener, shutdown).await
}

/// Serves HTTPS and WSS with `tls` (see [`crate::tls::load`]) until `shutdown` completes;
/// otherwise as [`serve`].
pub async fn serve_tls<S: Storage>(
    app: Arc<App<S>>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let counting = app.clone();
    let failed = Arc::new(move || {
        counting.metrics.tls_failures.fetch_add(1, Relaxed);
    });
    // TCP_NODELAY is set by the listener, before the handshake; `tap_io` only lends its
    // connect information (the peer address) to the router.
    let listener = crate::tls::TlsListener::new(listener, tls, failed)?.tap_io(|_| {});
    serve_on(app, listener, shutdown).await
}

async fn serve_on<S: Storage, L>(
    app: Arc<App<S>>,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    SocketAddr: for<'a> Connected<IncomingStream<'a, L>>,
{
    if let Some(mut rx) = app.storage.remote_events() {
        let app = app.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match ev {
                    RemoteEvent::Entry { space, doc, seq } => app.hub.publish(
                        &space,
                        Event::Entry {
                            doc,
                            seq,
                            entry: None,
                            at: None,
                        },
                    ),
                    RemoteEvent::AuthChanged { space } => {
                        app.hub.publish(&space, Event::AuthChanged)
                    }
                    RemoteEvent::SpaceDeleted { space } => {
                        app.hub.publish(&space, Event::SpaceDeleted)
                    }
                    RemoteEvent::Resync => app.hub.publish_all(Event::Resync),
                }
            }
        });
    }
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn parse_space(s: &str) -> Result<SpaceId, ApiError> {
    s.parse().map_err(|e: nexus_sync_protocol::ProtocolError| {
        ApiError::new(ErrorCode::BadRequest, e.to_string())
    })
}

fn parse_doc(s: &str) -> Result<DocId, ApiError> {
    s.parse().map_err(|e: nexus_sync_protocol::ProtocolError| {
        ApiError::new(ErrorCode::BadRequest, e.to_string())
    })
}

fn bearer(headers: &HeaderMap) -> Result<Token, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| t.trim().parse::<Token>().ok())
        .ok_or_else(ApiError::unauthorized)
}

async fn auth<S: Storage>(
    app: &App<S>,
    headers: &HeaderMap,
    space: &SpaceId,
) -> Result<(Principal, String), ApiError> {
    let hash = token_hash(&bearer(headers)?);
    match app.storage.authenticate(space, &hash).await? {
        Some(p) => Ok((p, hash)),
        None => Err(ApiError::unauthorized()),
    }
}

pub(crate) fn owner_only(p: &Principal) -> Result<(), ApiError> {
    match p {
        Principal::Owner => Ok(()),
        Principal::Grant { .. } => Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the space token may do this",
        )),
    }
}

fn body<T: serde::de::DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let b = b.map_err(|r| {
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, r.body_text())
    })?;
    serde_json::from_slice(&b).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

/// Counts the request, and its error if it failed.
fn finish<S>(app: &App<S>, r: ApiResult) -> Response {
    app.metrics.http_requests.fetch_add(1, Relaxed);
    match r {
        Ok(r) => r,
        Err(e) => {
            app.metrics.error(e.code);
            e.into_response()
        }
    }
}

async fn ws<S: Storage>(State(app): State<Arc<App<S>>>, upgrade: WebSocketUpgrade) -> Response {
    if app.metrics.connections.load(Relaxed) >= app.limits.max_connections as i64 {
        app.metrics.error(ErrorCode::Unavailable);
        return ApiError::new(ErrorCode::Unavailable, "too many connections; retry later")
            .into_response();
    }
    upgrade
        // tungstenite's 128 KiB default read buffer per connection dominates the memory of an
        // idle client; buffers still grow for large frames.
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| crate::session::run(app, socket))
}

async fn create_space<S: Storage>(
    State(app): State<Arc<App<S>>>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        let token = bearer(&headers)?;
        let req: http::CreateSpace = body(b)?;
        let created = app
            .storage
            .create_space(&req.space, &token_hash(&token))
            .await?;
        let status = match created {
            Created::Created => {
                tracing::info!(space = %req.space, "space created");
                StatusCode::CREATED
            }
            Created::Existed => StatusCode::OK,
        };
        Ok(json(status, &req))
    }
    .await;
    finish(&app, r)
}

async fn delete_space<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let (p, _) = auth(&app, &headers, &space).await?;
        owner_only(&p)?;
        app.storage.delete_space(&space).await?;
        app.metrics.spaces_deleted.fetch_add(1, Relaxed);
        tracing::info!(%space, "space deleted");
        app.hub.publish(&space, Event::SpaceDeleted);
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    finish(&app, r)
}

async fn delete_doc<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path((space, doc)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let doc = parse_doc(&doc)?;
        let (p, hash) = auth(&app, &headers, &space).await?;
        app.delete_doc(&space, &p, &hash, &doc).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    finish(&app, r)
}

async fn list_docs<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let (p, _) = auth(&app, &headers, &space).await?;
        let mut heads = app.storage.heads(&space).await?;
        heads.retain(|d, _| p.can_read(d));
        Ok(json(StatusCode::OK, &http::DocList { heads }))
    }
    .await;
    finish(&app, r)
}

#[derive(Debug, Deserialize)]
struct EntriesQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn entries<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path((space, doc)): Path<(String, String)>,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let doc = parse_doc(&doc)?;
        let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
        let (p, _) = auth(&app, &headers, &space).await?;
        if !p.can_read(&doc) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this token may not read this document",
            ));
        }
        let limit = q
            .limit
            .unwrap_or(MAX_ENTRIES_PER_MESSAGE)
            .clamp(1, MAX_ENTRIES_PER_MESSAGE);
        let page = app
            .storage
            .entries(&space, &doc, q.since.unwrap_or(0), limit, PAGE_BYTES)
            .await?;
        Ok(json(
            StatusCode::OK,
            &http::EntriesPage {
                entries: page.entries,
                more: page.more,
            },
        ))
    }
    .await;
    finish(&app, r)
}

async fn push_change<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path((space, doc)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let doc = parse_doc(&doc)?;
        let (p, hash) = auth(&app, &headers, &space).await?;
        let req: http::PushChange = body(b)?;
        let seq = app.push(&space, &p, &hash, &doc, None, req.blob).await?;
        Ok(json(StatusCode::OK, &http::Pushed { seq }))
    }
    .await;
    finish(&app, r)
}

async fn push_snapshot<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path((space, doc)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let doc = parse_doc(&doc)?;
        let (p, hash) = auth(&app, &headers, &space).await?;
        let req: http::PushSnapshot = body(b)?;
        let seq = app
            .push(&space, &p, &hash, &doc, Some(req.covers), req.blob)
            .await?;
        Ok(json(StatusCode::OK, &http::Pushed { seq }))
    }
    .await;
    finish(&app, r)
}

/// Most documents in one grant.
pub const MAX_GRANT_DOCS: usize = 1024;

async fn create_grant<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let (p, _) = auth(&app, &headers, &space).await?;
        owner_only(&p)?;
        let req: http::CreateGrant = body(b)?;
        if req.docs.is_empty() || req.docs.len() > MAX_GRANT_DOCS {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("a grant lists 1 to {MAX_GRANT_DOCS} documents"),
            ));
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        let mut docs = req.docs;
        docs.sort();
        docs.dedup();
        app.storage
            .create_grant(
                &space,
                &NewGrant {
                    id: id.clone(),
                    token_hash: token_hash(&req.token),
                    docs,
                    access: req.access,
                },
            )
            .await?;
        tracing::info!(%space, grant = %id, access = ?req.access, "grant created");
        Ok(json(StatusCode::CREATED, &http::GrantCreated { id }))
    }
    .await;
    finish(&app, r)
}

async fn delete_grant<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path((space, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let (p, _) = auth(&app, &headers, &space).await?;
        owner_only(&p)?;
        app.storage.delete_grant(&space, &id).await?;
        tracing::info!(%space, grant = %id, "grant revoked");
        app.hub.publish(&space, Event::AuthChanged);
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    finish(&app, r)
}

async fn rotate_token<S: Storage>(
    State(app): State<Arc<App<S>>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let r = async {
        let space = parse_space(&space)?;
        let (p, _) = auth(&app, &headers, &space).await?;
        owner_only(&p)?;
        let req: http::RotateToken = body(b)?;
        app.storage
            .rotate_token(&space, &token_hash(&req.token), req.keep_grants.as_deref())
            .await?;
        tracing::info!(%space, kept_grants = ?req.keep_grants.as_ref().map(Vec::len), "space token rotated");
        app.hub.publish(&space, Event::AuthChanged);
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    finish(&app, r)
}

async fn health<S: Storage>(State(app): State<Arc<App<S>>>) -> Response {
    match app.storage.health().await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "unavailable"}),
            )
        }
    }
}

async fn metrics<S: Storage>(State(app): State<Arc<App<S>>>) -> Response {
    let mut r = app.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

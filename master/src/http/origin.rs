//! What a web page on another site may do with this master: nothing.
//!
//! A browser lets any page it shows send requests to `127.0.0.1:8888` — a
//! form post, a `text/plain` fetch, a Socket.IO connection — and a master
//! without an API token would run them. Browsers say where such a request
//! comes from in `Origin`: every request that carries one must come from
//! this master's own origin (the page it serves) or one listed in
//! `FAENA_ALLOWED_ORIGINS`; `curl`, the CLI and workers send none. REST
//! bodies must also say they are JSON, which no cross-site form or simple
//! request can without the browser asking first (CORS preflight, which this
//! master never grants).
//!
//! A page can also come from this master's own origin by DNS rebinding:
//! `evil.example` resolves to the attacker first, then to 127.0.0.1, and
//! its page's `Origin` and `Host` agree. So every request's `Host` must be
//! a name this master answers to: an IP address, `localhost`, or a name in
//! `FAENA_ALLOWED_HOSTS` — a name an attacker does not control.
//!
//! Before both, a request a forwarder passed on (a standby master, the
//! edge) is known by the client address the forwarder signed, so the
//! per-address limits count that client. The three are one layer, the
//! web port's [`front_door`], which also logs the cause of any response
//! that failed on the server's side. Behind it, the REST API's routes
//! pass one more ([`api_gate`]): the API token, then a JSON body.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use faena_common::signing::vouched;
use faena_proto::api::CLIENT_HEADER;
use faena_proto::secret::Secret;

use super::AppError;
use super::listen::PeerAddr;

/// The origins allowed besides the master's own.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    listed: Vec<String>,
    any: bool,
}

impl Origins {
    /// From `FAENA_ALLOWED_ORIGINS`: comma-separated origins
    /// (`https://faena.example.org`), or `*` for any.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for item in list.split(',').map(|s| s.trim().trim_end_matches('/')).filter(|s| !s.is_empty()) {
            if item == "*" {
                out.any = true;
                continue;
            }
            let ok = (item.starts_with("http://") || item.starts_with("https://"))
                && !item.trim_start_matches("http://").trim_start_matches("https://").contains(['/', '?', '#']);
            if !ok {
                return Err(format!("'{item}' is not an origin (scheme://host[:port], no path)"));
            }
            out.listed.push(item.to_ascii_lowercase());
        }
        Ok(out)
    }

    /// Whether a request from `origin` may go on; `host` is the authority
    /// it was sent to (the same origin's host and port).
    fn permits(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self.any || self.listed.contains(&origin) {
            return true;
        }
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        matches!((authority, host), (Some(a), Some(h)) if a == h.to_ascii_lowercase())
    }
}

/// The public web port's checks, as one layer, in this order: the client
/// a forwarder vouched for, then the `Host` (DNS rebinding), then the
/// requesting page's `Origin`; and, on the way out, the log of a failure's
/// cause. One layer rather than four: each layer costs every request a
/// boxed service and future.
#[derive(Debug)]
pub struct FrontDoor {
    vouching: Arc<Secret>,
    hosts: Hosts,
    origins: Origins,
}

impl FrontDoor {
    pub fn new(vouching: Arc<Secret>, hosts: Hosts, origins: Origins) -> Self {
        Self { vouching, hosts, origins }
    }
}

/// Lets a request in through the [`FrontDoor`]'s checks, or refuses it.
pub async fn front_door(State(door): State<Arc<FrontDoor>>, mut req: Request, next: Next) -> Response {
    take_vouched_client(&door.vouching, &mut req);
    let host =
        req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or(req.uri().authority().map(|a| a.as_str()));
    if let Some(refused) = refuse_host(&door.hosts, &req, host).or_else(|| refuse_origin(&door.origins, &req, host)) {
        return refused;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let resp = next.run(req).await;
    super::error::log_failure(&method, &path, &resp);
    resp
}

/// A request a forwarder passed on carries its client's address, signed
/// ([`CLIENT_HEADER`]); it is then known by that address. The header is
/// taken off every request, signed or not: a client cannot claim an address.
fn take_vouched_client(token: &Secret, req: &mut Request) {
    if let Some(header) = req.headers_mut().remove(CLIENT_HEADER) {
        let client = header.to_str().ok().and_then(|h| vouched(token, h));
        if let Some(ip) = client {
            req.extensions_mut().insert(ConnectInfo(PeerAddr(SocketAddr::new(ip, 0))));
        }
    }
}

/// Refuses a request whose `Origin` is another site's.
fn refuse_origin(origins: &Origins, req: &Request, host: Option<&str>) -> Option<Response> {
    let origin = req.headers().get(header::ORIGIN)?;
    match origin.to_str() {
        Ok(o) if origins.permits(o, host) => None,
        _ => {
            let shown = String::from_utf8_lossy(origin.as_bytes()).chars().take(200).collect::<String>();
            tracing::warn!(origin = %shown, path = %req.uri().path(), "refused a request from another site");
            let message =
                format!("requests from {shown} are not allowed here (same origin only; see FAENA_ALLOWED_ORIGINS)");
            Some(AppError::new(StatusCode::FORBIDDEN, "forbidden_origin", message).into_response())
        }
    }
}

/// The host names this master answers to besides IP addresses and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    listed: Vec<String>,
    any: bool,
}

impl Hosts {
    /// From `FAENA_ALLOWED_HOSTS`: comma-separated host names
    /// (`faena.example.org`, no scheme or port), or `*` for any.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                out.any = true;
                continue;
            }
            let ok = item.len() <= 253 && item.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
            if !ok {
                return Err(format!("'{item}' is not a host name (letters, digits, '.', '-'; no scheme or port)"));
            }
            out.listed.push(item.trim_end_matches('.').to_ascii_lowercase());
        }
        Ok(out)
    }

    /// Whether a request sent to `host` (a `Host` header: name or address,
    /// with or without a port) may be answered.
    fn permits(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host.trim().to_ascii_lowercase();
        // [v6]:port, v4:port, name:port, or any of them bare.
        let name = match host.strip_prefix('[') {
            Some(rest) => return rest.split(']').next().is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
            None => host.rsplit_once(':').map_or(host.as_str(), |(n, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) { n } else { host.as_str() }
            }),
        };
        let name = name.trim_end_matches('.');
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.listed.iter().any(|l| l == name)
    }
}

/// Refuses a request sent to a host name this master does not answer to.
fn refuse_host(hosts: &Hosts, req: &Request, host: Option<&str>) -> Option<Response> {
    match host {
        // HTTP/1.0 tools may send none: no browser does.
        None => None,
        Some(h) if hosts.permits(h) => None,
        Some(h) => {
            let shown = h.chars().take(200).collect::<String>();
            tracing::warn!(host = %shown, path = %req.uri().path(), "refused a request for an unknown host name");
            let message = format!(
                "this master does not answer to the name {shown:?}: use its address, or list the name in FAENA_ALLOWED_HOSTS"
            );
            Some(AppError::new(StatusCode::FORBIDDEN, "forbidden_host", message).into_response())
        }
    }
}

/// The REST API's routes' checks, as one route layer: with an API token
/// set (`FAENA_API_TOKEN`, none for the OpenAI routes, which have keys of
/// their own), `Authorization: Bearer <the token>`; then a body that says
/// it is JSON.
pub async fn api_gate(State(token): State<Option<Arc<Secret>>>, req: Request, next: Next) -> Response {
    if let Some(token) = token
        && let Some(refused) = refuse_token(&token, req.headers())
    {
        return refused;
    }
    if let Some(refused) = refuse_body_type(&req) {
        return refused;
    }
    next.run(req).await
}

/// Refuses a request without `Authorization: Bearer <the token>`.
fn refuse_token(token: &Secret, headers: &HeaderMap) -> Option<Response> {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|t| token.constant_time_eq(t)) {
        return None;
    }
    let message = if given.is_some() {
        "wrong API token"
    } else {
        "this API needs its token: Authorization: Bearer <FAENA_API_TOKEN>"
    };
    let mut resp = AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    Some(resp)
}

/// Refuses a REST request with a body that does not say it is JSON. A
/// request with no body at all (`curl -X POST …/retry`) needs no type.
fn refuse_body_type(req: &Request) -> Option<Response> {
    let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    if writes && !has_no_body(req) && !is_json(req.headers()) {
        let message = "the request body must be JSON, sent with Content-Type: application/json";
        return Some(
            AppError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message).into_response(),
        );
    }
    None
}

/// A request that has no body. In HTTP/1 that is one with neither
/// `Transfer-Encoding` nor a non-zero `Content-Length` (RFC 9112 §6.3); in
/// HTTP/2 one whose headers ended the stream, which hyper's length hint tells.
fn has_no_body(req: &Request) -> bool {
    use axum::body::HttpBody;
    let headers = req.headers();
    if req.version() >= axum::http::Version::HTTP_2 {
        return req.body().size_hint().exact() == Some(0);
    }
    let length = headers.get(header::CONTENT_LENGTH).map(|v| v.as_bytes());
    !headers.contains_key(header::TRANSFER_ENCODING) && matches!(length, None | Some(b"0"))
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_listed_or_any() {
        let none = Origins::default();
        assert!(none.permits("http://127.0.0.1:8888", Some("127.0.0.1:8888")), "the page's own origin");
        assert!(none.permits("HTTP://LOCALHOST:8888", Some("localhost:8888")));
        assert!(!none.permits("http://evil.example", Some("127.0.0.1:8888")));
        assert!(!none.permits("http://127.0.0.1:8889", Some("127.0.0.1:8888")), "another port is another site");
        assert!(!none.permits("null", Some("127.0.0.1:8888")), "sandboxed frames and files");
        assert!(!none.permits("http://127.0.0.1:8888", None));
        let listed = Origins::parse("https://faena.example.org, http://ops:3000/").expect("valid");
        assert!(listed.permits("https://faena.example.org", Some("10.0.0.5:8888")));
        assert!(listed.permits("http://ops:3000", None));
        assert!(!listed.permits("https://evil.example", None));
        assert!(Origins::parse("*").expect("any").permits("https://evil.example", None));
        assert!(Origins::parse("faena.example.org").is_err());
        assert!(Origins::parse("https://x/path").is_err());
    }

    #[test]
    fn only_addresses_localhost_and_listed_names_are_answered() {
        let none = Hosts::default();
        for ok in [
            "127.0.0.1:8888",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:8888",
            "[::1]",
            "localhost:8888",
            "LOCALHOST",
            "app.localhost:1",
        ] {
            assert!(none.permits(ok), "{ok}");
        }
        for bad in [
            "evil.example:8888",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example:8888",
            "[evil]:1",
            "",
        ] {
            assert!(!none.permits(bad), "{bad}");
        }
        let listed = Hosts::parse("faena.example.org, ops").expect("valid");
        assert!(
            listed.permits("Faena.Example.Org:8888") && listed.permits("ops") && listed.permits("faena.example.org.")
        );
        assert!(!listed.permits("evil.example"));
        assert!(Hosts::parse("*").expect("any").permits("evil.example:8888"));
        assert!(Hosts::parse("http://x").is_err() && Hosts::parse("x:80").is_err());
    }

    #[test]
    fn json_is_json_whatever_its_parameters() {
        let with = |v: &str| HeaderMap::from_iter([(header::CONTENT_TYPE, v.parse().expect("value"))]);
        assert!(is_json(&with("application/json")));
        assert!(is_json(&with("Application/JSON; charset=utf-8")));
        assert!(is_json(&with("application/merge-patch+json")));
        assert!(!is_json(&with("text/plain")));
        assert!(!is_json(&with("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }

    /// `app` served on a free loopback port; its address.
    async fn served(app: axum::Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let at = l.local_addr().unwrap_or_else(|e| panic!("addr: {e}")).to_string();
        tokio::spawn(async move { axum::serve(l, app).await });
        at
    }

    #[tokio::test]
    async fn the_api_gate_asks_for_the_token_before_the_body_type() {
        let token = Arc::new(Secret::new("api-token"));
        let route = || axum::Router::new().route("/api/x", axum::routing::post(|| async { "taken" }));
        let with_token =
            served(route().route_layer(axum::middleware::from_fn_with_state(Some(token.clone()), api_gate))).await;
        let without = served(route().route_layer(axum::middleware::from_fn_with_state(None, api_gate))).await;
        let client = faena_common::tls::http_client().build().expect("client");
        let post = |at: &str, auth: Option<&str>, kind: &str| {
            let mut req = client.post(format!("http://{at}/api/x")).header(header::CONTENT_TYPE, kind).body("{}");
            if let Some(auth) = auth {
                req = req.header(header::AUTHORIZATION, auth);
            }
            async move { req.send().await.unwrap_or_else(|e| panic!("POST: {e}")).status().as_u16() }
        };
        let json = "application/json";
        assert_eq!(post(&with_token, None, "text/plain").await, 401, "no token: refused before its body's type");
        assert_eq!(post(&with_token, Some("Bearer wrong"), json).await, 401);
        assert_eq!(post(&with_token, Some("Bearer api-token"), "text/plain").await, 415);
        assert_eq!(post(&with_token, Some("Bearer api-token"), json).await, 200);
        assert_eq!(post(&without, None, "text/plain").await, 415);
        assert_eq!(post(&without, None, json).await, 200, "no token set: JSON is enough");
    }

    /// Every event of the master's own, its fields as text.
    #[derive(Clone, Default)]
    struct Logged(Arc<parking_lot::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logged {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            struct Fields(String);
            impl tracing::field::Visit for Fields {
                fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={value:?} ", field.name()));
                }
            }
            if !event.metadata().target().starts_with("faena_master") {
                return;
            }
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().push(fields.0);
        }
    }

    #[tokio::test]
    async fn the_front_door_logs_the_cause_of_a_failure_and_nothing_of_a_refusal() {
        use tracing_subscriber::layer::SubscriberExt;
        let logged = Logged::default();
        let _log = tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
        let failing = || async {
            AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "something failed")
                .caused_by(std::io::Error::other("the disk is on fire"))
        };
        let refused = || async { AppError::bad_request("bad", "no") };
        let app = axum::Router::new()
            .route("/fails", axum::routing::get(failing))
            .route("/refused", axum::routing::get(refused))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(FrontDoor::new(Arc::new(Secret::new("cluster")), Hosts::default(), Origins::default())),
                front_door,
            ));
        let at = served(app).await;
        let client = faena_common::tls::http_client().build().expect("client");
        for (path, status) in [("/refused", 400), ("/fails", 500)] {
            let resp = client.get(format!("http://{at}{path}")).send().await.unwrap_or_else(|e| panic!("GET: {e}"));
            assert_eq!(resp.status().as_u16(), status);
            let body = resp.text().await.unwrap_or_default();
            assert!(!body.contains("fire"), "the cause is not shown to the client: {body}");
        }
        let logged = logged.0.lock().clone();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].contains("request failed") && logged[0].contains("the disk is on fire"), "{logged:?}");
        assert!(logged[0].contains("path=/fails") && logged[0].contains("status=500"), "{logged:?}");
    }
}

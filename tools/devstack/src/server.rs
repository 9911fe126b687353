//! What API Gateway does in front of an HTTP function: match the route, turn
//! the request into a payload-format-2.0 event, and the handler's response
//! back into HTTP. The same event builder serves tests and the dev server,
//! so both exercise the exact request shape Lambda delivers. Like the
//! deployed API's `CorsConfiguration`, it answers browsers' CORS preflights
//! itself and marks responses to allowed origins ([`Cors`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use lambda_http::{Body, Request, Response};
use serde_json::json;

pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
pub type HttpHandler = Arc<dyn Fn(Request) -> HandlerFuture + Send + Sync>;

/// One route of the HTTP API: method, template path (`/call/{call_id}`), handler.
#[derive(Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub handler: HttpHandler,
}

/// Matches `/call/abc` against `/call/{call_id}`, returning the path parameters.
pub fn match_path(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let want: Vec<&str> = template.trim_matches('/').split('/').collect();
    let got: Vec<&str> = path.trim_matches('/').split('/').collect();
    if want.len() != got.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (w, g) in want.iter().zip(&got) {
        match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(name) if !g.is_empty() => {
                let decoded = url::form_urlencoded::parse(format!("v={g}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                params.insert(name.to_string(), decoded);
            }
            Some(_) => return None,
            None if w == g => {}
            None => return None,
        }
    }
    Some(params)
}

/// An API Gateway HTTP API (payload 2.0) request, as a Lambda handler receives it.
pub fn api_request(
    method: &str,
    route_path: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Request {
    let mut header_map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        header_map
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        query
            .entry(k.into_owned())
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    let path_parameters = match_path(route_path, raw_path).unwrap_or_default();
    let route_key = format!("{method} {route_path}");
    let event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": header_map,
        "queryStringParameters": if query.is_empty() { serde_json::Value::Null } else { json!(query) },
        "pathParameters": if path_parameters.is_empty() { serde_json::Value::Null } else { json!(path_parameters) },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": header_map.get("user-agent").cloned().unwrap_or_default()
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 0
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true
    });
    lambda_http::request::from_str(&event.to_string()).expect("a well-formed API Gateway v2 event")
}

/// The body of a handler response as bytes.
pub fn body_of(response: &Response<Body>) -> Vec<u8> {
    response.body().as_ref().to_vec()
}

/// What a preflight may ask for: the template's `CorsConfiguration`.
pub const CORS_ALLOW_METHODS: &str = "GET, POST, OPTIONS";
pub const CORS_ALLOW_HEADERS: &str = "content-type, authorization, x-api-key, x-room-invite";
pub const CORS_MAX_AGE_SECONDS: u32 = 600;

/// The browser origins allowed to call the dev server (`ALLOWED_ORIGINS`,
/// comma-separated, as the template's `AllowedOrigins`). An allowed origin
/// is echoed back; any other origin gets no CORS headers at all, so the
/// browser refuses the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// `https://app.example.com, http://localhost:5173/`: entries trimmed,
    /// a trailing `/` dropped (an Origin header never has one), empties skipped.
    pub fn parse(list: &str) -> Self {
        Self {
            origins: list
                .split(',')
                .map(|o| o.trim().trim_end_matches('/'))
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// From `ALLOWED_ORIGINS`; unset or empty allows no origin.
    pub fn from_env() -> Self {
        Self::parse(&std::env::var(crate::dev_env::ALLOWED_ORIGINS).unwrap_or_default())
    }

    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// Scheme, host and port compared as browsers write them (case-insensitive).
    pub fn allows(&self, origin: &str) -> bool {
        !origin.is_empty() && self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Headers of the answer to a preflight (`OPTIONS`) from `origin`: none
    /// unless the origin is allowed.
    pub fn preflight_headers(&self, origin: Option<&str>) -> Vec<(HeaderName, String)> {
        let mut headers = self.response_headers(origin);
        if !headers.is_empty() {
            headers.extend([
                (
                    http::header::ACCESS_CONTROL_ALLOW_METHODS,
                    CORS_ALLOW_METHODS.to_string(),
                ),
                (
                    http::header::ACCESS_CONTROL_ALLOW_HEADERS,
                    CORS_ALLOW_HEADERS.to_string(),
                ),
                (
                    http::header::ACCESS_CONTROL_MAX_AGE,
                    CORS_MAX_AGE_SECONDS.to_string(),
                ),
            ]);
        }
        headers
    }

    /// Headers added to the response to a request from `origin`: the origin
    /// echoed and `Vary: Origin` (the answer differs by origin, so caches
    /// must key on it); none unless the origin is allowed.
    pub fn response_headers(&self, origin: Option<&str>) -> Vec<(HeaderName, String)> {
        match origin {
            Some(origin) if self.allows(origin) => vec![
                (
                    http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    origin.to_string(),
                ),
                (http::header::VARY, "Origin".to_string()),
            ],
            _ => Vec::new(),
        }
    }
}

/// Adds `headers` to a response's; `Vary` is appended to any the handler set.
fn add_headers(target: &mut HeaderMap, headers: Vec<(HeaderName, String)>) {
    for (name, value) in headers {
        let Ok(value) = HeaderValue::from_str(&value) else {
            continue;
        };
        if name == http::header::VARY {
            target.append(name, value);
        } else {
            target.insert(name, value);
        }
    }
}

/// API Gateway's own answer to a CORS preflight: 204, no body, the CORS
/// headers only if `origin` is allowed. The function is never invoked.
pub fn preflight_response(cors: &Cors, origin: Option<&str>) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    add_headers(response.headers_mut(), cors.preflight_headers(origin));
    response
}

/// A function's response as the browser gets it from `origin`.
pub fn with_cors_headers(
    cors: &Cors,
    origin: Option<&str>,
    mut response: hyper::Response<Full<Bytes>>,
) -> hyper::Response<Full<Bytes>> {
    add_headers(response.headers_mut(), cors.response_headers(origin));
    response
}

async fn dispatch(
    routes: Arc<Vec<Route>>,
    cors: Arc<Cors>,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let origin = parts
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Preflights for any path, as API Gateway answers them (unless a
    // function itself serves OPTIONS there).
    if method == "OPTIONS"
        && !routes
            .iter()
            .any(|r| r.method == method && match_path(&r.path, &path).is_some())
    {
        let response = preflight_response(&cors, origin.as_deref());
        tracing::info!(%method, %path, status = response.status().as_u16(), "preflight");
        return response;
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let matched = routes
        .iter()
        .find(|r| r.method == method && match_path(&r.path, &path).is_some());
    let response = match matched {
        Some(route) => {
            (route.handler)(api_request(
                &method,
                &route.path,
                &path,
                &query,
                &headers,
                &body,
            ))
            .await
        }
        None => {
            shared::api::ApiError::NotFound(format!("No route for {method} {path}")).into_response()
        }
    };
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    with_cors_headers(
        &cors,
        origin.as_deref(),
        hyper::Response::from_parts(parts, Full::new(bytes)),
    )
}

/// Serves the routes until the process ends, answering CORS for `cors`.
pub async fn serve(addr: SocketAddr, routes: Vec<Route>, cors: Cors) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let routes = Arc::new(routes);
    let cors = Arc::new(cors);
    loop {
        let (stream, _) = listener.accept().await?;
        let routes = Arc::clone(&routes);
        let cors = Arc::clone(&cors);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let routes = Arc::clone(&routes);
                let cors = Arc::clone(&cors);
                async move { Ok::<_, Infallible>(dispatch(routes, cors, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::RequestExt;

    #[test]
    fn paths_match_templates() {
        assert_eq!(match_path("/health", "/health"), Some(BTreeMap::new()));
        let params = match_path("/call/{call_id}", "/call/CA%2012").unwrap();
        assert_eq!(params["call_id"], "CA 12");
        assert_eq!(match_path("/call/{call_id}", "/call/"), None);
        assert_eq!(match_path("/call/{call_id}", "/call/a/b"), None);
        assert_eq!(match_path("/health", "/stats"), None);
    }

    #[test]
    fn requests_carry_query_path_headers_and_raw_body() {
        let request = api_request(
            "POST",
            "/call/{call_id}",
            "/call/CA1",
            "token=abc&x=1",
            &[("Content-Type".into(), "application/json".into())],
            br#"{"a":1}"#,
        );
        assert_eq!(
            request.query_string_parameters().first("token"),
            Some("abc")
        );
        assert_eq!(request.path_parameters().first("call_id"), Some("CA1"));
        assert_eq!(request.headers()["content-type"], "application/json");
        assert_eq!(request.body().as_ref(), br#"{"a":1}"#);
    }

    fn dev_cors() -> Cors {
        Cors::parse("http://localhost:5173,http://127.0.0.1:5173")
    }

    fn header<'a>(response: &'a hyper::Response<Full<Bytes>>, name: &str) -> Option<&'a str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn has_cors_headers(response: &hyper::Response<Full<Bytes>>) -> bool {
        response
            .headers()
            .keys()
            .any(|name| name.as_str().starts_with("access-control-") || name == "vary")
    }

    #[test]
    fn allowed_origins_are_parsed_from_a_comma_separated_list() {
        let cors = Cors::parse(" https://app.example.com/ ,, http://localhost:5173 ,");
        assert_eq!(
            cors.origins(),
            ["https://app.example.com", "http://localhost:5173"]
        );
        assert!(cors.allows("https://app.example.com"));
        assert!(cors.allows("HTTP://LOCALHOST:5173"));
        // Scheme and port are part of the origin.
        assert!(!cors.allows("http://app.example.com"));
        assert!(!cors.allows("http://localhost:5174"));
        assert!(!cors.allows("https://app.example.com.evil.test"));
        assert!(!cors.allows(""));
        assert!(Cors::parse("").origins().is_empty());
        assert!(!Cors::parse("").allows("http://localhost:5173"));
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_is_answered_with_the_cors_headers() {
        let response = preflight_response(&dev_cors(), Some("http://localhost:5173"));
        assert_eq!(response.status(), 204);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("http://localhost:5173")
        );
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some("GET, POST, OPTIONS")
        );
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            Some("content-type, authorization, x-api-key, x-room-invite")
        );
        assert_eq!(header(&response, "access-control-max-age"), Some("600"));
        assert_eq!(header(&response, "vary"), Some("Origin"));
        // The other allowed origin is echoed, not the first one.
        let other = preflight_response(&dev_cors(), Some("http://127.0.0.1:5173"));
        assert_eq!(
            header(&other, "access-control-allow-origin"),
            Some("http://127.0.0.1:5173")
        );
    }

    #[test]
    fn a_preflight_from_another_origin_or_none_gets_no_cors_headers() {
        for origin in [Some("https://evil.example"), Some("null"), None] {
            let response = preflight_response(&dev_cors(), origin);
            assert_eq!(response.status(), 204, "{origin:?}");
            assert!(!has_cors_headers(&response), "{origin:?}: {response:?}");
        }
        let response = preflight_response(&Cors::default(), Some("http://localhost:5173"));
        assert!(!has_cors_headers(&response));
    }

    fn handler_response() -> hyper::Response<Full<Bytes>> {
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
        *response.status_mut() = http::StatusCode::CREATED;
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        response
    }

    #[test]
    fn responses_to_an_allowed_origin_carry_the_origin_and_vary() {
        let response = with_cors_headers(
            &dev_cors(),
            Some("http://127.0.0.1:5173"),
            handler_response(),
        );
        assert_eq!(response.status(), 201);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("http://127.0.0.1:5173")
        );
        assert_eq!(header(&response, "vary"), Some("Origin"));
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        // Preflight-only headers stay on preflights.
        assert!(header(&response, "access-control-allow-methods").is_none());
        assert!(header(&response, "access-control-max-age").is_none());
    }

    #[test]
    fn a_vary_set_by_the_function_is_kept() {
        let mut response = handler_response();
        response
            .headers_mut()
            .insert("vary", HeaderValue::from_static("Accept-Encoding"));
        let response = with_cors_headers(&dev_cors(), Some("http://localhost:5173"), response);
        let vary: Vec<&str> = response
            .headers()
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    }

    #[test]
    fn responses_to_other_origins_or_no_origin_are_unchanged() {
        for origin in [Some("https://evil.example"), None] {
            let response = with_cors_headers(&dev_cors(), origin, handler_response());
            assert!(!has_cors_headers(&response), "{origin:?}");
            assert_eq!(response.status(), 201);
            assert_eq!(header(&response, "content-type"), Some("application/json"));
        }
    }
}

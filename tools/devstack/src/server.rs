//! What API Gateway does in front of an HTTP function: match the route, turn
//! the request into a payload-format-2.0 event, and the handler's response
//! back into HTTP. The same event builder serves tests and the dev server,
//! so both exercise the exact request shape Lambda delivers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
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

async fn dispatch(
    routes: Arc<Vec<Route>>,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
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
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// Serves the routes until the process ends.
pub async fn serve(addr: SocketAddr, routes: Vec<Route>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let routes = Arc::new(routes);
    loop {
        let (stream, _) = listener.accept().await?;
        let routes = Arc::clone(&routes);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let routes = Arc::clone(&routes);
                async move { Ok::<_, Infallible>(dispatch(routes, request).await) }
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
}

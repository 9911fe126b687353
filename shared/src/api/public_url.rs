//! Where callers reach this deployment, for the URLs we sign, verify and hand
//! out (Twilio callbacks, join links): `PUBLIC_BASE_URL` when it is set (a
//! custom domain), else the API Gateway domain the current request came in
//! on.
//!
//! Why not let the template pass the API's own URL: the HTTP API's
//! definition names every function it invokes, so a function whose
//! variables name the API would depend on it both ways, and CloudFormation
//! refuses the stack (circular dependency). The domain API Gateway puts in
//! the request context is set by API Gateway, not by the caller (unlike
//! `Host`), so it is safe to sign and verify against.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use std::future::Future;

tokio::task_local! {
    /// The origin of the request being served (`serve_http` sets it).
    static REQUEST_ORIGIN: Option<String>;
}

/// `PUBLIC_BASE_URL`, or the current request's API Gateway origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicBaseUrl {
    configured: Option<String>,
}

impl PublicBaseUrl {
    /// `PUBLIC_BASE_URL` if set; otherwise every use asks the request.
    pub fn from_env() -> Self {
        Self::from(crate::base::config::optional("PUBLIC_BASE_URL"))
    }

    /// The base for links and callbacks made while serving a request,
    /// without a trailing `/`. `None` only outside API Gateway with no
    /// `PUBLIC_BASE_URL` (a queue worker, a test that sets neither).
    pub fn current(&self) -> Option<String> {
        self.configured.clone().or_else(|| {
            REQUEST_ORIGIN
                .try_with(|origin| origin.clone())
                .ok()
                .flatten()
        })
    }

    /// The base `request` was addressed to, for checking a signature over
    /// its URL.
    pub fn for_request(&self, request: &Request) -> Option<String> {
        self.configured.clone().or_else(|| origin_of(request))
    }
}

impl From<Option<String>> for PublicBaseUrl {
    fn from(configured: Option<String>) -> Self {
        Self {
            configured: configured
                .map(|url| url.trim().trim_end_matches('/').to_string())
                .filter(|url| !url.is_empty()),
        }
    }
}

impl From<&str> for PublicBaseUrl {
    fn from(url: &str) -> Self {
        Self::from(Some(url.to_string()))
    }
}

impl From<String> for PublicBaseUrl {
    fn from(url: String) -> Self {
        Self::from(Some(url))
    }
}

/// `https://<domain>` of an API Gateway request (the default stage has no
/// path prefix).
pub fn origin_of(request: &Request) -> Option<String> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context
            .domain_name
            .as_deref()
            .filter(|domain| !domain.is_empty())
            .map(|domain| format!("https://{domain}")),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Runs `serve` with `origin` (a request's `origin_of`) as the one
/// `current` falls back to.
pub async fn with_origin<F: Future>(origin: Option<String>, serve: F) -> F::Output {
    REQUEST_ORIGIN.scope(origin, serve).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;

    fn request_from(domain: Option<&str>) -> Request {
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.domain_name = domain.map(str::to_string);
        lambda_http::http::Request::builder()
            .uri("/twilio/voice")
            .body(lambda_http::Body::Empty)
            .unwrap()
            .with_request_context(RequestContext::ApiGatewayV2(context))
    }

    #[test]
    fn the_configured_url_wins_over_the_request() {
        let base = PublicBaseUrl::from("https://calls.example.com/ ");
        let request = request_from(Some("abc123.execute-api.us-east-1.amazonaws.com"));
        assert_eq!(
            base.for_request(&request).as_deref(),
            Some("https://calls.example.com")
        );
        assert_eq!(base.current().as_deref(), Some("https://calls.example.com"));
    }

    #[test]
    fn without_configuration_the_request_domain_is_the_base() {
        let base = PublicBaseUrl::from(Some(String::new()));
        let request = request_from(Some("abc123.execute-api.us-east-1.amazonaws.com"));
        assert_eq!(
            base.for_request(&request).as_deref(),
            Some("https://abc123.execute-api.us-east-1.amazonaws.com")
        );
        assert_eq!(base.for_request(&request_from(None)), None);
        assert_eq!(base.for_request(&request_from(Some(""))), None);
    }

    #[tokio::test]
    async fn current_falls_back_to_the_request_being_served_and_only_inside_it() {
        let base = PublicBaseUrl::default();
        assert_eq!(base.current(), None);
        let request = request_from(Some("abc123.execute-api.eu-west-1.amazonaws.com"));
        let inside = with_origin(origin_of(&request), async { base.current() }).await;
        assert_eq!(
            inside.as_deref(),
            Some("https://abc123.execute-api.eu-west-1.amazonaws.com")
        );
        assert_eq!(base.current(), None);
    }
}

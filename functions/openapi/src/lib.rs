//! `GET /openapi.json`: the API described in OpenAPI 3.1. The document is
//! `shared/openapi.json`, compiled in, so what is served is exactly what the
//! drift tests (`tests/tests/integration/openapi.rs`) checked.

use http::StatusCode;
use lambda_http::{Body, Request, Response};

/// The OpenAPI document, as written in `shared/openapi.json`.
pub const DOCUMENT: &str = include_str!("../../../shared/openapi.json");

/// It changes only with a deploy; clients may keep it a few minutes.
pub const CACHE_CONTROL: &str = "public, max-age=300";

pub struct OpenApiDocument;

impl OpenApiDocument {
    /// Nothing to configure: the same shape as every other function's
    /// `from_env`, so `main` and the dev server build it the same way.
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        Ok(Self)
    }

    pub async fn handle(&self, _request: Request) -> Response<Body> {
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CACHE_CONTROL, CACHE_CONTROL)
            .body(Body::Text(DOCUMENT.to_string()))
            .expect("static response parts are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_200_with_the_parseable_document() {
        let request = lambda_http::request::from_str(include_str!("../../../events/openapi.json"))
            .expect("the sample event parses");
        let response = OpenApiDocument::from_env()
            .await
            .unwrap()
            .handle(request)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], CACHE_CONTROL);
        let document: serde_json::Value =
            serde_json::from_slice(response.body().as_ref()).expect("the body is JSON");
        assert!(
            document["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            document["openapi"]
        );
        assert!(document["paths"]["/openapi.json"]["get"].is_object());
    }
}

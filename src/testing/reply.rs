//! What a test reads back: a response with its envelope parsed, and `/metrics` as series that
//! must exist.

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::http::error::ErrorCode;

/// A response, read whole: its status, headers and body (parsed as JSON when it is JSON,
/// `Value::Null` otherwise; the text and the bytes are kept either way).
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as JSON; `Value::Null` when it is not JSON.
    pub body: Value,
    /// The body as text (invalid UTF-8 replaced).
    pub text: String,
    /// The body as it came.
    pub bytes: Vec<u8>,
}

impl Reply {
    /// Sends `request` and reads the whole response; panics when the request itself fails
    /// (connection refused, timeout), which a test should not see.
    pub async fn of(request: reqwest::RequestBuilder) -> Self {
        Self::read(request.send().await.expect("the request gets a response")).await
    }

    /// Reads the whole of a response already received.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body is read").to_vec();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
            bytes,
        }
    }

    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The envelope's `error.code`, for an error response.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// The status and the envelope's `error.code` (empty for a response that is no error),
    /// to compare in one `assert_eq!`.
    pub fn outcome(&self) -> (u16, String) {
        (self.status, self.code().unwrap_or_default().to_owned())
    }

    /// The `X-Request-Id` the edge gave the response (and the envelope's `error.request_id`).
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }

    /// Asserts that this is the error `code` (its status and its `error.code`), in the
    /// envelope: JSON, with a message and the response's request id. Returns the envelope's
    /// `error` object.
    pub fn assert_error(&self, code: ErrorCode) -> &Value {
        assert_eq!(
            (self.status, self.code()),
            (code.status, Some(code.code)),
            "expected the error {} ({}), got {} {}",
            code.code,
            code.status,
            self.status,
            self.text
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "errors are JSON"
        );
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "the envelope carries a message: {}",
            self.text
        );
        assert_eq!(
            error["request_id"].as_str(),
            self.request_id(),
            "the envelope carries the response's request id: {}",
            self.text
        );
        error
    }
}

/// One reading of `/metrics`, as series (`name{labels}` exactly as exposed) and values.
#[derive(Debug)]
pub struct Metrics {
    series: Vec<(String, f64)>,
}

impl Metrics {
    /// Parses the Prometheus text format.
    pub fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        Self { series }
    }

    /// The value of `series`, or `None` when it is not exposed (a labelled counter appears
    /// only once it has been counted).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.series
            .iter()
            .find(|(name, _)| name == series)
            .map(|(_, value)| *value)
    }

    /// The value of `series`; fails the test when it is not exposed, listing the series of
    /// the same metric that are, so that a misspelt label is not read as zero.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| {
            let metric = series.split('{').next().unwrap_or(series);
            let similar: Vec<&str> = self
                .series
                .iter()
                .map(|(name, _)| name.as_str())
                .filter(|name| name.split('{').next() == Some(metric))
                .collect();
            panic!("no series {series} in /metrics; series of {metric}: {similar:?}")
        })
    }
}

//! An OTLP/HTTP collector for the tests: it decodes the real protobuf
//! (`opentelemetry-proto`) and keeps the spans, or misbehaves on purpose.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the collector answers an export.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// 200, spans kept.
    Accept,
    /// 500, spans dropped.
    Fail,
    /// Waits this long before answering 200.
    Slow(Duration),
}

/// A collector on a port of its own; stops with the test's runtime.
pub struct Collector {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    exports: Arc<Mutex<u64>>,
}

impl Collector {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let exports = Arc::new(Mutex::new(0));
        let (kept, counted) = (Arc::clone(&spans), Arc::clone(&exports));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, counted) = (Arc::clone(&kept), Arc::clone(&counted));
                tokio::spawn(serve(stream, behaviour, kept, counted));
            }
        });
        Self {
            endpoint,
            spans,
            exports,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Export requests received, whatever the answer.
    pub fn exports(&self) -> u64 {
        *self.exports.lock().unwrap()
    }
}

/// Answers the export requests of one connection (HTTP/1.1, kept alive).
async fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    spans: Arc<Mutex<Vec<Span>>>,
    exports: Arc<Mutex<u64>>,
) {
    let mut buffer = Vec::new();
    loop {
        let Some(head_end) = read_until_head(&mut stream, &mut buffer).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buffer.len() < body_start + length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer[body_start..body_start + length].to_vec();
        buffer.drain(..body_start + length);
        *exports.lock().unwrap() += 1;
        let status = match behaviour {
            Behaviour::Accept => {
                let request = ExportTraceServiceRequest::decode(body.as_slice())
                    .expect("an OTLP protobuf export request");
                let mut kept = spans.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        kept.extend(scope.spans);
                    }
                }
                "200 OK"
            }
            Behaviour::Fail => "500 Internal Server Error",
            Behaviour::Slow(pause) => {
                tokio::time::sleep(pause).await;
                "200 OK"
            }
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads until `buffer` holds a whole request head; its length, or `None` at the end.
async fn read_until_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at);
        }
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A span's attribute, as text (strings as they are, numbers and booleans printed).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|value| match value {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

/// Lowercase hex, as `traceparent` writes ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! The admin endpoint: `GET /metrics` (Prometheus text of every component's counters,
//! including the Kinesis source's per-shard series and each transform's component
//! generation), `GET /health`, and `POST /reload` (look at every transform's component
//! file now and hot-swap a new version in, as SIGHUP does).
//!
//! Off unless the pipeline has an `[api]` table; it listens on 127.0.0.1 by default.
//! Served by hyper on the process's runtime: connections are answered concurrently (at
//! most [`MAX_CONNECTIONS`] at once), a request's line and headers are bounded
//! ([`MAX_REQUEST_BYTES`], answered `431` and counted as `request_too_large`) and must
//! arrive within [`HEADER_TIMEOUT`].

use crate::control::Control;
use crate::metrics::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for the admin endpoint: {error}")]
pub struct ApiError {
    /// The configured address.
    pub address: SocketAddr,
    /// What the bind said.
    #[source]
    pub error: std::io::Error,
}

/// Most bytes of a request's line and headers together; a longer request is refused.
pub const MAX_REQUEST_BYTES: u64 = 16 << 10;
/// Most connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts serving `metrics` on `address`; returns the bound address (useful with port 0).
pub fn serve(
    address: SocketAddr,
    metrics: Metrics,
    reload: Arc<Control>,
) -> Result<SocketAddr, ApiError> {
    let runtime = crate::aws::runtime();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(address))
        .map_err(|error| ApiError { address, error })?;
    let bound = listener
        .local_addr()
        .map_err(|error| ApiError { address, error })?;
    runtime.spawn(accept(listener, metrics, reload));
    tracing::info!(message = "Admin endpoint listening.", address = %bound);
    Ok(bound)
}

/// Accepts connections until the process ends, each served on its own task.
async fn accept(listener: tokio::net::TcpListener, metrics: Metrics, reload: Arc<Control>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(message = "Admin connection not accepted.", %error);
                continue;
            }
        };
        let (metrics, reload) = (metrics.clone(), reload.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request| {
                let answer = answer(&request, &metrics, &reload);
                async move { Ok::<_, Infallible>(answer) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES as usize)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                if error.is_parse_too_large() {
                    metrics.component("api").error("request_too_large", 1);
                }
                tracing::debug!(message = "Admin request failed.", %error);
            }
            drop(slot);
        });
    }
}

/// The `/health` answer: unhealthy (503) while a component retries a failed write.
fn health(metrics: &Metrics) -> (StatusCode, String) {
    let retrying: Vec<String> = metrics
        .snapshot()
        .into_iter()
        .filter(|(_, totals)| {
            totals
                .gauges
                .get("component_retrying")
                .copied()
                .unwrap_or(0)
                > 0
        })
        .map(|(id, _)| id)
        .collect();
    if retrying.is_empty() {
        (StatusCode::OK, "{\"ok\":true}\n".into())
    } else {
        let body = serde_json::json!({"ok": false, "retrying": retrying});
        (StatusCode::SERVICE_UNAVAILABLE, format!("{body}\n"))
    }
}

fn answer(
    request: &Request<Incoming>,
    metrics: &Metrics,
    reload: &Control,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render_prometheus(),
        ),
        (&Method::GET, "/health") => {
            let (status, body) = health(metrics);
            (status, "application/json", body)
        }
        (&Method::POST, "/reload") => {
            reload.request_reload();
            (
                StatusCode::ACCEPTED,
                "application/json",
                "{\"reload\":\"requested\"}\n".into(),
            )
        }
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(address: SocketAddr, path: &str) -> String {
        request(address, "GET", path)
    }

    fn request(address: SocketAddr, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_metrics_with_shard_series_and_health() {
        let metrics = Metrics::default();
        let source = metrics.component("flows");
        source.received(3);
        source.shard_count("kinesis_shard_records_total", "shardId-000000000001", 2);
        source.shard_gauge("kinesis_millis_behind_latest", "shardId-000000000001", 1500);
        let reload = Arc::new(Control::default());
        let address = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            reload.clone(),
        )
        .unwrap();
        let text = get(address, "/metrics");
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("component_received_events_total{component_id=\"flows\"} 3"));
        assert!(text.contains("# TYPE kinesis_millis_behind_latest gauge"));
        assert!(text.contains(
            "kinesis_millis_behind_latest{component_id=\"flows\",shard_id=\"shardId-000000000001\"} 1500"
        ));
        assert!(text.contains(
            "kinesis_shard_records_total{component_id=\"flows\",shard_id=\"shardId-000000000001\"} 2"
        ));
        assert!(get(address, "/health").contains("{\"ok\":true}"));
        metrics.component("out").gauge("component_retrying", 1);
        let unhealthy = get(address, "/health");
        assert!(unhealthy.starts_with("HTTP/1.1 503"), "{unhealthy}");
        assert!(unhealthy.contains("\"retrying\":[\"out\"]"), "{unhealthy}");
        metrics.component("out").gauge("component_retrying", 0);
        assert!(get(address, "/health").starts_with("HTTP/1.1 200"));
        let huge = format!("/{}", "x".repeat(MAX_REQUEST_BYTES as usize));
        assert!(get(address, &huge).starts_with("HTTP/1.1 431"));
        assert!(
            get(address, "/health").starts_with("HTTP/1.1 200"),
            "still serving"
        );
        assert!(get(address, "/nope").starts_with("HTTP/1.1 404"));
        assert_eq!(reload.reloads(), 0);
        assert!(request(address, "POST", "/reload").starts_with("HTTP/1.1 202"));
        assert_eq!(reload.reloads(), 1);
    }

    #[test]
    fn a_slow_client_holds_up_no_other() {
        let metrics = Metrics::default();
        let address = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics,
            Arc::new(Control::default()),
        )
        .unwrap();
        // Connected, half a request sent, nothing more: served beside the others.
        let mut idle = TcpStream::connect(address).unwrap();
        write!(idle, "GET /metr").unwrap();
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        write!(stream, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

//! The admin endpoint: `GET /metrics` (Prometheus text of every component's counters,
//! including the Kinesis source's per-shard series and each transform's component
//! generation), `GET /health`, and `POST /reload` (look at every transform's component
//! file now and hot-swap a new version in, as SIGHUP does).
//!
//! Off unless the pipeline has an `[api]` table; it listens on 127.0.0.1 by default.
//! One small thread answers requests one at a time: scrapes are rare and cheap.

use crate::metrics::Metrics;
use crate::transforms::wasm::swap::ReloadRequests;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for the admin endpoint: {error}")]
pub struct ApiError {
    /// The configured address.
    pub address: SocketAddr,
    /// What the bind said.
    pub error: std::io::Error,
}

/// Starts serving `metrics` on `address`; returns the bound address (useful with port 0).
pub fn serve(
    address: SocketAddr,
    metrics: Metrics,
    reload: Arc<ReloadRequests>,
) -> Result<SocketAddr, ApiError> {
    let listener = TcpListener::bind(address).map_err(|error| ApiError { address, error })?;
    let bound = listener
        .local_addr()
        .map_err(|error| ApiError { address, error })?;
    std::thread::Builder::new()
        .name("admin-api".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(error) = answer(stream, &metrics, &reload) {
                    tracing::debug!(message = "Admin request failed.", %error);
                }
            }
        })
        .map_err(|error| ApiError { address, error })?;
    tracing::info!(message = "Admin endpoint listening.", address = %bound);
    Ok(bound)
}

/// Most bytes of a request's line and headers together; a longer request is refused.
pub const MAX_REQUEST_BYTES: u64 = 16 << 10;

/// The `/health` answer: unhealthy (503) while a component retries a failed write.
fn health(metrics: &Metrics) -> (&'static str, String) {
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
        ("200 OK", "{\"ok\":true}\n".into())
    } else {
        let body = serde_json::json!({"ok": false, "retrying": retrying});
        ("503 Service Unavailable", format!("{body}\n"))
    }
}

fn answer(stream: TcpStream, metrics: &Metrics, reload: &ReloadRequests) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // A request larger than the bound is cut there and refused: memory never follows it.
    let mut reader = BufReader::new(std::io::Read::take(stream.try_clone()?, MAX_REQUEST_BYTES));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers: nothing in them matters here.
    let mut header = String::new();
    let mut complete = request_line.ends_with('\n');
    while complete {
        header.clear();
        if reader.read_line(&mut header)? == 0 || !header.ends_with('\n') {
            complete = false;
        } else if header.len() <= 2 {
            break;
        }
    }
    if !complete {
        metrics.component("api").error("request_too_large", 1);
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        // The answer first, then what the client still sends is read and thrown away
        // (a bounded amount), so closing does not reset the connection under it.
        stream.shutdown(std::net::Shutdown::Write)?;
        std::io::copy(
            &mut std::io::Read::take(&mut stream, 4 * MAX_REQUEST_BYTES),
            &mut std::io::sink(),
        )?;
        return Ok(());
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics.render_prometheus(),
        ),
        ("GET", "/health") => {
            let (status, body) = health(metrics);
            (status, "application/json", body)
        }
        ("POST", "/reload") => {
            reload.request();
            (
                "202 Accepted",
                "application/json",
                "{\"reload\":\"requested\"}\n".into(),
            )
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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
        let reload = Arc::new(ReloadRequests::default());
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
        assert_eq!(reload.count(), 0);
        assert!(request(address, "POST", "/reload").starts_with("HTTP/1.1 202"));
        assert_eq!(reload.count(), 1);
    }
}

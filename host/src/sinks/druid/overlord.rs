//! Submitting the supervisor spec to a Druid Overlord: HTTP or HTTPS through hyper and
//! rustls (the client stack the AWS SDK already brings, with the system's root
//! certificates), following a standby Overlord's redirects to the leader, with a
//! deadline and a bound on the answer read.

use super::SpecError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How many redirects (a standby Overlord pointing at the leader) [`submit`] follows.
const MAX_REDIRECTS: usize = 3;
/// How long the whole submission may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of an answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why the spec could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum OverlordError {
    /// No spec can be derived from the sink's settings.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The URL does not parse.
    #[error("`{url}`: {error}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        error: hyper::http::uri::InvalidUri,
    },
    /// TLS could not be set up.
    #[error("TLS setup: {0}")]
    Tls(#[source] rustls::Error),
    /// The request could not be built (a bad header value, an unusable URL).
    #[error("{url}: {error}")]
    Build {
        /// The URL.
        url: Uri,
        /// Why.
        #[source]
        error: hyper::http::Error,
    },
    /// The request failed on the way (connection refused, TLS, reset).
    #[error("{url}: {error}")]
    Request {
        /// The URL.
        url: Uri,
        /// Why.
        #[source]
        error: Box<hyper_util::client::legacy::Error>,
    },
    /// The answer's body could not be read (or was over the size bound).
    #[error("{url}: reading the answer: {error}")]
    Answer {
        /// The URL.
        url: Uri,
        /// Why.
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer in time.
    #[error("no answer from the Overlord within {}s", TIMEOUT.as_secs())]
    Timeout,
    /// The Overlord refused the spec.
    #[error("the Overlord answered `{status}`: {body}")]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its answer.
        body: String,
    },
    /// A redirect without a usable `Location`.
    #[error("the Overlord answered `{status}` without a usable Location")]
    NoLocation {
        /// Its status.
        status: StatusCode,
    },
    /// Redirects without end.
    #[error("more than {MAX_REDIRECTS} redirects from the Overlord")]
    TooManyRedirects,
}

/// POSTs `spec` to `<overlord>/druid/indexer/v1/supervisor?skipRestartIfUnmodified=true`
/// (Druid 33+ then leaves an unchanged running supervisor alone, older versions ignore
/// the parameter), following a standby Overlord's redirect to the leader; returns the
/// status and body of the answer.
pub fn submit(overlord: &str, spec: &Value) -> Result<String, OverlordError> {
    let url = format!(
        "{}/druid/indexer/v1/supervisor?skipRestartIfUnmodified=true",
        overlord.trim_end_matches('/')
    );
    let url: Uri = url.parse().map_err(|error| OverlordError::Url {
        url: url.clone(),
        error,
    })?;
    let body = Bytes::from(spec.to_string());
    crate::aws::runtime().block_on(async {
        tokio::time::timeout(TIMEOUT, post_following_redirects(url, body))
            .await
            .unwrap_or(Err(OverlordError::Timeout))
    })
}

/// A client for http:// and https:// URLs, trusting the system's root certificates.
fn client()
-> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>, OverlordError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(OverlordError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn post_following_redirects(mut url: Uri, body: Bytes) -> Result<String, OverlordError> {
    let client = client()?;
    for _ in 0..=MAX_REDIRECTS {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|error| OverlordError::Build {
                url: url.clone(),
                error,
            })?;
        let answer = client
            .request(request)
            .await
            .map_err(|error| OverlordError::Request {
                url: url.clone(),
                error: Box::new(error),
            })?;
        let (status, version) = (answer.status(), answer.version());
        if status.is_redirection() {
            url = answer
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|location| location.to_str().ok())
                .and_then(|location| resolve(&url, location))
                .ok_or(OverlordError::NoLocation { status })?;
            continue;
        }
        let bytes = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| OverlordError::Answer {
                url: url.clone(),
                error,
            })?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        return if status.is_success() {
            Ok(format!("{version:?} {status} {text}"))
        } else {
            Err(OverlordError::Refused { status, body: text })
        };
    }
    Err(OverlordError::TooManyRedirects)
}

/// A `Location` (absolute, or a path on the same host) against the URL it answered.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(location.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn submit_follows_a_standby_overlords_redirect() {
        use std::io::{BufRead, Read, Write};
        let leader = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let standby = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let leader_url = format!("http://{}", leader.local_addr().unwrap());
        let serve = |listener: std::net::TcpListener, answer: String| {
            std::thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = n.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                write!(&stream, "{answer}").unwrap();
                request_line
            })
        };
        let standby_answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {leader_url}/druid/indexer/v1/supervisor?skipRestartIfUnmodified=true\r\nContent-Length: 0\r\n\r\n"
        );
        let at_standby = serve(standby.try_clone().unwrap(), standby_answer);
        let at_leader = serve(
            leader,
            "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"id\":1}".into(),
        );
        let answer = submit(
            &format!("http://{}", standby.local_addr().unwrap()),
            &json!({"type": "kinesis"}),
        )
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        for request in [at_standby.join().unwrap(), at_leader.join().unwrap()] {
            assert_eq!(
                request,
                "POST /druid/indexer/v1/supervisor?skipRestartIfUnmodified=true HTTP/1.1\r\n"
            );
        }
    }
}

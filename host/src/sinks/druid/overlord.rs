//! Submitting the supervisor spec to a Druid Overlord.

use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// How many redirects (a standby Overlord pointing at the leader) [`submit`] follows.
const MAX_REDIRECTS: usize = 3;

/// POSTs `spec` to `<overlord>/druid/indexer/v1/supervisor?skipRestartIfUnmodified=true`
/// (plain HTTP/1.1; Druid 33+ then leaves an unchanged running supervisor alone, older
/// versions ignore the parameter), following a standby Overlord's redirect to the
/// leader; returns the status line and body, or why it failed.
pub fn submit(overlord: &str, spec: &Value) -> Result<String, String> {
    let body = spec.to_string();
    let mut url = format!(
        "{}/druid/indexer/v1/supervisor?skipRestartIfUnmodified=true",
        overlord.trim_end_matches('/')
    );
    for _ in 0..=MAX_REDIRECTS {
        let answer = post_json(&url, &body)?;
        let status = answer.lines().next().unwrap_or_default().to_string();
        let code = status.split_whitespace().nth(1).unwrap_or_default();
        let (head, reply) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        if matches!(code, "301" | "302" | "307" | "308") {
            let location = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("location")
                        .then(|| value.trim().to_string())
                })
                .ok_or_else(|| format!("the Overlord answered `{status}` without a Location"))?;
            url = if location.starts_with("http") {
                location
            } else {
                let (scheme_host, _) = split_url(&url)?;
                format!("{scheme_host}{location}")
            };
            continue;
        }
        let reply = reply.trim();
        return if code.starts_with('2') {
            Ok(format!("{status} {reply}"))
        } else {
            Err(format!("the Overlord answered `{status}`: {reply}"))
        };
    }
    Err(format!(
        "more than {MAX_REDIRECTS} redirects from the Overlord"
    ))
}

/// `http://host:port` and the path (with its query) of a plain-HTTP URL.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("`{url}`: only http:// is supported here; submit over TLS with `flowenrich druid-spec PIPELINE.toml | curl -X POST -H 'Content-Type: application/json' -d @- 'https://.../druid/indexer/v1/supervisor?skipRestartIfUnmodified=true'`")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    Ok((format!("http://{authority}"), path.to_string()))
}

/// One POST of a JSON `body` to `url`; the whole answer.
fn post_json(url: &str, body: &str) -> Result<String, String> {
    use std::io::Read;
    let (scheme_host, path) = split_url(url)?;
    let authority = scheme_host.trim_start_matches("http://");
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    use std::net::ToSocketAddrs;
    let resolved = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address}: no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&resolved, Duration::from_secs(10))
        .map_err(|e| format!("{address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // The answer is small; a bound keeps a misbehaving server from growing it.
    let mut answer = String::new();
    stream
        .take(1 << 20)
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn submit_follows_a_standby_overlords_redirect() {
        use std::io::{BufRead, Read};
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

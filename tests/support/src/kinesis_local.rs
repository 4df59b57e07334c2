//! A real local Kinesis for tests and benchmarks: npm `kinesis-local` (kinesis-mock),
//! installed by `scripts/test`, started on 127.0.0.1 with free ports and killed when
//! dropped. Shared by the integration tests and the benchmarks.

use aws_sdk_kinesis::primitives::Blob;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support/ is two levels down")
        .to_path_buf()
}

/// Obviously fake credentials for the local implementation (it checks none).
pub const FAKE_KEY_ID: &str = "local-test-key";
/// See [`FAKE_KEY_ID`].
pub const FAKE_SECRET: &str = "local-test-secret";

/// One local Kinesis at a time in this process: the tests that start one run many
/// processes each, and two at once on this 2-core machine made startups and timings
/// miss their deadlines.
static BUSY: std::sync::Mutex<Option<(std::thread::ThreadId, usize)>> = std::sync::Mutex::new(None);
static FREE: std::sync::Condvar = std::sync::Condvar::new();

/// This test's turn with a local Kinesis; the next one's starts when it is dropped. A
/// test that runs a second local Kinesis beside its first (an endpoint that comes up
/// late) takes the turn again on its own thread.
struct Turn;

impl Turn {
    fn take() -> Turn {
        let me = std::thread::current().id();
        // A test that failed during its turn does not block the others.
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match &mut *busy {
                None => {
                    *busy = Some((me, 1));
                    return Turn;
                }
                Some((owner, count)) if *owner == me => {
                    *count += 1;
                    return Turn;
                }
                Some(_) => busy = FREE.wait(busy).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, count)) = &mut *busy {
            *count -= 1;
            if *count == 0 {
                *busy = None;
                FREE.notify_one();
            }
        }
    }
}

/// A local Kinesis listening on 127.0.0.1; killed when dropped.
pub struct KinesisLocal {
    child: Child,
    /// The file it keeps its streams in, when started with a directory.
    persisted: Option<PathBuf>,
    _turn: Turn,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_kinesis::Client,
}

/// A port free on 127.0.0.1 now, below the kernel's range of ephemeral ports when there
/// is room: a server started there later (or stopped and started again) never finds it
/// taken by the local end of some outgoing connection, and a client that keeps
/// reconnecting while the server is down never connects to itself on it (a TCP
/// simultaneous open when the kernel happens to pick that same port as the source).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    const LOWEST: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOWEST + 1_000 {
        let span = u64::from(ephemeral_low - LOWEST);
        let seed = u64::from(std::process::id()) << 32
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos().into());
        for _ in 0..1_000 {
            // A step of a 64-bit mix (splitmix64) per draw.
            let mut z = seed.wrapping_add(
                DRAWS
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let port = LOWEST + ((z ^ (z >> 31)) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `scripts/test` installs the npm packages the tests start.
pub fn npm_dir() -> PathBuf {
    std::env::var_os("FLOWENRICH_NPM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/flowenrich/npm")
        })
}

impl KinesisLocal {
    /// Starts kinesis-mock on free ports of 127.0.0.1 and waits until it answers.
    pub fn start() -> KinesisLocal {
        KinesisLocal::start_on(free_port(), None)
    }

    /// Starts kinesis-mock on `port` of 127.0.0.1; with `persist_dir`, it keeps its
    /// streams there (every 100 ms) and loads them again when started on the same dir.
    pub fn start_on(port: u16, persist_dir: Option<&Path>) -> KinesisLocal {
        let main = npm_dir().join("node_modules/kinesis-local/main.js");
        assert!(
            main.exists(),
            "{} is missing: run scripts/test, which installs kinesis-local",
            main.display()
        );
        let turn = Turn::take();
        let spawn = || {
            let mut command = Command::new("node");
            if let Some(dir) = persist_dir {
                command
                    .env("SHOULD_PERSIST_DATA", "true")
                    .env("LOAD_DATA_IF_EXISTS", "true")
                    .env("PERSIST_PATH", dir)
                    .env("PERSIST_INTERVAL", "100ms");
            }
            command
                // It reads its server.json from the working directory.
                .current_dir(main.parent().expect("package directory"))
                .arg("-r")
                .arg(repo_root().join("tests/kinesis/bind-localhost.cjs"))
                .arg(&main)
                .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
                .env("KINESIS_MOCK_TLS_PORT", free_port().to_string())
                .env("LOG_LEVEL", "WARN")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start node (Node.js is needed for the local Kinesis)")
        };
        let mut child = spawn();
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "kinesis-local did not start");
            // It exits when a port is taken: a port given back by a stopped instance
            // (restarted on the same address) can meanwhile be the local end of some
            // other process's connection. Start it again once that is gone.
            if let Ok(Some(_)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(500));
                child = spawn();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                FAKE_KEY_ID,
                FAKE_SECRET,
                None,
                None,
                "local",
            ))
            .build();
        KinesisLocal {
            child,
            persisted: persist_dir.map(|dir| dir.join("kinesis-data.json")),
            _turn: turn,
            endpoint,
            runtime,
            client: aws_sdk_kinesis::Client::from_conf(config),
        }
    }

    /// Creates a stream and waits until it is active.
    pub fn create_stream(&self, name: &str, shards: i32) {
        self.runtime.block_on(async {
            self.client
                .create_stream()
                .stream_name(name)
                .shard_count(shards)
                .send()
                .await
                .unwrap();
        });
        self.wait_active(name);
    }

    /// Reshards to `shards` (a split or a merge) and waits until the stream is active.
    pub fn update_shard_count(&self, name: &str, shards: i32) {
        self.runtime.block_on(async {
            self.client
                .update_shard_count()
                .stream_name(name)
                .target_shard_count(shards)
                .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
                .send()
                .await
                .unwrap();
        });
        std::thread::sleep(Duration::from_millis(200));
        self.wait_active(name);
    }

    fn wait_active(&self, name: &str) {
        self.runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let described = self
                    .client
                    .describe_stream_summary()
                    .stream_name(name)
                    .send()
                    .await
                    .unwrap();
                let status = described
                    .stream_description_summary()
                    .map(|d| d.stream_status().clone());
                if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "stream {name} never became active"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// Puts one record of text.
    pub fn put(&self, stream: &str, key: &str, data: &str) {
        self.put_bytes(stream, key, data.as_bytes().to_vec());
    }

    /// Every record in the stream (each one JSON object), with its shard id.
    pub fn read_all(&self, stream: &str) -> Vec<(String, serde_json::Value)> {
        self.read_all_raw(stream)
            .into_iter()
            .map(|(shard, data)| (shard, serde_json::from_slice(&data).unwrap()))
            .collect()
    }

    /// Every record in the stream as text, without its trailing newline.
    pub fn read_all_text(&self, stream: &str) -> Vec<String> {
        self.read_all_raw(stream)
            .into_iter()
            .map(|(_, data)| String::from_utf8(data).unwrap().trim_end().to_string())
            .collect()
    }

    /// Every record in the stream, with its shard id.
    fn read_all_raw(&self, stream: &str) -> Vec<(String, Vec<u8>)> {
        self.runtime.block_on(async {
            let shards = self
                .client
                .list_shards()
                .stream_name(stream)
                .send()
                .await
                .unwrap();
            let mut out = Vec::new();
            for shard in shards.shards() {
                let mut iterator = self
                    .client
                    .get_shard_iterator()
                    .stream_name(stream)
                    .shard_id(shard.shard_id())
                    .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                    .send()
                    .await
                    .unwrap()
                    .shard_iterator()
                    .map(str::to_string);
                while let Some(it) = iterator {
                    let page = self
                        .client
                        .get_records()
                        .shard_iterator(it)
                        .send()
                        .await
                        .unwrap();
                    for record in page.records() {
                        out.push((
                            shard.shard_id().to_string(),
                            record.data().as_ref().to_vec(),
                        ));
                    }
                    if page.records().is_empty() {
                        break;
                    }
                    iterator = page.next_shard_iterator().map(str::to_string);
                }
            }
            out
        })
    }

    /// Puts one record of raw bytes; returns its shard id and sequence number.
    pub fn put_bytes(&self, stream: &str, key: &str, data: Vec<u8>) -> (String, String) {
        self.runtime.block_on(async {
            let put = self
                .client
                .put_record()
                .stream_name(stream)
                .partition_key(key)
                .data(Blob::new(data))
                .send()
                .await
                .unwrap();
            (
                put.shard_id().to_string(),
                put.sequence_number().to_string(),
            )
        })
    }
}

impl KinesisLocal {
    /// Puts one record on the shard whose hash range holds `hash` (a decimal 128-bit
    /// number).
    pub fn put_bytes_to_hash(&self, stream: &str, hash: &str, data: Vec<u8>) {
        self.runtime.block_on(async {
            self.client
                .put_record()
                .stream_name(stream)
                .partition_key("k")
                .explicit_hash_key(hash)
                .data(Blob::new(data))
                .send()
                .await
                .unwrap();
        })
    }

    /// Puts many records with PutRecords (500 per call), resending any the stream
    /// rejected, until all are in.
    pub fn put_many(&self, stream: &str, records: &[(String, Vec<u8>)]) {
        use aws_sdk_kinesis::types::PutRecordsRequestEntry;
        self.runtime.block_on(async {
            for chunk in records.chunks(500) {
                let mut pending: Vec<&(String, Vec<u8>)> = chunk.iter().collect();
                while !pending.is_empty() {
                    let entries = pending
                        .iter()
                        .map(|(key, data)| {
                            PutRecordsRequestEntry::builder()
                                .partition_key(key)
                                .data(Blob::new(data.clone()))
                                .build()
                                .unwrap()
                        })
                        .collect();
                    let put = self
                        .client
                        .put_records()
                        .stream_name(stream)
                        .set_records(Some(entries))
                        .send()
                        .await
                        .unwrap();
                    pending = pending
                        .into_iter()
                        .zip(put.records())
                        .filter(|(_, result)| result.error_code().is_some())
                        .map(|(record, _)| record)
                        .collect();
                    if !pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }

    /// Sets the environment a `flowenrich` process needs to reach this Kinesis: the
    /// fake credentials, a region, and no instance metadata or profile lookups.
    pub fn aws_env(command: &mut Command) {
        command
            .env("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE");
    }
}

/// A local Kinesis that is not running yet but already holds a stream: an endpoint that
/// comes up later with its stream in place.
pub struct Later {
    /// Its port on 127.0.0.1.
    pub port: u16,
    store: tempfile::TempDir,
}

impl Later {
    /// Creates `stream` (with `shards`) on a local Kinesis kept in a directory, and stops
    /// it.
    pub fn with_stream(stream: &str, shards: i32) -> Later {
        let store = tempfile::tempdir().unwrap();
        let port = free_port();
        let kinesis = KinesisLocal::start_on(port, Some(store.path()));
        kinesis.create_stream(stream, shards);
        // It writes its state every 100 ms.
        std::thread::sleep(std::time::Duration::from_millis(500));
        drop(kinesis);
        Later { port, store }
    }

    /// `http://127.0.0.1:<port>`, before it runs.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Brings it up, with its stream.
    pub fn start(&self) -> KinesisLocal {
        KinesisLocal::start_on(self.port, Some(self.store.path()))
    }
}

impl Drop for KinesisLocal {
    fn drop(&mut self) {
        if let Some(file) = &self.persisted {
            self.freeze_with_whole_file(file);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KinesisLocal {
    /// Stops the process (SIGSTOP) at a moment its state file is whole. It rewrites the
    /// file in place (truncate, then write) every 100 ms, and a kill between the two
    /// leaves a file it refuses to start from.
    fn freeze_with_whole_file(&self, file: &Path) {
        let pid = self.child.id().to_string();
        let send = |signal: &str| {
            let _ = Command::new("kill").arg(signal).arg(&pid).status();
        };
        for _ in 0..200 {
            send("-STOP");
            let whole = std::fs::read(file)
                .map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).is_ok())
                // Not written yet: nothing to load, nothing to tear.
                .unwrap_or(true);
            if whole {
                return;
            }
            send("-CONT");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Not a panic: this runs in drop, maybe while a test already unwinds.
        eprintln!("{} stayed torn for a second", file.display());
    }
}

/// A proxy on 127.0.0.1 in front of a local Kinesis that makes PutRecords partly fail,
/// as a real stream does under throttling: in every PutRecords call of two or more
/// records, the first record is not forwarded and is answered with
/// `ProvisionedThroughputExceededException`; everything else passes through unchanged.
/// (The local implementation checks no signatures, so the rewritten body is accepted.)
pub struct PartialFailures {
    /// `http://127.0.0.1:<port>` of the proxy.
    pub endpoint: String,
    /// How many records were failed so far.
    pub failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl PartialFailures {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:<port>`).
    pub fn start(upstream: &str) -> PartialFailures {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = failed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, counter) = (upstream.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = proxy_connection(client, &upstream, &counter);
                });
            }
        });
        PartialFailures { endpoint, failed }
    }
}

/// One HTTP/1.1 message: head lines and body (by `Content-Length`).
fn read_message(
    reader: &mut impl std::io::BufRead,
) -> std::io::Result<Option<(Vec<String>, Vec<u8>)>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let length = head
        .iter()
        .find_map(|h| {
            let (name, value) = h.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn write_message(
    out: &mut impl std::io::Write,
    head: &[String],
    body: &[u8],
) -> std::io::Result<()> {
    for line in head {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            write!(out, "{line}\r\n")?;
        }
    }
    write!(out, "content-length: {}\r\n\r\n", body.len())?;
    out.write_all(body)?;
    out.flush()
}

fn proxy_connection(
    client: std::net::TcpStream,
    upstream: &str,
    failed: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use serde_json::Value;
    let server = TcpStream::connect(upstream)?;
    let mut from_client = std::io::BufReader::new(client.try_clone()?);
    let mut from_server = std::io::BufReader::new(server.try_clone()?);
    let (mut to_client, mut to_server) = (client, server);
    while let Some((head, mut body)) = read_message(&mut from_client)? {
        let put_records = head
            .iter()
            .any(|h| h.eq_ignore_ascii_case("x-amz-target: kinesis_20131202.putrecords"));
        let mut request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let inject = put_records
            && request["Records"]
                .as_array()
                .is_some_and(|records| records.len() >= 2);
        if inject {
            request["Records"].as_array_mut().unwrap().remove(0);
            body = serde_json::to_vec(&request).unwrap();
        }
        write_message(&mut to_server, &head, &body)?;
        let Some((answer_head, answer)) = read_message(&mut from_server)? else {
            return Ok(());
        };
        let answer = match serde_json::from_slice::<Value>(&answer) {
            Ok(mut reply) if inject && reply["Records"].is_array() => {
                reply["Records"].as_array_mut().unwrap().insert(
                    0,
                    serde_json::json!({
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded for shard (injected by the test proxy)"
                    }),
                );
                let count = reply["FailedRecordCount"].as_u64().unwrap_or(0) + 1;
                reply["FailedRecordCount"] = count.into();
                failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                serde_json::to_vec(&reply).unwrap()
            }
            _ => answer,
        };
        write_message(&mut to_client, &answer_head, &answer)?;
    }
    Ok(())
}

/// A proxy on 127.0.0.1 in front of a local Kinesis that loses answers: the first
/// `losses` PutRecords calls reach the stream and are applied, but the proxy cuts the
/// connection instead of answering, as a timeout after acceptance looks to a client.
/// Everything else passes through.
pub struct LostAnswers {
    /// `http://127.0.0.1:<port>` of the proxy.
    pub endpoint: String,
    /// How many answers were lost so far.
    pub lost: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl LostAnswers {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:<port>`).
    pub fn start(upstream: &str, losses: usize) -> LostAnswers {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = lost.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, counter) = (upstream.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = lose_answers(client, &upstream, &counter, losses);
                });
            }
        });
        LostAnswers { endpoint, lost }
    }
}

fn lose_answers(
    client: std::net::TcpStream,
    upstream: &str,
    lost: &std::sync::atomic::AtomicUsize,
    losses: usize,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let server = TcpStream::connect(upstream)?;
    let mut from_client = std::io::BufReader::new(client.try_clone()?);
    let mut from_server = std::io::BufReader::new(server.try_clone()?);
    let (mut to_client, mut to_server) = (client, server);
    while let Some((head, body)) = read_message(&mut from_client)? {
        let put_records = head
            .iter()
            .any(|h| h.eq_ignore_ascii_case("x-amz-target: kinesis_20131202.putrecords"));
        write_message(&mut to_server, &head, &body)?;
        let Some((answer_head, answer)) = read_message(&mut from_server)? else {
            return Ok(());
        };
        if put_records
            && lost
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < losses).then_some(n + 1)
                })
                .is_ok()
        {
            // Applied, never answered.
            let _ = to_client.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        write_message(&mut to_client, &answer_head, &answer)?;
    }
    Ok(())
}

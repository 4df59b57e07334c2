//! A real local DynamoDB for tests: npm `dynalite`, installed by `scripts/test`, started
//! on 127.0.0.1 on a free port (in memory) and killed when dropped.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A local DynamoDB listening on 127.0.0.1; killed when dropped.
pub struct Dynalite {
    child: Option<Child>,
    port: u16,
    /// Where it keeps its tables (LevelDB), so that it can be stopped and started again
    /// with what it held; `None`: in memory.
    path: Option<std::path::PathBuf>,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_dynamodb::Client,
}

/// One lease row as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// `leaseKey`: the shard id.
    pub shard: String,
    /// `leaseOwner`.
    pub owner: Option<String>,
    /// `checkpoint`.
    pub checkpoint: String,
    /// `leaseCounter`.
    pub counter: u64,
    /// A `druid` sink's publication begun and not ended (a `publication_<sink>`).
    pub publishing: bool,
}

impl Dynalite {
    /// Starts dynalite on a free port of 127.0.0.1, in memory, and waits until it
    /// answers.
    pub fn start() -> Dynalite {
        Dynalite::start_in(None)
    }

    /// As [`Dynalite::start`], keeping its tables in `path` when given (see
    /// [`Dynalite::stop`]).
    pub fn start_in(path: Option<&std::path::Path>) -> Dynalite {
        let port = crate::kinesis_local::free_port();
        let path = path.map(std::path::Path::to_path_buf);
        let child = spawn(port, path.as_deref());
        let endpoint = format!("http://127.0.0.1:{port}");
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                crate::kinesis_local::FAKE_KEY_ID,
                crate::kinesis_local::FAKE_SECRET,
                None,
                None,
                "local",
            ))
            .build();
        Dynalite {
            child: Some(child),
            port,
            path,
            endpoint,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: aws_sdk_dynamodb::Client::from_conf(config),
        }
    }

    /// Every lease of `table` (none while the table does not exist), by shard id.
    pub fn leases(&self, table: &str) -> Vec<LeaseRow> {
        self.runtime.block_on(async {
            let Ok(page) = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .send()
                .await
            else {
                return Vec::new();
            };
            let mut rows: Vec<LeaseRow> = page
                .items()
                .iter()
                .map(|item| {
                    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                    LeaseRow {
                        shard: text("leaseKey").unwrap(),
                        owner: text("leaseOwner"),
                        checkpoint: text("checkpoint").unwrap_or_default(),
                        counter: item
                            .get("leaseCounter")
                            .and_then(|v| v.as_n().ok())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0),
                        publishing: item.keys().any(|k| k.starts_with("publication_")),
                    }
                })
                .collect();
            rows.sort_by(|a, b| a.shard.cmp(&b.shard));
            rows
        })
    }
}

impl Dynalite {
    /// Stops it (an outage: connections are refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the tables it kept (see
    /// [`Dynalite::start_in`]).
    pub fn resume(&mut self) {
        assert!(
            self.path.is_some(),
            "only a dynalite with a path keeps its tables"
        );
        self.stop();
        self.child = Some(spawn(self.port, self.path.as_deref()));
    }
}

/// Runs dynalite on `port` (tables in `path`, or in memory) and waits until it answers.
fn spawn(port: u16, path: Option<&std::path::Path>) -> Child {
    let cli = crate::kinesis_local::npm_dir().join("node_modules/dynalite/cli.js");
    assert!(
        cli.exists(),
        "{} is missing: run scripts/test, which installs dynalite",
        cli.display()
    );
    let mut command = Command::new("node");
    command
        .arg(&cli)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--createTableMs", "0", "--deleteTableMs", "0"]);
    if let Some(path) = path {
        command.arg("--path").arg(path);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node (Node.js is needed for the local DynamoDB)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "dynalite did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for Dynalite {
    fn drop(&mut self) {
        self.stop();
    }
}

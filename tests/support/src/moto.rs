//! A real local EC2 API: `moto` in server mode (PyPI `moto[server]`, which `scripts/test`
//! installs into `~/.cache/flowenrich/python`), started on 127.0.0.1.

use crate::kinesis_local::{FAKE_KEY_ID, FAKE_SECRET, free_port};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/test` installs the Python packages the tests start.
pub fn python_dir() -> PathBuf {
    std::env::var_os("FLOWENRICH_PYTHON_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/flowenrich/python")
        })
}

/// A moto server on 127.0.0.1; killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    runtime: tokio::runtime::Runtime,
    /// An EC2 client of the server (region `us-east-1`).
    pub ec2: aws_sdk_ec2::Client,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto on a free port of 127.0.0.1 and waits until it answers.
    pub fn start() -> Moto {
        let port = free_port();
        let dir = python_dir();
        let path = match std::env::var_os("PYTHONPATH") {
            Some(old) => {
                let mut paths = vec![dir.clone()];
                paths.extend(std::env::split_paths(&old));
                std::env::join_paths(paths).expect("PYTHONPATH")
            }
            None => dir.clone().into_os_string(),
        };
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .env("PYTHONPATH", path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m moto.server (run scripts/test, which installs moto)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start: is moto[server] installed in {}? (scripts/test installs it)",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                FAKE_KEY_ID,
                FAKE_SECRET,
                None,
                None,
                "local",
            ))
            .build();
        Moto {
            child,
            endpoint,
            runtime,
            ec2: aws_sdk_ec2::Client::from_conf(config),
        }
    }

    /// Runs an EC2 call (or any future) to completion.
    pub fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }
}

//! Real local EC2, S3 and SQS APIs: `moto` in server mode (PyPI `moto[server]`, which `scripts/test`
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
    /// An S3 client of the server (path-style addressing).
    pub s3: aws_sdk_s3::Client,
    /// An SQS client of the server.
    pub sqs: aws_sdk_sqs::Client,
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
        let credentials =
            || aws_sdk_s3::config::Credentials::new(FAKE_KEY_ID, FAKE_SECRET, None, None, "local");
        let s3 = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .credentials_provider(credentials())
            .build();
        let sqs = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(credentials())
            .build();
        Moto {
            child,
            endpoint,
            runtime,
            ec2: aws_sdk_ec2::Client::from_conf(config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
        }
    }

    /// Runs an EC2 call (or any future) to completion.
    pub fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }
}

impl Moto {
    /// Creates bucket `bucket` and queue `queue`, with the bucket's `ObjectCreated`
    /// notifications sent to the queue; returns the queue's URL.
    pub fn bucket_notifying_queue(&self, bucket: &str, queue: &str) -> String {
        self.block_on(async {
            self.s3.create_bucket().bucket(bucket).send().await.unwrap();
            let url = self
                .sqs
                .create_queue()
                .queue_name(queue)
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap();
            let arn = self
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .unwrap()
                .attributes
                .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
                .clone();
            let queue = aws_sdk_s3::types::QueueConfiguration::builder()
                .queue_arn(arn)
                .events(aws_sdk_s3::types::Event::S3ObjectCreated)
                .build()
                .unwrap();
            self.s3
                .put_bucket_notification_configuration()
                .bucket(bucket)
                .notification_configuration(
                    aws_sdk_s3::types::NotificationConfiguration::builder()
                        .queue_configurations(queue)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            url
        })
    }

    /// Writes an object.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.block_on(
            self.s3
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(bytes.into())
                .send(),
        )
        .unwrap();
    }

    /// Messages in the queue: visible, and received but not deleted.
    pub fn queued(&self, url: &str) -> (u64, u64) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attributes = self
            .block_on(
                self.sqs
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send(),
            )
            .unwrap()
            .attributes
            .unwrap_or_default();
        let count = |name: A| {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            count(A::ApproximateNumberOfMessages),
            count(A::ApproximateNumberOfMessagesNotVisible),
        )
    }
}

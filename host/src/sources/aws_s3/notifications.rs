//! What an SQS message of S3 event notifications says: the objects created, plain or
//! wrapped by SNS or EventBridge, or the `s3:TestEvent` S3 sends when notifications are
//! set up.

use serde_json::Value;

/// One object a notification announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Bucket name.
    pub bucket: String,
    /// Object key (decoded).
    pub key: String,
    /// The object's ETag (quotes trimmed), when the notification says: with the bucket
    /// and key, its identity.
    pub etag: Option<String>,
    /// The object's version id, in a versioned bucket: what a read asks for, so that it
    /// reads the version announced even if the key was written again since.
    pub version_id: Option<String>,
    /// Size in bytes, when the notification says.
    pub size: Option<u64>,
}

/// What one message body means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Objects created.
    Objects(Vec<ObjectRef>),
    /// `s3:TestEvent`: nothing to read.
    Test,
    /// Events that are not object creations (`ObjectRemoved:*`, ...), by name.
    Other(Vec<String>),
}

/// Why a message body was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// Not JSON.
    #[error("message is not JSON: {0}")]
    Json(String),
    /// JSON, but not an S3 notification of any known shape.
    #[error("message is not an S3 event notification (plain, SNS or EventBridge)")]
    Shape,
}

/// Reads one SQS message body.
pub fn parse(body: &str) -> Result<Notification, NotificationError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| NotificationError::Json(e.to_string()))?;
    // SNS wraps the notification as a JSON string in `Message`.
    if value["Type"] == "Notification"
        && let Some(inner) = value["Message"].as_str()
    {
        return parse(inner);
    }
    if value["Event"] == "s3:TestEvent" {
        return Ok(Notification::Test);
    }
    if let Some(records) = value["Records"].as_array() {
        let mut objects = Vec::new();
        let mut other = Vec::new();
        for record in records {
            let name = record["eventName"].as_str().unwrap_or_default();
            if !name.starts_with("ObjectCreated:") {
                other.push(name.to_string());
                continue;
            }
            let s3 = &record["s3"];
            let (Some(bucket), Some(key)) =
                (s3["bucket"]["name"].as_str(), s3["object"]["key"].as_str())
            else {
                return Err(NotificationError::Shape);
            };
            objects.push(ObjectRef {
                bucket: bucket.to_string(),
                // S3 notifications URL-encode keys (a space as `+`).
                key: url_decode(key),
                etag: text(&s3["object"]["eTag"]).map(|e| bare_etag(&e).to_string()),
                version_id: text(&s3["object"]["versionId"]),
                size: s3["object"]["size"].as_u64(),
            });
        }
        return Ok(if objects.is_empty() {
            Notification::Other(other)
        } else {
            Notification::Objects(objects)
        });
    }
    // EventBridge: `detail-type` "Object Created", the object in `detail`.
    if value["source"] == "aws.s3" {
        let detail = &value["detail"];
        if value["detail-type"] != "Object Created" {
            let name = value["detail-type"].as_str().unwrap_or_default();
            return Ok(Notification::Other(vec![name.to_string()]));
        }
        let (Some(bucket), Some(key)) = (
            detail["bucket"]["name"].as_str(),
            detail["object"]["key"].as_str(),
        ) else {
            return Err(NotificationError::Shape);
        };
        return Ok(Notification::Objects(vec![ObjectRef {
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag: text(&detail["object"]["etag"]).map(|e| bare_etag(&e).to_string()),
            version_id: text(&detail["object"]["version-id"]),
            size: detail["object"]["size"].as_u64(),
        }]));
    }
    Err(NotificationError::Shape)
}

fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// Decodes `%XX` escapes and `+` (a space), as S3 encodes keys in notifications; a
/// malformed escape is kept as it is.
pub fn url_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An ETag without the quotes S3 puts around it in some answers and not in others, so
/// that a notification, a listing and a claim name an object alike.
pub fn bare_etag(etag: &str) -> &str {
    etag.trim_matches('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"flow-logs"},"object":{"key":"AWSLogs/123/vpcflowlogs/us-east-1/2026/12/07/a+b%3Dc.log.gz","size":1024,"eTag":"0123abc","sequencer":"0A1B"}}}]}"#;

    #[test]
    fn plain_sns_and_eventbridge_notifications_name_their_objects() {
        let want = Notification::Objects(vec![ObjectRef {
            bucket: "flow-logs".into(),
            key: "AWSLogs/123/vpcflowlogs/us-east-1/2026/12/07/a b=c.log.gz".into(),
            etag: Some("0123abc".into()),
            version_id: None,
            size: Some(1024),
        }]);
        assert_eq!(parse(PLAIN).unwrap(), want);
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "1", "Message": PLAIN});
        assert_eq!(parse(&sns.to_string()).unwrap(), want);
        let bridge = r#"{"version":"0","detail-type":"Object Created","source":"aws.s3","detail":{"bucket":{"name":"flow-logs"},"object":{"key":"k/x.log","size":5,"etag":"e1"}}}"#;
        assert_eq!(
            parse(bridge).unwrap(),
            Notification::Objects(vec![ObjectRef {
                bucket: "flow-logs".into(),
                key: "k/x.log".into(),
                etag: Some("e1".into()),
                version_id: None,
                size: Some(5),
            }])
        );
    }

    #[test]
    fn test_events_other_events_and_strangers() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-07T00:00:00.000Z","Bucket":"flow-logs","RequestId":"1","HostId":"2"}"#;
        assert_eq!(parse(test).unwrap(), Notification::Test);
        let removed = PLAIN.replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        assert_eq!(
            parse(&removed).unwrap(),
            Notification::Other(vec!["ObjectRemoved:Delete".into()])
        );
        assert!(matches!(parse("nope"), Err(NotificationError::Json(_))));
        assert_eq!(parse(r#"{"hello":1}"#), Err(NotificationError::Shape));
        let keyless = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}]}"#;
        assert_eq!(parse(keyless), Err(NotificationError::Shape));
    }

    #[test]
    fn quoted_and_bare_etags_name_one_object() {
        let quoted = PLAIN.replace(r#""eTag":"0123abc""#, r#""eTag":"\"0123abc\"""#);
        assert_ne!(quoted, PLAIN);
        assert_eq!(parse(&quoted).unwrap(), parse(PLAIN).unwrap());
        assert_eq!(
            crate::sources::aws_s3::claims::claim_key("b", "k", Some("\"0123abc\"")),
            crate::sources::aws_s3::claims::claim_key("b", "k", Some("0123abc"))
        );
    }

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(url_decode("a%20b+c%2Fd"), "a b c/d");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz%4"), "%zz%4");
        assert_eq!(url_decode("%C3%A9"), "é");
    }
}

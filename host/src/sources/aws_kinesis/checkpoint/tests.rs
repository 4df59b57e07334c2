//! The checkpoint store's tests.

use super::*;

#[test]
fn in_memory_positions_advance_per_generation() {
    let store = Checkpoints::in_memory();
    let stale = store.ack("s", 0, Some("5".into()), false);
    assert_eq!(store.in_flight(), 1);
    // The shard changes hands and is read again from "3": the earlier reading's
    // ack must not move the new reading's checkpoint.
    store.restart(
        "s",
        ShardCheckpoint {
            sequence: Some("3".into()),
            finished: false,
            ..Default::default()
        },
    );
    drop(stale);
    assert_eq!(store.in_flight(), 0);
    assert!(store.take_advanced().is_empty());
    assert_eq!(store.get("s").sequence.as_deref(), Some("3"));
    let a0 = store.ack("s", 0, Some("4".into()), false);
    let a1 = store.ack("s", 1, None, true);
    drop(a1);
    assert!(store.take_advanced().is_empty(), "batch 0 still in flight");
    drop(a0);
    assert_eq!(
        store.take_advanced(),
        vec![(
            "s".to_string(),
            ShardCheckpoint {
                sequence: Some("4".into()),
                finished: true,
                ..Default::default()
            }
        )]
    );
    assert!(store.take_advanced().is_empty());
    assert_eq!(store.in_flight(), 0);
}

#[test]
fn advances_only_over_an_unbroken_run_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp.json");
    let store = Checkpoints::open(&path).unwrap();
    let a0 = store.ack("s", 0, Some("10".into()), false);
    let a1 = store.ack("s", 1, Some("20".into()), false);
    let a2 = store.ack("s", 2, None, true);
    drop(a1);
    assert_eq!(
        store.get("s"),
        ShardCheckpoint::default(),
        "batch 0 still in flight"
    );
    drop(a2);
    assert_eq!(store.get("s").sequence, None);
    drop(a0);
    assert_eq!(
        store.get("s"),
        ShardCheckpoint {
            sequence: Some("20".into()),
            finished: true,
            ..Default::default()
        }
    );
    let reopened = Checkpoints::open(&path).unwrap();
    assert_eq!(reopened.get("s").sequence.as_deref(), Some("20"));
    assert!(reopened.get("s").finished);
    std::fs::write(&path, "nonsense").unwrap();
    assert!(matches!(
        Checkpoints::open(&path),
        Err(CheckpointError::Invalid { .. })
    ));
}

#[test]
fn a_publication_survives_a_crash_and_ends_at_its_covers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp.json");
    let store = Checkpoints::open(&path).unwrap();
    let publication = Publication {
        id: "d-1".into(),
        started_ms: 5,
        covers: [("s".to_string(), "20".to_string())].into(),
        rows: 2,
        chunks: 0,
    };
    let rows = vec!["{\"a\":1}".to_string(), "{\"a\":2}".to_string()];
    store
        .begin_publication("d", &Scope::Store, publication.clone(), &rows)
        .unwrap();
    assert_eq!(store.boundaries("s"), vec!["20".to_string()]);
    // A crash now: the store opened again knows the publication and its rows.
    let reopened = Checkpoints::open(&path).unwrap();
    assert_eq!(
        reopened.pending_publication("d", &Scope::Store).unwrap(),
        Some((publication, rows))
    );
    assert_eq!(reopened.published("s", "d"), None);
    reopened.end_publication("d", &Scope::Store).unwrap();
    assert_eq!(
        reopened.pending_publication("d", &Scope::Store).unwrap(),
        None
    );
    assert_eq!(reopened.published("s", "d").as_deref(), Some("20"));
    assert!(!dir.path().join("cp.json.d.d-1.publication").exists());
    let again = Checkpoints::open(&path).unwrap();
    assert_eq!(again.published("s", "d").as_deref(), Some("20"));
    assert_eq!(again.boundaries("s"), vec!["20".to_string()]);
    assert!(sequence_le("9", "10") && !sequence_le("10", "9") && sequence_le("10", "10"));
}

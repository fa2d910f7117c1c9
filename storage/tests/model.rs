//! The store against an in-memory model, with reopen ("reboot") steps mixed into random
//! operation sequences: after every reopen, what the store recovers must equal the model.
//! A clean reopen keeps the delivery marks as they were; one after a crash (flushed, but
//! not closed cleanly) brings every message back delivered.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use warren_storage::{Database, QueueRecord, Store, StoredMessage};

/// Opens `dir` and the store of vhost `/` in it.
fn open(dir: &std::path::Path) -> (Database, Store) {
    let db = Database::open(dir, "/").expect("open");
    let store = db.vhost("/").expect("vhost");
    (db, store)
}

#[derive(Debug, Clone)]
enum Op {
    Put { queue: u8, body: Vec<u8> },
    Deliver { queue: u8, nth: usize },
    Ack { queue: u8, nth: usize },
    Delete { queue: u8 },
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(queue, body)| Op::Put { queue, body }),
        2 => (0..3u8, 0..8usize).prop_map(|(queue, nth)| Op::Deliver { queue, nth }),
        3 => (0..3u8, 0..8usize).prop_map(|(queue, nth)| Op::Ack { queue, nth }),
        1 => (0..3u8).prop_map(|queue| Op::Delete { queue }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

/// Per queue: offset -> (body, delivered).
type Model = BTreeMap<String, BTreeMap<u64, (Vec<u8>, bool)>>;

fn check(store: &Store, model: &Model) {
    let recovered = store.recover().expect("recover");
    let mut got: Model = BTreeMap::new();
    for (q, messages) in recovered.queues {
        let mut last = None;
        for m in messages {
            assert!(last < Some(m.offset), "messages come back in offset order");
            last = Some(m.offset);
            let stored = store.queue_store(&q.name).expect("queue store").get_message(m.offset).expect("get").expect("a recovered message can be read");
            got.entry(q.name.clone()).or_default().insert(m.offset, (stored.body.to_vec(), m.delivered));
        }
        got.entry(q.name).or_default();
    }
    assert_eq!(&got, model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model_across_reopens(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = std::env::temp_dir().join(format!("warren-model-{}-{}", std::process::id(), rand_suffix()));
        let (mut db, mut store) = open(&dir);
        let names = ["a", "b", "c"];
        let mut model: Model = BTreeMap::new();
        let record = |name: &str| QueueRecord { name: name.into(), auto_delete: false, arguments: vec![] };
        for name in names {
            store.put_queue(&record(name)).expect("queue");
            model.insert(name.into(), BTreeMap::new());
        }
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Put { queue, body } => {
                    let q = names[queue as usize];
                    next += 1;
                    let m = StoredMessage { exchange: "".into(), routing_key: q.into(), properties: Bytes::from_static(&[0x10, 0, 2]), body: Bytes::from(body.clone()), expires: u64::MAX, priority: 0 };
                    store.queue_store(q).expect("queue store").put_message(next, &m).expect("put");
                    model.get_mut(q).expect("q").insert(next, (body, false));
                }
                Op::Deliver { queue, nth } => {
                    let q = names[queue as usize];
                    let entry = model.get_mut(q).expect("q");
                    if let Some((&offset, v)) = entry.iter_mut().nth(nth) {
                        store.queue_store(q).expect("queue store").mark_delivered(offset).expect("deliver");
                        v.1 = true;
                    }
                }
                Op::Ack { queue, nth } => {
                    let q = names[queue as usize];
                    let entry = model.get_mut(q).expect("q");
                    if let Some((&offset, &(_, delivered))) = entry.iter().nth(nth) {
                        let qs = store.queue_store(q).expect("queue store");
                        // Both ways the broker removes: one at a time, and batched.
                        if nth % 2 == 0 {
                            qs.remove_message(offset).expect("remove");
                        } else {
                            qs.remove_messages(&[(offset, delivered)]).expect("remove batch");
                        }
                        entry.remove(&offset);
                    }
                }
                Op::Delete { queue } => {
                    // Delete the queue with its messages, then declare it again, empty.
                    let q = names[queue as usize];
                    store.delete_queue(q).expect("delete");
                    store.drop_messages(q).expect("drop");
                    store.put_queue(&record(q)).expect("redeclare");
                    model.get_mut(q).expect("q").clear();
                }
                Op::Reopen => {
                    db.close_cleanly().expect("close");
                    drop((db, store));
                    (db, store) = open(&dir);
                    assert!(!db.recovered_from_crash());
                    check(&store, &model);
                }
                Op::Crash => {
                    db.flush_blocking().expect("flush");
                    drop((db, store));
                    (db, store) = open(&dir);
                    assert!(db.recovered_from_crash());
                    for messages in model.values_mut() {
                        for v in messages.values_mut() {
                            v.1 = true;
                        }
                    }
                    check(&store, &model);
                }
            }
        }
        db.close_cleanly().expect("close");
        drop((db, store));
        let (db, store) = open(&dir);
        check(&store, &model);
        drop((db, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = std::env::temp_dir().join(format!("warren-lock-{}", std::process::id()));
    let first = Database::open(&dir, "/").expect("open");
    let err = Database::open(&dir, "/").expect_err("locked");
    assert!(matches!(err, warren_storage::StoreError::Locked(_)), "{err}");
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_format_version_is_refused() {
    let dir = std::env::temp_dir().join(format!("warren-version-{}", std::process::id()));
    {
        let db = sled::open(dir.join("sled")).expect("sled");
        db.open_tree("meta").expect("meta").insert("format", &b"warren-store-999"[..]).expect("insert");
        db.flush().expect("flush");
    }
    let err = Database::open(&dir, "/").expect_err("unknown version");
    assert!(err.to_string().contains("warren-store-999"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_deleted_queues_handle_cannot_write_into_its_successor() {
    let dir = std::env::temp_dir().join(format!("warren-successor-{}", std::process::id()));
    let (db, store) = open(&dir);
    let m = |b: &'static [u8]| StoredMessage { exchange: "".into(), routing_key: "q".into(), properties: Bytes::new(), body: Bytes::from_static(b), expires: u64::MAX, priority: 0 };
    let old = store.queue_store("q").expect("queue store");
    old.put_message(1, &m(b"old")).expect("put");
    store.delete_queue("q").expect("delete");
    let new = store.queue_store("q").expect("queue store");
    // Late writes through the old handle are no-ops, not errors, and land nowhere.
    old.put_message(2, &m(b"late")).expect("late put is ignored");
    old.remove_message(1).expect("late ack is ignored");
    assert_eq!(new.get_message(1).expect("get"), None, "the old queue's message is gone");
    assert_eq!(new.get_message(2).expect("get"), None, "a late write reached the new queue");
    new.put_message(1, &m(b"new")).expect("put");
    assert_eq!(new.get_message(1).expect("get").map(|m| m.body), Some(Bytes::from_static(b"new")));
    drop((old, new, store, db));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vhosts_keep_apart_and_a_deleted_vhost_is_gone_whole() {
    let dir = std::env::temp_dir().join(format!("warren-vhosts-{}", std::process::id()));
    let db = Database::open(&dir, "/").expect("open");
    let m = StoredMessage { exchange: "".into(), routing_key: "q".into(), properties: Bytes::new(), body: Bytes::from_static(b"x"), expires: u64::MAX, priority: 0 };
    for vhost in ["/", "orders", "/orders"] {
        let store = db.vhost(vhost).expect("vhost");
        store.put_queue(&QueueRecord { name: "q".into(), auto_delete: false, arguments: vec![] }).expect("queue");
        store.queue_store("q").expect("queue store").put_message(1, &m).expect("put");
    }
    let mut names = db.stored_vhosts();
    names.sort();
    assert_eq!(names, ["/", "/orders", "orders"]);
    db.delete_vhost("orders").expect("delete vhost");
    assert_eq!(db.vhost("orders").expect("vhost").recover().expect("recover").queues.len(), 0, "orders is empty again");
    for vhost in ["/", "/orders"] {
        let recovered = db.vhost(vhost).expect("vhost").recover().expect("recover");
        assert_eq!(recovered.queues.len(), 1, "{vhost} kept its queue");
        assert_eq!(recovered.queues[0].1.len(), 1, "{vhost} kept its message");
    }
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn access_records_round_trip_by_kind() {
    let dir = std::env::temp_dir().join(format!("warren-records-{}", std::process::id()));
    {
        let db = Database::open(&dir, "/").expect("open");
        db.put_record("user", "app", b"one").expect("put");
        db.put_record("user", "admin", b"two").expect("put");
        db.put_record("vhost", "app", b"three").expect("put");
        db.delete_record("user", "admin").expect("delete");
        db.flush_blocking().expect("flush");
    }
    let db = Database::open(&dir, "/").expect("reopen");
    assert_eq!(db.records("user").expect("users"), [("app".to_owned(), b"one".to_vec())]);
    assert_eq!(db.records("vhost").expect("vhosts"), [("app".to_owned(), b"three".to_vec())]);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

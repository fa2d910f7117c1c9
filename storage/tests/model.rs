//! The store against an in-memory model, with reopen ("reboot") steps mixed into random
//! operation sequences: after every reopen, what the store recovers must equal the model.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use warren_storage::{QueueRecord, Store, StoredMessage};

#[derive(Debug, Clone)]
enum Op {
    Put { queue: u8, body: Vec<u8> },
    Deliver { queue: u8, nth: usize },
    Ack { queue: u8, nth: usize },
    Purge { queue: u8 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(queue, body)| Op::Put { queue, body }),
        2 => (0..3u8, 0..8usize).prop_map(|(queue, nth)| Op::Deliver { queue, nth }),
        3 => (0..3u8, 0..8usize).prop_map(|(queue, nth)| Op::Ack { queue, nth }),
        1 => (0..3u8).prop_map(|queue| Op::Purge { queue }),
        1 => Just(Op::Reopen),
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
            let stored = store.get_message(&q.name, m.offset).expect("get").expect("a recovered message can be read");
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
        let mut store = Store::open(&dir).expect("open");
        let names = ["a", "b", "c"];
        let mut model: Model = BTreeMap::new();
        for name in names {
            store.put_queue(&QueueRecord { name: name.into(), auto_delete: false, arguments: vec![] }).expect("queue");
            model.insert(name.into(), BTreeMap::new());
        }
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Put { queue, body } => {
                    let q = names[queue as usize];
                    next += 1;
                    let m = StoredMessage { exchange: "".into(), routing_key: q.into(), properties: Bytes::from_static(&[0x10, 0, 2]), body: Bytes::from(body.clone()) };
                    store.put_message(q, next, &m).expect("put");
                    model.get_mut(q).expect("q").insert(next, (body, false));
                }
                Op::Deliver { queue, nth } => {
                    let q = names[queue as usize];
                    let entry = model.get_mut(q).expect("q");
                    if let Some((&offset, v)) = entry.iter_mut().nth(nth) {
                        store.mark_delivered(q, offset).expect("deliver");
                        v.1 = true;
                    }
                }
                Op::Ack { queue, nth } => {
                    let q = names[queue as usize];
                    let entry = model.get_mut(q).expect("q");
                    if let Some(&offset) = entry.keys().nth(nth) {
                        store.remove_message(q, offset).expect("remove");
                        entry.remove(&offset);
                    }
                }
                Op::Purge { queue } => {
                    let q = names[queue as usize];
                    store.purge_queue(q).expect("purge");
                    model.get_mut(q).expect("q").clear();
                }
                Op::Reopen => {
                    store.flush_blocking().expect("flush");
                    drop(store);
                    store = Store::open(&dir).expect("reopen");
                    check(&store, &model);
                }
            }
        }
        store.flush_blocking().expect("flush");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        check(&store, &model);
        drop(store);
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
    let first = Store::open(&dir).expect("open");
    let err = Store::open(&dir).expect_err("locked");
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
    let err = Store::open(&dir).expect_err("unknown version");
    assert!(err.to_string().contains("warren-store-999"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! A hostile but authenticated client must not crash or exhaust the broker: depth it
//! controls costs no stack, and the broker keeps serving others.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::ExchangeKind;

/// A chain of 30,000 auto-delete exchanges, each bound to the previous one, with a queue
/// at its end: unbinding the queue deletes the whole chain, iteratively (this used to
/// overflow the stack), and the broker goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_auto_delete_chain_unravels_without_recursion() {
    const N: usize = 30_000;
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "end").await;
    let auto = ExchangeDeclareOptions { auto_delete: true, nowait: true, ..Default::default() };
    for i in 0..N {
        ch.exchange_declare(format!("x{i}").as_str().into(), ExchangeKind::Fanout, auto, FieldTable::default()).await.expect("declare");
        if i > 0 {
            // Messages flow from x{i} to x{i-1}.
            ch.exchange_bind(format!("x{}", i - 1).as_str().into(), format!("x{i}").as_str().into(), "".into(), ExchangeBindOptions { nowait: true }, FieldTable::default())
                .await
                .expect("bind");
        }
    }
    ch.queue_bind("end".into(), "x0".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind queue");
    publish(&ch, &format!("x{}", N - 1), "", b"through the chain").await;
    assert_eq!(get_body(&ch, "end").await.as_deref(), Some(&b"through the chain"[..]));
    within("unbind", ch.queue_unbind("end".into(), "x0".into(), "".into(), FieldTable::default())).await.expect("unbind");
    let (probe_conn, _) = broker.channel().await;
    for i in [0, N / 2, N - 1] {
        // A 404 closes the channel: one channel per probe.
        let probe = probe_conn.create_channel().await.expect("channel");
        let err = probe
            .exchange_declare(format!("x{i}").as_str().into(), ExchangeKind::Fanout, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await
            .expect_err("deleted with the chain");
        assert_eq!(reply_code(&err), Some(404), "x{i}");
    }
    let other = broker.channel().await.1;
    declare(&other, "still-serving").await;
}

//! The memory alarm over the wire: above the watermark a connection that publishes is
//! blocked at its next basic.publish (told with connection.blocked, its socket no longer
//! read) while other connections keep working, and it resumes with connection.unblocked
//! once the queues are drained.

mod common;

use std::time::Duration;

use common::raw::{body_frame, header_frame, publish_frame, RawConn};
use common::*;
use lapin::options::*;

/// Publishes one message of `body` to the queue `queue` through the default exchange.
async fn raw_publish(c: &mut RawConn, queue: &str, body: &[u8]) {
    let mut frames = publish_frame(1, "", queue, 0);
    frames.extend(header_frame(1, body.len() as u64));
    frames.extend(body_frame(1, body));
    c.send(&frames).await;
}

#[tokio::test]
async fn publishers_are_blocked_above_the_watermark_until_the_backlog_drains() {
    let broker = start_with(|c| c.memory_high_watermark_mb = 1).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "big").await;
    declare(&ch, "late").await;
    let mut publisher = RawConn::handshake(broker.addr).await;
    publisher.open_channel(1).await;
    // 1.5 MiB of messages in a queue nobody consumes: over the 1 MiB watermark.
    let body = vec![7u8; 100 * 1024];
    for _ in 0..15 {
        raw_publish(&mut publisher, "big", &body).await;
    }
    // The next publish after the alarm went on blocks the connection, as in RabbitMQ.
    tokio::time::sleep(Duration::from_millis(100)).await;
    raw_publish(&mut publisher, "late", b"sent while blocked").await;
    let blocked = publisher.expect_method(0, 10, 60).await;
    assert!(String::from_utf8_lossy(blocked.args()).contains("memory"), "reason: {}", blocked.describe());

    // Blocked: that publish, and whatever follows it, is not processed...
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...while a connection that does not publish is served as usual.
    let queued = declare(&ch, "big").await.message_count();
    assert!(queued >= 10, "only {queued} messages before the alarm");
    assert_eq!(declare(&ch, "late").await.message_count(), 0, "a blocked connection's publish was read");

    // Draining the backlog clears the alarm; the held publish goes through.
    ch.queue_purge("big".into(), QueuePurgeOptions::default()).await.expect("purge");
    publisher.expect_method(0, 10, 61).await;
    within("the held publish", async {
        while declare(&ch, "late").await.message_count() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn publishers_are_blocked_while_free_disk_space_is_below_the_limit() {
    // A limit no disk meets: the disk alarm is on from the start.
    let broker = start_with(|c| c.disk_free_limit_mb = u64::MAX / 1_000_000).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "disk").await;
    let mut publisher = RawConn::handshake(broker.addr).await;
    publisher.open_channel(1).await;
    raw_publish(&mut publisher, "disk", b"held").await;
    let blocked = publisher.expect_method(0, 10, 60).await;
    assert!(String::from_utf8_lossy(blocked.args()).contains("low on disk"), "reason: {}", blocked.describe());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(declare(&ch, "disk").await.message_count(), 0, "a blocked connection's publish was read");
    assert!(broker.broker.metrics.render().contains("rabbitmq_alarms_free_disk_space_watermark 1"));
    // With the limit back at RabbitMQ's 50 MB the alarm clears and the publish goes through.
    broker.broker.disk.set_limit(50_000_000);
    publisher.expect_method(0, 10, 61).await;
    within("the held publish", async {
        while declare(&ch, "disk").await.message_count() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(broker.broker.metrics.render().contains("rabbitmq_alarms_free_disk_space_watermark 0"));
}

#[tokio::test]
async fn publishers_are_blocked_while_resident_memory_is_over_the_process_limit() {
    // A fraction of physical memory no running process fits under: the resident-memory
    // check sets the alarm from the first reading, whatever the queues hold.
    let broker = start_with(|c| c.vm_memory_high_watermark = 1e-8).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "rss").await;
    let mut publisher = RawConn::handshake(broker.addr).await;
    publisher.open_channel(1).await;
    raw_publish(&mut publisher, "rss", b"held").await;
    let blocked = publisher.expect_method(0, 10, 60).await;
    assert!(String::from_utf8_lossy(blocked.args()).contains("low on memory"), "reason: {}", blocked.describe());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(declare(&ch, "rss").await.message_count(), 0, "a blocked connection's publish was read");
    let metrics = broker.broker.metrics.render();
    assert!(metrics.contains("rabbitmq_alarms_memory_used_watermark 1"), "{metrics}");
    assert!(broker.broker.memory.rss() > 0 && metrics.contains(&format!("rabbitmq_process_resident_memory_bytes {}", broker.broker.memory.rss())), "{metrics}");
}

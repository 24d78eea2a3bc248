//! `scripts/bench`: webhook delivery throughput to a local receiver.
//!
//! settled queues one event per invoice while its receiver holds every request
//! unanswered; then settled is killed, the receiver starts answering 200 at once, and
//! the time settled takes after its restart to deliver the whole backlog is measured.
//! Prints events per second, for a few `max_in_flight`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use common::receiver::Receiver;
use serde_json::json;

const EVENTS: usize = 2_000;

#[tokio::main]
async fn main() {
    println!(
        "webhook delivery of a backlog of {EVENTS} events (one per invoice), signed, to a local receiver:"
    );
    for in_flight in [1, 4, 16, 64] {
        let receiver = Receiver::start().await;
        receiver.answer(|_, _| None);
        let dir = tempfile::tempdir().unwrap();
        let secret = common::webhook_secret(dir.path(), "bench-secret");
        let mut daemon = Daemon::start_offline(&format!(
            "[webhook]\nurl = \"{}\"\nsecret_file = \"{}\"\nmax_in_flight = {in_flight}",
            receiver.url(),
            secret.display()
        ))
        .await;
        let mut admin = daemon.admin().await;
        for _ in 0..EVENTS {
            admin.invoice(json!({"amount": "0.1"})).await;
        }
        daemon.kill();
        receiver.answer(|_, _| Some((200, Duration::ZERO)));
        let held = receiver.requests().len();
        let start = Instant::now();
        daemon.spawn_unsynced().await;
        receiver
            .wait("the backlog delivered", |r| {
                let mut ids: Vec<&str> = r.iter().map(|q| q.event_id()).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.len() == EVENTS
            })
            .await;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  max_in_flight {in_flight:>3}: {:>7.0} events/s ({EVENTS} in {secs:.2} s; {held} were in flight at the kill and sent again)",
            EVENTS as f64 / secs
        );
    }
}

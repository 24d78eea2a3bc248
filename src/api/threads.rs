//! The API's own threads: the few that run its database calls, each taking the next
//! call as soon as it has answered one.
//!
//! tokio's blocking pool starts a thread for every call that finds none idle, and
//! parks each after its call: with 8 clients of `invoice.get`, each call parked one
//! thread and woke another, a fifth of the call's CPU spent in the scheduler. Here
//! the calls queue for a fixed few threads, and a thread that finds one waiting runs
//! it without parking.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The threads and the queue of calls they take from.
pub(crate) struct Threads {
    queue: Sender<Job>,
}

/// A call that did not return: it panicked, or the threads are gone.
#[derive(Debug)]
pub(crate) struct Failed(pub(crate) String);

impl Threads {
    /// Starts `n` threads. They end once the `Threads` is dropped and the queue drained.
    pub(crate) fn start(n: usize) -> std::io::Result<Threads> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("settled-api-{i}"))
                .spawn(move || take(&rx))?;
        }
        Ok(Threads { queue: tx })
    }

    /// How many threads a machine of `cores` gets: two per core, so that a slow call
    /// (a long list) beside others leaves threads for the rest, and at least four.
    pub(crate) fn for_cores(cores: usize) -> usize {
        (2 * cores).clamp(4, 16)
    }

    /// Runs `f` on one of the threads; its result, or why there is none.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Failed> {
        let (answer, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
                let why = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Failed(format!("the call panicked: {why}"))
            });
            // The caller may have gone (its connection closed): nobody to answer.
            let _ = answer.send(r);
        });
        if self.queue.send(job).is_err() {
            return Err(Failed("the API's threads have stopped".into()));
        }
        result
            .await
            .unwrap_or_else(|_| Err(Failed("the API's threads have stopped".into())))
    }
}

/// One thread's loop: the next call, until the queue is closed.
fn take(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for a call: the next thread waits for
        // the lock, and takes the call after without parking if one is queued.
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::Threads;
    use std::sync::{Arc, Barrier};

    /// The calls run on the API's threads, side by side up to their number, and a
    /// panicking call is answered with an error while the thread goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_run_side_by_side_on_the_api_threads_and_a_panic_is_an_error() {
        let threads = Threads::start(4).unwrap();
        // Four calls that each wait for the others: they finish only if all four run
        // at once.
        let all = Arc::new(Barrier::new(4));
        let names = futures_util::future::join_all((0..4).map(|_| {
            let all = all.clone();
            threads.run(move || {
                all.wait();
                std::thread::current()
                    .name()
                    .unwrap_or_default()
                    .to_string()
            })
        }));
        // Fewer threads than calls would wait at the barrier for good: a failure, not
        // a hang.
        let names = tokio::time::timeout(std::time::Duration::from_secs(10), names)
            .await
            .expect("four calls at once did not all run side by side");
        let mut names: Vec<String> = names.into_iter().map(|n| n.unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "settled-api-0",
                "settled-api-1",
                "settled-api-2",
                "settled-api-3"
            ]
        );
        let panicked = threads.run(|| -> u32 { panic!("boom") }).await;
        assert!(panicked.unwrap_err().0.contains("boom"));
        // Every thread still answers.
        let all = Arc::new(Barrier::new(4));
        let after = futures_util::future::join_all((0..4).map(|i| {
            let all = all.clone();
            threads.run(move || {
                all.wait();
                i
            })
        }))
        .await;
        assert_eq!(
            after.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }
}

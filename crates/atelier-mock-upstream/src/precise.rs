//! Sleeping to within a few dozen microseconds instead of to tokio's millisecond.
//!
//! tokio's timer rounds every deadline up to the next whole millisecond of its
//! wheel, so an upstream configured to take 20 ms answered 20 to 21 ms after a
//! request arrived, by where in the millisecond it arrived. A request that
//! reached the mock a few hundred microseconds later (through atelier, say) was
//! then either answered at the same instant, its delay swallowed by the
//! rounding, or a whole millisecond later: the difference between two paths
//! came out as 0 or 1 ms depending on the phase of two clocks. A benchmark that
//! subtracts one path from the other needs the configured delay itself.
//!
//! One thread keeps the deadlines in order and sleeps until the earliest (a
//! condition variable's timed wait: the kernel's high-resolution timers), then
//! wakes every sleeper that is due.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

/// Sleepers due this close together are woken in one pass.
const COALESCE: Duration = Duration::from_micros(20);

/// Waits `delay`, to within the kernel's timer slack (50 µs by default).
pub(crate) async fn sleep(delay: Duration) {
    if delay.is_zero() {
        return;
    }
    let (wake, woken) = oneshot::channel();
    TIMERS.add(Instant::now() + delay, wake);
    // The sender is only dropped after it has sent.
    let _ = woken.await;
}

/// The sleepers by deadline; the sequence number keeps equal deadlines apart.
#[derive(Default)]
struct Queue {
    due: BTreeMap<(Instant, u64), oneshot::Sender<()>>,
    next_seq: u64,
}

struct Timers {
    queue: Mutex<Queue>,
    changed: Condvar,
}

static TIMERS: LazyLock<&'static Timers> = LazyLock::new(|| {
    let timers: &'static Timers = Box::leak(Box::new(Timers {
        queue: Mutex::new(Queue::default()),
        changed: Condvar::new(),
    }));
    let started = std::thread::Builder::new()
        .name("mock-timers".into())
        .spawn(move || timers.run());
    if let Err(e) = started {
        // Without the thread nothing would ever wake: fail loudly at once.
        panic!("cannot start the mock's timer thread: {e}");
    }
    timers
});

impl Timers {
    fn add(&self, at: Instant, wake: oneshot::Sender<()>) {
        let mut queue = self.queue.lock();
        let earlier = queue
            .due
            .first_key_value()
            .is_none_or(|(&(first, _), _)| at < first);
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.due.insert((at, seq), wake);
        if earlier {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut queue = self.queue.lock();
        loop {
            let now = Instant::now();
            while let Some(entry) = queue.due.first_entry()
                && entry.key().0 <= now + COALESCE
            {
                // A sleeper that stopped waiting (its request was dropped) is gone.
                let _ = entry.remove().send(());
            }
            match queue.due.first_key_value().map(|(&(at, _), _)| at) {
                Some(at) => {
                    self.changed.wait_until(&mut queue, at);
                }
                None => self.changed.wait(&mut queue),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleepers_wake_in_order_after_their_delay() {
        let started = Instant::now();
        let delays = [30u64, 5, 18, 5, 11];
        let woken: Vec<_> = delays
            .iter()
            .map(|&ms| {
                tokio::spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    started.elapsed()
                })
            })
            .collect();
        for (task, ms) in woken.into_iter().zip(delays) {
            let elapsed = task.await.expect("task");
            let wanted = Duration::from_millis(ms);
            assert!(elapsed >= wanted, "{elapsed:?} < {wanted:?}");
            // Generous: a loaded test machine delays threads by milliseconds.
            assert!(elapsed < wanted + Duration::from_millis(200), "{elapsed:?}");
        }
    }
}

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

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
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

struct Sleeper {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Sleeper {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Sleeper {}

impl PartialOrd for Sleeper {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sleeper {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    due: BinaryHeap<Reverse<Sleeper>>,
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
        let earlier = queue.due.peek().is_none_or(|first| at < first.0.at);
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.due.push(Reverse(Sleeper { at, seq, wake }));
        if earlier {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut queue = self.queue.lock();
        loop {
            let now = Instant::now();
            while queue.due.peek().is_some_and(|first| first.0.at <= now + COALESCE) {
                if let Some(Reverse(sleeper)) = queue.due.pop() {
                    // A sleeper that stopped waiting (its request was dropped) is gone.
                    let _ = sleeper.wake.send(());
                }
            }
            match queue.due.peek().map(|first| first.0.at) {
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

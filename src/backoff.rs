//! Waiting before trying again: capped exponential backoff with jitter, so
//! that copies that failed together do not retry in step.

use std::time::Duration;

/// The waits between tries: `first`, doubling up to `max`, each less up to
/// a fifth at random.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// How long to wait before the next try.
    pub fn next_wait(&mut self) -> Duration {
        let wait = jitter(self.next);
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// `base` less up to a fifth of it, at random.
pub fn jitter(base: Duration) -> Duration {
    let fifth = base.as_millis() as u64 / 5;
    base - Duration::from_millis(rand::random_range(0..=fifth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_again_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let waits: Vec<Duration> = (0..4).map(|_| backoff.next_wait()).collect();
        for (wait, base) in waits.iter().zip([100, 200, 400, 400]) {
            let base = Duration::from_millis(base);
            assert!(
                *wait <= base && *wait >= base - base / 5,
                "{wait:?} for {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_millis(100));
    }
}

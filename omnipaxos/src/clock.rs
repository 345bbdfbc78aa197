//! A logical clock: counts `tick()` calls and fires every `timeout` ticks. This is the only
//! notion of time in the core; a timeout of 0 never fires.

#[derive(Clone, Debug)]
pub(crate) struct LogicalClock {
    elapsed: u64,
    timeout: u64,
}

impl LogicalClock {
    pub(crate) fn with(timeout: u64) -> Self {
        Self {
            elapsed: 0,
            timeout,
        }
    }

    /// Advances one tick; returns true (and restarts) when the timeout is reached.
    pub(crate) fn tick_and_check_timeout(&mut self) -> bool {
        if self.timeout == 0 {
            return false;
        }
        self.elapsed += 1;
        if self.elapsed >= self.timeout {
            self.elapsed = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_every_timeout_ticks() {
        let mut clock = LogicalClock::with(3);
        let fired: Vec<bool> = (0..7).map(|_| clock.tick_and_check_timeout()).collect();
        assert_eq!(fired, [false, false, true, false, false, true, false]);
    }

    #[test]
    fn zero_never_fires() {
        let mut clock = LogicalClock::with(0);
        assert!((0..100).all(|_| !clock.tick_and_check_timeout()));
    }
}

//! Errors that pass: a store must not fail for good over an error that a moment later is gone.

use std::io;
use std::time::{Duration, Instant};

const EINTR: i32 = 4;
const EAGAIN: i32 = 11;
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENOSPC: i32 = 28;

/// How long an error that passes is waited out: no file descriptor left (a flood of
/// connections holds them) or an interrupted call, about a second; a full disk, ten (space may
/// be freed: compaction, an operator).
fn patience(e: &io::Error) -> Option<Duration> {
    match e.raw_os_error()? {
        EINTR | EAGAIN | ENFILE | EMFILE => Some(Duration::from_secs(1)),
        ENOSPC => Some(Duration::from_secs(10)),
        _ => None,
    }
}

/// Runs `op` again while it fails with an error that passes (see [`patience`]); any other
/// error, or one that lasts, is returned. `op` must be safe to repeat (a write that is valid
/// only once whole, an open, a sync of a directory).
pub fn retrying_transient<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let started = Instant::now();
    loop {
        match op() {
            Err(e) if patience(&e).is_some_and(|p| started.elapsed() < p) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_that_passes_is_retried_and_others_are_not() {
        let mut calls = 0;
        let result = retrying_transient(|| {
            calls += 1;
            match calls {
                1 | 2 => Err(io::Error::from_raw_os_error(EMFILE)),
                _ => Ok(calls),
            }
        });
        assert_eq!(result.unwrap(), 3);
        let mut calls = 0;
        let result: io::Result<()> = retrying_transient(|| {
            calls += 1;
            Err(io::Error::from_raw_os_error(5)) // EIO
        });
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}

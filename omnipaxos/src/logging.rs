//! Logging through the `tracing` facade (feature `logging`), every event tagged with the node
//! id. Without the feature the macro compiles to nothing while still type-checking its
//! arguments, so log-only variables never trigger unused warnings.

#[cfg(feature = "logging")]
macro_rules! log {
    ($level:ident, $pid:expr, $($arg:tt)+) => {
        tracing::$level!(pid = $pid, $($arg)+)
    };
}

#[cfg(not(feature = "logging"))]
macro_rules! log {
    ($level:ident, $pid:expr, $($arg:tt)+) => {
        if false {
            let _ = $pid;
            let _ = format_args!($($arg)+);
        }
    };
}

pub(crate) use log;

//! Mutual TLS (being written).

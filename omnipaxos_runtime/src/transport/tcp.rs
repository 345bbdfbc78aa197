//! TCP transport (placeholder while it is written).

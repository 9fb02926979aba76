//! detect (placeholder until its issue lands).

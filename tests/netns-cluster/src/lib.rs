//! Placeholder; the owner of this crate replaces it.

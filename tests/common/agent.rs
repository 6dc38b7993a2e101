//! (placeholder; see tests/common/mod.rs for the owner)

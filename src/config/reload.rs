//! Watching the configuration file for changes (implemented next).

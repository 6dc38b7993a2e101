//! (skeleton; owned by the config helper)

//! Error helpers shared by every layer. A leaf: this module imports nothing from the crate, so
//! any module may use it without creating an import cycle.
//!
//! Nothing here may format a secret: it only joins messages the errors themselves produce.

/// An error and its sources on one line (`outer: cause: root cause`), for logs and `/status`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

//! The offline policy tools: [`explain`] (`portcullis explain`: one request's decision and the
//! whole reasoning) and [`policy_test`] (`portcullis test`: YAML policy test cases, for users'
//! CI).
//!
//! Both run the real engine on a loaded configuration, with the caller's identity built from
//! claims through the issuer's claim mapping (or a token decoded without its signature being
//! checked). They must never open a connection: key sets are not fetched, and nothing they
//! decide is ever served to a request.

pub mod explain;
pub mod policy_test;

//! Request hygiene per route: `require.content_types` (a request with a body must declare one
//! of the route's media types, else 415) and `require.idempotency_key` (a POST or PATCH must
//! carry an `Idempotency-Key` header, else 400). Cheap checks on the request line and headers,
//! allocation-free.

use crate::input::Headers;

/// A route's hygiene rules; the default demands nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hygiene {
    /// Accepted media types (`type/subtype`, lower case, no parameters) for POST, PUT and
    /// PATCH; empty: any.
    pub content_types: Vec<String>,
    /// POST and PATCH must carry a non-empty `Idempotency-Key` header.
    pub idempotency_key: bool,
}

/// Which hygiene rule a request breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HygieneProblem {
    /// The request's `content-type` is missing or not one of the route's `content_types`.
    UnsupportedMediaType,
    /// A POST or PATCH without an `Idempotency-Key` header.
    MissingIdempotencyKey,
}

impl Hygiene {
    pub fn is_empty(&self) -> bool {
        self.content_types.is_empty() && !self.idempotency_key
    }

    /// Checks `method` and `headers` against the rules. Methods are compared exactly, as route
    /// matching compares them (upper case).
    pub fn check(&self, method: &str, headers: &Headers) -> Result<(), HygieneProblem> {
        self.check_content_type(method, headers)?;
        self.check_idempotency_key(method, headers)
    }

    /// `content_types`: a POST, PUT or PATCH declares one of the accepted media types.
    pub fn check_content_type(
        &self,
        method: &str,
        headers: &Headers,
    ) -> Result<(), HygieneProblem> {
        if !self.content_types.is_empty()
            && matches!(method, "POST" | "PUT" | "PATCH")
            && !headers
                .get("content-type")
                .is_some_and(|value| self.accepts(value))
        {
            return Err(HygieneProblem::UnsupportedMediaType);
        }
        Ok(())
    }

    /// `idempotency_key`: a POST or PATCH carries a non-empty `Idempotency-Key` header.
    pub fn check_idempotency_key(
        &self,
        method: &str,
        headers: &Headers,
    ) -> Result<(), HygieneProblem> {
        if self.idempotency_key
            && matches!(method, "POST" | "PATCH")
            && headers
                .get("idempotency-key")
                .is_none_or(|key| key.trim().is_empty())
        {
            return Err(HygieneProblem::MissingIdempotencyKey);
        }
        Ok(())
    }

    /// Whether a `content-type` value names an accepted media type: parameters (`;
    /// charset=utf-8`) ignored, compared case-insensitively.
    fn accepts(&self, content_type: &str) -> bool {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_matches(|c| c == ' ' || c == '\t');
        self.content_types
            .iter()
            .any(|accepted| accepted.eq_ignore_ascii_case(media_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::headers;

    fn json_only() -> Hygiene {
        Hygiene {
            content_types: vec!["application/json".to_owned()],
            idempotency_key: false,
        }
    }

    #[test]
    fn a_listed_media_type_passes_whatever_its_case_and_parameters() {
        for value in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            let request = headers(&[("content-type", value)]);
            assert_eq!(json_only().check("POST", &request), Ok(()), "{value}");
        }
    }

    #[test]
    fn a_body_method_with_another_or_no_media_type_is_unsupported() {
        for method in ["POST", "PUT", "PATCH"] {
            for request in [
                headers(&[("content-type", "text/plain")]),
                headers(&[("content-type", "application/jsonx")]),
                headers(&[("content-type", "")]),
                headers(&[]),
            ] {
                assert_eq!(
                    json_only().check(method, &request),
                    Err(HygieneProblem::UnsupportedMediaType),
                    "{method} {request:?}"
                );
            }
        }
    }

    #[test]
    fn methods_without_a_body_are_not_asked_for_a_media_type() {
        let request = headers(&[("content-type", "text/plain")]);
        for method in ["GET", "HEAD", "DELETE", "OPTIONS"] {
            assert_eq!(json_only().check(method, &request), Ok(()), "{method}");
        }
    }

    #[test]
    fn post_and_patch_need_a_non_empty_idempotency_key() {
        let rule = Hygiene {
            idempotency_key: true,
            ..Hygiene::default()
        };
        for method in ["POST", "PATCH"] {
            assert_eq!(
                rule.check(method, &headers(&[])),
                Err(HygieneProblem::MissingIdempotencyKey)
            );
            assert_eq!(
                rule.check(method, &headers(&[("idempotency-key", "  ")])),
                Err(HygieneProblem::MissingIdempotencyKey)
            );
            assert_eq!(
                rule.check(method, &headers(&[("Idempotency-Key", "8e03978e-40d5")])),
                Ok(())
            );
        }
        assert_eq!(rule.check("PUT", &headers(&[])), Ok(()));
        assert_eq!(rule.check("GET", &headers(&[])), Ok(()));
    }
}

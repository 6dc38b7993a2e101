//! Route table: path normalization and first-match routing. (Skeleton: the routes helper owns
//! this file and replaces the bodies; the public API below is the contract the engine uses.)

use super::Route;

/// What a route matches on. `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Upper-case methods; `None` = any.
    pub methods: Option<Vec<String>>,
    /// Exact host (port ignored, case-insensitive); `None` = any.
    pub host: Option<String>,
    pub path: PathMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Template(PathTemplate),
}

/// A compiled `/documents/{doc_id}` or `/files/{rest...}` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub source: String,
}

/// Why a request target cannot be normalized (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is not absolute")]
    NotAbsolute,
}

/// A request target split and normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub path: String,
    /// The raw query string (without `?`), never used for matching.
    pub query: Option<String>,
}

/// Path parameters bound by a template (`doc_id` -> `42`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

/// Splits off the query and normalizes the path per design.md.
pub fn normalize(target: &str) -> Result<NormalizedPath, PathError> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    Ok(NormalizedPath {
        path: path.to_owned(),
        query,
    })
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route matching, with its path parameters.
    pub fn find(&self, method: &str, host: &str, path: &str) -> Option<(&Route, Params)> {
        self.routes.iter().find_map(|route| {
            let m = &route.matcher;
            let method_ok = m
                .methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|x| x == method));
            let host_ok = m.host.as_ref().is_none_or(|h| h.eq_ignore_ascii_case(host));
            let path_ok = match &m.path {
                PathMatch::Any => true,
                PathMatch::Exact(p) => p == path,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
                PathMatch::Template(_) => false,
            };
            (method_ok && host_ok && path_ok).then(|| (route, Params::default()))
        })
    }
}

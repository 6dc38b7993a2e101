//! Route table: path templates and first-match routing.
//!
//! [`RouteTable::find`] picks the first route whose methods, host and path match, and returns
//! the parameters its template bound. It matches only what [`path`](super::path) produced: the
//! normalized path (never the query string) and the normalized host. A large table is looked
//! up through a segment trie that only narrows the candidates: the routes' own matchers still
//! decide, and the lowest-indexed match wins, exactly as the linear scan.
//!
//! This module must never look at the query string when matching, never decode an escape
//! (normalization already decided which ones are safe), and never do I/O.

use std::collections::HashMap;

use super::Route;
use super::path::{PathError, normalize};

/// What a route matches on. `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Upper-case methods; `None` = any.
    pub methods: Option<Vec<String>>,
    /// Exact host in [`normalize_authority`](super::path::normalize_authority) form; `None` =
    /// any.
    pub host: Option<String>,
    pub path: PathMatch,
}

impl RouteMatch {
    /// Whether this matcher accepts the request; the bound template parameters if so.
    /// `host` must be the output of [`normalize_authority`](super::path::normalize_authority),
    /// `path` the output of [`normalize`].
    pub fn matches<'a>(&'a self, method: &str, host: &str, path: &'a str) -> Option<Params<'a>> {
        self.check(method, host, path).ok()
    }

    /// [`matches`](Self::matches), saying which part of the request missed when it does not
    /// (`portcullis explain` shows it for every route tried).
    pub fn check<'a>(
        &'a self,
        method: &str,
        host: &str,
        path: &'a str,
    ) -> Result<Params<'a>, Miss> {
        if !self
            .methods
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m == method))
        {
            return Err(Miss::Method);
        }
        if self.host.as_ref().is_some_and(|want| want != host) {
            return Err(Miss::Host);
        }
        self.path.matches(path).ok_or(Miss::Path)
    }
}

/// Which part of a request a route's matcher did not accept, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Method,
    Host,
    Path,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Any,
    /// The whole normalized path equals this (case-sensitive).
    Exact(String),
    /// Matches on segment boundaries: `/admin` matches `/admin` and `/admin/x`, never
    /// `/administrator`. A prefix ending in `/` matches only paths below it.
    Prefix(String),
    Template(PathTemplate),
}

impl PathMatch {
    /// The bound parameters when `path` (normalized) matches.
    pub fn matches<'a>(&'a self, path: &'a str) -> Option<Params<'a>> {
        match self {
            Self::Any => Some(Params::default()),
            Self::Exact(exact) => (exact == path).then(Params::default),
            Self::Prefix(prefix) => prefix_matches(prefix, path).then(Params::default),
            Self::Template(template) => template.matches(path),
        }
    }
}

pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// A compiled `/documents/{doc_id}` or `/files/{rest...}` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub source: String,
    segments: Vec<TemplateSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplateSegment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param(String),
    /// `{name...}`: the rest of the path, at least one segment.
    Rest(String),
}

/// Why a path template cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("a path template must start with `/`")]
    NotAbsolute,
    #[error("unbalanced `{{` or `}}` in segment `{0}`")]
    UnbalancedBraces(String),
    #[error("a parameter must be a whole segment (`/{{name}}`), not part of `{0}`")]
    PartialSegment(String),
    #[error("empty parameter name")]
    EmptyName,
    #[error("invalid parameter name `{0}`: use letters, digits and `_`, not starting with a digit")]
    InvalidName(String),
    #[error("parameter `{0}` is bound twice")]
    DuplicateName(String),
    #[error("`{{{0}...}}` must be the last segment")]
    RestNotLast(String),
    #[error("empty segment (`//`)")]
    EmptySegment,
    #[error("literal segment `{segment}`: {error}")]
    Literal { segment: String, error: PathError },
    #[error("literal segment `{segment}` is not in normalized form; write `{normalized}`")]
    NotNormalized { segment: String, normalized: String },
}

impl PathTemplate {
    /// Compiles a template such as `/documents/{doc_id}` or `/files/{path...}`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let body = source.strip_prefix('/').ok_or(TemplateError::NotAbsolute)?;
        let raw_segments: Vec<&str> = body.split('/').collect();
        let last = raw_segments.len() - 1;
        let mut segments = Vec::with_capacity(raw_segments.len());
        let mut names: Vec<&str> = Vec::new();
        for (index, raw) in raw_segments.iter().copied().enumerate() {
            let segment = if raw.contains(['{', '}']) {
                let inner = parse_param_segment(raw)?;
                let (name, rest) = match inner.strip_suffix("...") {
                    Some(name) => (name, true),
                    None => (inner, false),
                };
                validate_param_name(name)?;
                if names.contains(&name) {
                    return Err(TemplateError::DuplicateName(name.to_owned()));
                }
                names.push(name);
                if rest {
                    if index != last {
                        return Err(TemplateError::RestNotLast(name.to_owned()));
                    }
                    TemplateSegment::Rest(name.to_owned())
                } else {
                    TemplateSegment::Param(name.to_owned())
                }
            } else {
                // A trailing slash is a final empty segment; `//` anywhere else is not.
                if raw.is_empty() && index != last {
                    return Err(TemplateError::EmptySegment);
                }
                check_literal_segment(raw)?;
                TemplateSegment::Literal(raw.to_owned())
            };
            segments.push(segment);
        }
        Ok(Self {
            source: source.to_owned(),
            segments,
        })
    }

    /// Parameter names in template order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            TemplateSegment::Literal(_) => None,
            TemplateSegment::Param(name) | TemplateSegment::Rest(name) => Some(name.as_str()),
        })
    }

    /// The bound parameters when `path` (normalized) matches. Values are in normalized form
    /// (reserved characters stay percent-encoded).
    pub fn matches<'a>(&'a self, path: &'a str) -> Option<Params<'a>> {
        let mut rest = path.strip_prefix('/')?;
        let mut params = Vec::new();
        let last = self.segments.len().checked_sub(1)?;
        for (index, segment) in self.segments.iter().enumerate() {
            let (head, tail) = match rest.split_once('/') {
                Some((head, tail)) => (head, Some(tail)),
                None => (rest, None),
            };
            match segment {
                TemplateSegment::Rest(name) => {
                    // Normalized paths have no empty segment except a trailing one, so a
                    // non-empty first segment means at least one real segment is bound.
                    if head.is_empty() {
                        return None;
                    }
                    params.push((name.as_str(), rest));
                    return Some(Params(params));
                }
                TemplateSegment::Literal(literal) => {
                    if head != literal {
                        return None;
                    }
                }
                TemplateSegment::Param(name) => {
                    if head.is_empty() {
                        return None;
                    }
                    params.push((name.as_str(), head));
                }
            }
            if index == last {
                return tail.is_none().then_some(Params(params));
            }
            rest = tail?;
        }
        None
    }
}

fn parse_param_segment(raw: &str) -> Result<&str, TemplateError> {
    let opens = raw.matches('{').count();
    let closes = raw.matches('}').count();
    if opens != closes || opens > 1 {
        return Err(TemplateError::UnbalancedBraces(raw.to_owned()));
    }
    match raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        Some(inner) => Ok(inner),
        None if raw.find('{') < raw.find('}') => Err(TemplateError::PartialSegment(raw.to_owned())),
        None => Err(TemplateError::UnbalancedBraces(raw.to_owned())),
    }
}

fn validate_param_name(name: &str) -> Result<(), TemplateError> {
    let mut chars = name.chars();
    match chars.next() {
        None => Err(TemplateError::EmptyName),
        Some(first)
            if (first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(())
        }
        Some(_) => Err(TemplateError::InvalidName(name.to_owned())),
    }
}

fn check_literal_segment(segment: &str) -> Result<(), TemplateError> {
    let as_path = format!("/{segment}");
    let normalized = normalize(&as_path).map_err(|error| TemplateError::Literal {
        segment: segment.to_owned(),
        error,
    })?;
    if normalized.query.is_some() || normalized.path != as_path {
        return Err(TemplateError::NotNormalized {
            segment: segment.to_owned(),
            normalized: normalized.path[1..].to_owned(),
        });
    }
    Ok(())
}

/// Path parameters bound by a template (`doc_id` -> `42`), borrowed from the template and
/// the normalized path: matching allocates nothing per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a>(pub Vec<(&'a str, &'a str)>);

impl Params<'_> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// Below this many routes [`RouteTable::find`] scans linearly; from it on, it asks the
/// [`RouteIndex`] for candidates first. A matcher that misses costs a few nanoseconds (the
/// method or the first bytes of the path differ), while the index costs a hash of every path
/// segment it walks (tens of nanoseconds each): at 16 routes the two are about even, and small
/// tables, the common case, keep the plain first-match scan and no extra memory.
const INDEX_THRESHOLD: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// `None` below [`INDEX_THRESHOLD`] routes.
    index: Option<RouteIndex>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let index = (routes.len() >= INDEX_THRESHOLD).then(|| RouteIndex::new(&routes));
        Self { routes, index }
    }

    /// Every route, in the order they are tried.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route matching, with its path parameters. `path` must be the output of
    /// [`normalize`] and `host` the output of
    /// [`normalize_authority`](super::path::normalize_authority).
    pub fn find<'t: 'p, 'p>(
        &'t self,
        method: &str,
        host: &str,
        path: &'p str,
    ) -> Option<(&'t Route, Params<'p>)> {
        match (&self.index, path.strip_prefix('/')) {
            (Some(index), Some(segments)) => index.find(&self.routes, method, host, path, segments),
            // A path without its leading `/` is not normalized; the scan decides it as before.
            _ => self.routes.iter().find_map(|route| {
                route
                    .matcher
                    .matches(method, host, path)
                    .map(|params| (route, params))
            }),
        }
    }
}

/// A segment trie over the routes' path patterns that narrows which routes can match a path.
/// It never decides: the lowest-indexed candidate whose [`RouteMatch::matches`] accepts the
/// request wins, so methods, host, trailing slashes and the prefix rules stay the matcher's,
/// and the answer is the linear scan's. Every list holds route indices in ascending order.
#[derive(Debug, Clone, Default)]
struct RouteIndex {
    root: IndexNode,
    /// Routes the trie cannot place (`PathMatch::Any`, a pattern not starting with `/`):
    /// candidates for every path.
    always: Vec<usize>,
}

#[derive(Debug, Clone, Default)]
struct IndexNode {
    literals: HashMap<String, IndexNode>,
    /// The child for a `{param}` segment: any one segment.
    param: Option<Box<IndexNode>>,
    /// Prefix and `{rest...}` routes whose literal part ends here: candidates for every path
    /// that reaches this node.
    through: Vec<usize>,
    /// Exact paths and templates ending here: candidates for a path whose last segment
    /// reaches this node.
    end: Vec<usize>,
}

impl RouteIndex {
    fn new(routes: &[Route]) -> Self {
        let mut index = Self::default();
        for (position, route) in routes.iter().enumerate() {
            match &route.matcher.path {
                PathMatch::Any => index.always.push(position),
                PathMatch::Exact(exact) => match exact.strip_prefix('/') {
                    Some(body) => index.root.literal_path(body).end.push(position),
                    None => index.always.push(position),
                },
                // A prefix ending in `/` matches below it: the segments before that slash are
                // what every matching path starts with. Without it, the path is the prefix
                // itself or continues with `/`: the same segments.
                PathMatch::Prefix(prefix) => match prefix.strip_prefix('/') {
                    // `/`: every path.
                    Some("") => index.root.through.push(position),
                    Some(body) => {
                        let body = body.strip_suffix('/').unwrap_or(body);
                        index.root.literal_path(body).through.push(position);
                    }
                    None => index.always.push(position),
                },
                PathMatch::Template(template) => {
                    let mut node = &mut index.root;
                    let mut rest = false;
                    for segment in &template.segments {
                        node = match segment {
                            TemplateSegment::Literal(literal) => {
                                node.literals.entry(literal.clone()).or_default()
                            }
                            TemplateSegment::Param(_) => node.param.get_or_insert_default(),
                            TemplateSegment::Rest(_) => {
                                rest = true;
                                break;
                            }
                        };
                    }
                    if rest {
                        node.through.push(position);
                    } else {
                        node.end.push(position);
                    }
                }
            }
        }
        index
    }

    /// `segments` is `path` without its leading `/`.
    fn find<'t: 'p, 'p>(
        &'t self,
        routes: &'t [Route],
        method: &str,
        host: &str,
        path: &'p str,
        segments: &'p str,
    ) -> Option<(&'t Route, Params<'p>)> {
        let lookup = Lookup {
            routes,
            method,
            host,
            path,
        };
        let mut best = None;
        lookup.try_candidates(&self.always, &mut best);
        lookup.walk(&self.root, Some(segments), &mut best);
        let (position, params) = best?;
        Some((routes.get(position)?, params))
    }
}

impl IndexNode {
    /// The node at the end of the literal segments of `body` (a path without its leading
    /// `/`), created as needed.
    fn literal_path(&mut self, body: &str) -> &mut Self {
        body.split('/').fold(self, |node, segment| {
            node.literals.entry(segment.to_owned()).or_default()
        })
    }
}

/// One request's walk through the trie.
struct Lookup<'t, 'r, 'p> {
    routes: &'t [Route],
    method: &'r str,
    host: &'r str,
    /// The whole normalized path: the matcher sees what the scan shows it.
    path: &'p str,
}

impl<'t: 'p, 'p> Lookup<'t, '_, 'p> {
    /// Visits `node`, reached with `remaining` segments left (`None`: all consumed), and the
    /// children the next segment leads to. The trie is a tree, so each node is visited at
    /// most once and the recursion is no deeper than the longest route pattern.
    fn walk(
        &self,
        node: &'t IndexNode,
        remaining: Option<&'p str>,
        best: &mut Option<(usize, Params<'p>)>,
    ) {
        self.try_candidates(&node.through, best);
        let Some(remaining) = remaining else {
            self.try_candidates(&node.end, best);
            return;
        };
        let (head, tail) = match remaining.split_once('/') {
            Some((head, tail)) => (head, Some(tail)),
            None => (remaining, None),
        };
        if let Some(child) = node.literals.get(head) {
            self.walk(child, tail, best);
        }
        if let Some(child) = &node.param {
            self.walk(child, tail, best);
        }
    }

    /// Keeps in `best` the lowest index that matches among `best` and `candidates`
    /// (ascending): only indices below the current best are tried.
    fn try_candidates(&self, candidates: &[usize], best: &mut Option<(usize, Params<'p>)>) {
        for &position in candidates {
            if best.as_ref().is_some_and(|(found, _)| *found <= position) {
                return;
            }
            let Some(route) = self.routes.get(position) else {
                return;
            };
            if let Some(params) = route.matcher.matches(self.method, self.host, self.path) {
                *best = Some((position, params));
                return;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::authz::path::normalize_authority;
    use crate::authz::{OnDeny, Policy};

    fn template(source: &str) -> PathTemplate {
        PathTemplate::parse(source).expect("valid template")
    }

    pub(crate) fn route(
        name: &str,
        methods: Option<&[&str]>,
        host: Option<&str>,
        path: PathMatch,
    ) -> Route {
        Route {
            name: Arc::from(name),
            matcher: RouteMatch {
                methods: methods.map(|ms| ms.iter().map(|m| (*m).to_owned()).collect()),
                host: host.map(str::to_owned),
                path,
            },
            policy: Policy::Anonymous,
            on_deny: OnDeny::Forbidden,
            mode: crate::authz::Mode::Enforce,
        }
    }

    fn found<'a>(table: &'a RouteTable, method: &str, host: &str, target: &str) -> Option<&'a str> {
        let normalized = normalize(target).expect("normalizable target");
        let host = normalize_authority(host).expect("valid authority");
        table
            .find(method, &host, &normalized.path)
            .map(|(route, _)| &*route.name)
    }

    #[test]
    fn template_binds_params() {
        let t = template("/documents/{doc_id}/versions/{version}");
        let params = t.matches("/documents/42/versions/7").expect("matches");
        assert_eq!(params.get("doc_id"), Some("42"));
        assert_eq!(params.get("version"), Some("7"));
        assert_eq!(t.param_names().collect::<Vec<_>>(), ["doc_id", "version"]);
    }

    #[test]
    fn template_param_binds_exactly_one_non_empty_segment() {
        let t = template("/documents/{doc_id}");
        assert!(t.matches("/documents/42/extra").is_none());
        assert!(t.matches("/documents").is_none());
        assert!(t.matches("/documents/").is_none());
    }

    #[test]
    fn template_rest_binds_the_remaining_segments() {
        let t = template("/files/{path...}");
        let params = t.matches("/files/a/b/c.txt").expect("matches");
        assert_eq!(params.get("path"), Some("a/b/c.txt"));
        assert_eq!(
            t.matches("/files/a").expect("one segment").get("path"),
            Some("a")
        );
    }

    #[test]
    fn template_rest_needs_at_least_one_segment() {
        let t = template("/files/{path...}");
        assert!(t.matches("/files").is_none());
        assert!(t.matches("/files/").is_none());
    }

    #[test]
    fn template_literals_match_case_sensitively() {
        let t = template("/Documents/{id}");
        assert!(t.matches("/Documents/1").is_some());
        assert!(t.matches("/documents/1").is_none());
    }

    #[test]
    fn template_with_trailing_slash_needs_the_trailing_slash() {
        let t = template("/documents/{id}/");
        assert!(t.matches("/documents/1/").is_some());
        assert!(t.matches("/documents/1").is_none());
    }

    #[test]
    fn rejects_unbalanced_braces_in_templates() {
        for source in ["/a/{id", "/a/id}", "/a/{{id}}", "/a/}id{"] {
            assert!(
                matches!(
                    PathTemplate::parse(source),
                    Err(TemplateError::UnbalancedBraces(_))
                ),
                "{source}"
            );
        }
    }

    #[test]
    fn rejects_duplicate_param_names() {
        assert_eq!(
            PathTemplate::parse("/a/{id}/b/{id}"),
            Err(TemplateError::DuplicateName("id".to_owned()))
        );
    }

    #[test]
    fn rejects_empty_and_invalid_param_names() {
        assert_eq!(PathTemplate::parse("/a/{}"), Err(TemplateError::EmptyName));
        assert_eq!(
            PathTemplate::parse("/a/{...}"),
            Err(TemplateError::EmptyName)
        );
        assert!(matches!(
            PathTemplate::parse("/a/{1x}"),
            Err(TemplateError::InvalidName(_))
        ));
        assert!(matches!(
            PathTemplate::parse("/a/{doc-id}"),
            Err(TemplateError::InvalidName(_))
        ));
    }

    #[test]
    fn rejects_rest_param_that_is_not_last() {
        assert_eq!(
            PathTemplate::parse("/files/{path...}/meta"),
            Err(TemplateError::RestNotLast("path".to_owned()))
        );
    }

    #[test]
    fn rejects_params_inside_a_segment() {
        assert!(matches!(
            PathTemplate::parse("/files/{name}.json"),
            Err(TemplateError::PartialSegment(_))
        ));
    }

    #[test]
    fn rejects_template_literals_that_are_not_normalized() {
        assert!(matches!(
            PathTemplate::parse("/%61dmin/{id}"),
            Err(TemplateError::NotNormalized { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/../{id}"),
            Err(TemplateError::Literal {
                error: PathError::DotSegment,
                ..
            })
        ));
        assert_eq!(
            PathTemplate::parse("/a//{id}"),
            Err(TemplateError::EmptySegment)
        );
        assert_eq!(
            PathTemplate::parse("a/{id}"),
            Err(TemplateError::NotAbsolute)
        );
    }

    // ---- route table ----

    #[test]
    fn no_route_matches() {
        let table = RouteTable::new(vec![route(
            "docs",
            None,
            None,
            PathMatch::Exact("/documents".to_owned()),
        )]);
        assert_eq!(found(&table, "GET", "api", "/other"), None);
        assert!(RouteTable::default().find("GET", "api", "/").is_none());
    }

    #[test]
    fn exact_path_matches_only_that_path() {
        let table = RouteTable::new(vec![route(
            "docs",
            None,
            None,
            PathMatch::Exact("/documents".to_owned()),
        )]);
        assert_eq!(found(&table, "GET", "api", "/documents"), Some("docs"));
        assert_eq!(found(&table, "GET", "api", "/documents/"), None);
        assert_eq!(found(&table, "GET", "api", "/documents/1"), None);
        assert_eq!(found(&table, "GET", "api", "/Documents"), None);
    }

    #[test]
    fn query_string_ignored() {
        let table = RouteTable::new(vec![route(
            "docs",
            None,
            None,
            PathMatch::Exact("/documents".to_owned()),
        )]);
        assert_eq!(
            found(&table, "GET", "api", "/documents?path=/admin"),
            Some("docs")
        );
    }

    #[test]
    fn encoded_unreserved_characters_match_their_decoded_route() {
        let table = RouteTable::new(vec![route(
            "admin",
            None,
            None,
            PathMatch::Prefix("/admin".to_owned()),
        )]);
        assert_eq!(found(&table, "GET", "api", "/%61dmin/users"), Some("admin"));
    }

    #[test]
    fn prefix_matches_itself_and_below() {
        let table = RouteTable::new(vec![route(
            "admin",
            None,
            None,
            PathMatch::Prefix("/admin".to_owned()),
        )]);
        assert_eq!(found(&table, "GET", "api", "/admin"), Some("admin"));
        assert_eq!(found(&table, "GET", "api", "/admin/"), Some("admin"));
        assert_eq!(found(&table, "GET", "api", "/admin/users/1"), Some("admin"));
    }

    #[test]
    fn prefix_does_not_match_a_longer_segment() {
        let table = RouteTable::new(vec![route(
            "admin",
            None,
            None,
            PathMatch::Prefix("/admin".to_owned()),
        )]);
        assert_eq!(found(&table, "GET", "api", "/administrator"), None);
        assert_eq!(found(&table, "GET", "api", "/admin-panel/x"), None);
    }

    #[test]
    fn prefix_with_trailing_slash_matches_only_below_it() {
        let table = RouteTable::new(vec![route(
            "below",
            None,
            None,
            PathMatch::Prefix("/admin/".to_owned()),
        )]);
        assert_eq!(found(&table, "GET", "api", "/admin/x"), Some("below"));
        assert_eq!(found(&table, "GET", "api", "/admin"), None);
    }

    #[test]
    fn root_prefix_matches_everything() {
        let table = RouteTable::new(vec![route(
            "all",
            None,
            None,
            PathMatch::Prefix("/".to_owned()),
        )]);
        assert_eq!(found(&table, "GET", "api", "/"), Some("all"));
        assert_eq!(found(&table, "GET", "api", "/a/b"), Some("all"));
    }

    #[test]
    fn template_route_returns_bound_params() {
        let table = RouteTable::new(vec![route(
            "doc",
            None,
            None,
            PathMatch::Template(template("/documents/{doc_id}")),
        )]);
        let (route, params) = table
            .find("GET", "api", "/documents/42")
            .expect("template matches");
        assert_eq!(&*route.name, "doc");
        assert_eq!(params.get("doc_id"), Some("42"));
    }

    #[test]
    fn method_must_be_listed() {
        let table = RouteTable::new(vec![route(
            "read",
            Some(&["GET", "HEAD"]),
            None,
            PathMatch::Any,
        )]);
        assert_eq!(found(&table, "GET", "api", "/x"), Some("read"));
        assert_eq!(found(&table, "HEAD", "api", "/x"), Some("read"));
        assert_eq!(found(&table, "POST", "api", "/x"), None);
        assert_eq!(found(&table, "get", "api", "/x"), None);
    }

    #[test]
    fn host_match_ignores_port_and_case() {
        let table = RouteTable::new(vec![route(
            "api",
            None,
            Some("api.example.com"),
            PathMatch::Any,
        )]);
        assert_eq!(found(&table, "GET", "api.example.com", "/"), Some("api"));
        assert_eq!(
            found(&table, "GET", "API.Example.COM:8443", "/"),
            Some("api")
        );
        assert_eq!(found(&table, "GET", "api.example.com.", "/"), Some("api"));
        assert_eq!(found(&table, "GET", "other.example.com", "/"), None);
        assert_eq!(found(&table, "GET", "api.example.com.evil", "/"), None);
    }

    #[test]
    fn host_match_handles_ipv6_literals() {
        let table = RouteTable::new(vec![route("v6", None, Some("[::1]"), PathMatch::Any)]);
        assert_eq!(found(&table, "GET", "[::1]:9191", "/"), Some("v6"));
        assert_eq!(found(&table, "GET", "[::1]", "/"), Some("v6"));
        assert_eq!(found(&table, "GET", "[::2]", "/"), None);
    }

    #[test]
    fn first_match_wins() {
        let table = RouteTable::new(vec![
            route(
                "specific",
                None,
                None,
                PathMatch::Exact("/documents".to_owned()),
            ),
            route("general", None, None, PathMatch::Prefix("/".to_owned())),
            route(
                "never",
                None,
                None,
                PathMatch::Exact("/documents".to_owned()),
            ),
        ]);
        assert_eq!(found(&table, "GET", "api", "/documents"), Some("specific"));
        assert_eq!(found(&table, "GET", "api", "/other"), Some("general"));
    }

    // ---- the index above INDEX_THRESHOLD routes ----

    /// `count` exact routes no test request reaches, to put a table above the threshold.
    fn filler(count: usize) -> impl Iterator<Item = Route> {
        (0..count).map(|n| {
            route(
                &format!("filler{n}"),
                None,
                None,
                PathMatch::Exact(format!("/filler/{n}")),
            )
        })
    }

    #[test]
    fn indexed_table_keeps_first_match_across_trie_branches() {
        let mut routes = vec![
            route(
                "read-any-doc",
                Some(&["GET"]),
                None,
                PathMatch::Template(template("/docs/{id}")),
            ),
            route("new-doc", None, None, PathMatch::Exact("/docs/new".into())),
            route("docs-below", None, None, PathMatch::Prefix("/docs/".into())),
            route(
                "files",
                None,
                None,
                PathMatch::Template(template("/files/{path...}")),
            ),
            route("scoped", None, Some("api"), PathMatch::Any),
        ];
        routes.extend(filler(INDEX_THRESHOLD));
        routes.push(route("rest", None, None, PathMatch::Prefix("/".into())));
        let table = RouteTable::new(routes);
        assert!(table.index.is_some(), "the table is above the threshold");
        // The `{id}` branch comes first in the table, the literal `new` second.
        assert_eq!(found(&table, "GET", "x", "/docs/new"), Some("read-any-doc"));
        assert_eq!(found(&table, "POST", "x", "/docs/new"), Some("new-doc"));
        assert_eq!(found(&table, "POST", "x", "/docs/7"), Some("docs-below"));
        assert_eq!(found(&table, "POST", "x", "/docs"), Some("rest"));
        assert_eq!(found(&table, "GET", "x", "/files/a/b"), Some("files"));
        assert_eq!(found(&table, "GET", "x", "/files"), Some("rest"));
        assert_eq!(found(&table, "GET", "api", "/files"), Some("scoped"));
        assert_eq!(found(&table, "GET", "x", "/filler/3"), Some("filler3"));
        let (_, params) = table.find("GET", "x", "/files/a/b").expect("files matches");
        assert_eq!(params.get("path"), Some("a/b"));
    }

    #[test]
    fn indexed_table_without_a_match_finds_nothing() {
        let table = RouteTable::new(filler(INDEX_THRESHOLD).collect());
        assert!(table.index.is_some(), "the table is above the threshold");
        assert_eq!(found(&table, "GET", "x", "/filler"), None);
        assert_eq!(found(&table, "GET", "x", "/filler/1/"), None);
        assert_eq!(found(&table, "GET", "x", "/"), None);
    }

    mod index_properties {
        use proptest::prelude::*;

        use super::*;

        const SEGMENTS: [&str; 3] = ["a", "b", "c"];

        fn segments(max: usize) -> impl Strategy<Value = Vec<&'static str>> {
            prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 0..max)
        }

        /// `/`, `/a/b`, or with `slash` `/a/b/`.
        fn spelled(segments: &[&str], slash: bool) -> String {
            let mut path = format!("/{}", segments.join("/"));
            if slash && !segments.is_empty() {
                path.push('/');
            }
            path
        }

        #[derive(Debug, Clone)]
        enum Piece {
            Literal(&'static str),
            Param,
        }

        #[derive(Debug, Clone, Copy)]
        enum Ending {
            None,
            Slash,
            Rest,
        }

        fn template_source(pieces: &[Piece], ending: Ending) -> String {
            let mut source = String::new();
            for (n, piece) in pieces.iter().enumerate() {
                match piece {
                    Piece::Literal(literal) => source.push_str(&format!("/{literal}")),
                    Piece::Param => source.push_str(&format!("/{{p{n}}}")),
                }
            }
            match ending {
                Ending::Rest => source.push_str("/{rest...}"),
                Ending::Slash | Ending::None if source.is_empty() => source.push('/'),
                Ending::Slash => source.push('/'),
                Ending::None => {}
            }
            source
        }

        fn path_match() -> impl Strategy<Value = PathMatch> {
            let piece = prop_oneof![
                prop::sample::select(&SEGMENTS[..]).prop_map(Piece::Literal),
                Just(Piece::Param),
            ];
            let ending = prop_oneof![Just(Ending::None), Just(Ending::Slash), Just(Ending::Rest)];
            prop_oneof![
                1 => Just(PathMatch::Any),
                3 => (segments(4), any::<bool>())
                    .prop_map(|(s, slash)| PathMatch::Exact(spelled(&s, slash))),
                3 => (segments(4), any::<bool>())
                    .prop_map(|(s, slash)| PathMatch::Prefix(spelled(&s, slash))),
                4 => (prop::collection::vec(piece, 0..4), ending).prop_map(|(pieces, ending)| {
                    PathMatch::Template(template(&template_source(&pieces, ending)))
                }),
            ]
        }

        fn table_route() -> impl Strategy<Value = Route> {
            let methods = prop::option::of(prop::sample::subsequence(vec!["GET", "POST"], 1..=2));
            let host = prop::option::of(prop::sample::select(vec!["h1", "h2"]));
            (path_match(), methods, host)
                .prop_map(|(path, methods, host)| route("r", methods.as_deref(), host, path))
        }

        /// The linear first-match scan, as `find` does below the threshold.
        fn scan<'t: 'p, 'p>(
            routes: &'t [Route],
            method: &str,
            host: &str,
            path: &'p str,
        ) -> Option<(usize, Params<'p>)> {
            routes.iter().enumerate().find_map(|(position, route)| {
                route
                    .matcher
                    .matches(method, host, path)
                    .map(|params| (position, params))
            })
        }

        proptest! {
            // No regression files written into the tree: a failure prints its minimal input,
            // which then becomes an example test above.
            #![proptest_config(ProptestConfig {
                cases: 500,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn indexed_find_returns_the_first_matching_route_and_its_params(
                routes in prop::collection::vec(table_route(), INDEX_THRESHOLD..4 * INDEX_THRESHOLD),
                requests in prop::collection::vec(
                    (
                        prop::sample::select(vec!["GET", "POST", "PUT"]),
                        prop::sample::select(vec!["h1", "h2", "h3"]),
                        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 0..6),
                        any::<bool>(),
                    ),
                    1..32,
                ),
            ) {
                let table = RouteTable::new(routes);
                prop_assert!(table.index.is_some());
                for (method, host, segments, slash) in requests {
                    let path = spelled(&segments, slash);
                    let indexed = table.find(method, host, &path).map(|(route, params)| {
                        let position = table
                            .routes()
                            .iter()
                            .position(|r| std::ptr::eq(r, route));
                        (position, params)
                    });
                    let scanned = scan(table.routes(), method, host, &path)
                        .map(|(position, params)| (Some(position), params));
                    prop_assert_eq!(indexed, scanned, "{} {} {}", method, host, path);
                }
            }
        }
    }
}

//! The configuration text before serde sees it: hostile-input checks and the position index.
//!
//! One streaming pass with `yaml-rust2`'s marked event parser (which never expands aliases)
//! does two jobs:
//! - refuses documents nested deeper than [`MAX_DEPTH`], documents whose aliases would expand
//!   to more than [`MAX_EXPANDED_NODES`] nodes ("billion laughs" and its quadratic cousins),
//!   and repeated keys in one mapping — before `serde_yaml_ng` builds anything in memory;
//! - records where every node is (`routes[2].require.scopes` → line 14, column 9), so that
//!   errors found after deserialization can still point at the file.
//!
//! This module must never build an expanded tree of the document.

use std::collections::{HashMap, HashSet};
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// Deepest nesting accepted. portcullis's schema needs 5 levels; 64 leaves room for any
/// sensible layout while keeping every parser far from its own limits.
pub const MAX_DEPTH: usize = 64;

/// Most nodes a document may have once every alias is expanded. A large real configuration
/// (thousands of routes) has tens of thousands; the cap keeps the memory serde may use for
/// the expanded tree to a few MiB, and the time to refuse a hostile file to a fraction of a
/// second, no matter how aliases are nested.
pub const MAX_EXPANDED_NODES: u64 = 100_000;

fn too_many_nodes() -> String {
    format!(
        "the document has more than {MAX_EXPANDED_NODES} nodes once aliases are expanded \
         (an alias bomb?)"
    )
}

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_marker(marker: Marker) -> Self {
        // yaml-rust2 lines are 1-based and columns 0-based.
        Self {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// One step in a path through the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path like `routes[2].require.scopes`, as users see it in errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YamlPath(pub Vec<Segment>);

impl YamlPath {
    pub fn root() -> Self {
        Self::default()
    }

    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub fn join(&self, other: &YamlPath) -> Self {
        let mut path = self.clone();
        path.0.extend(other.0.iter().cloned());
        path
    }

    pub fn parent(&self) -> Option<Self> {
        let mut path = self.clone();
        path.0.pop().map(|_| path)
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &YamlPath) -> bool {
        self.0.starts_with(&other.0)
    }

    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(key)) => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// `parent.key` as [`YamlPath`] displays it.
fn child_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Which position of a node an error should point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The key of a mapping entry (unknown or unsupported keys).
    Key,
    /// The value (wrong type, invalid value, missing field inside it).
    Value,
}

#[derive(Debug, Clone, Copy)]
struct NodePosition {
    key: Option<Mark>,
    value: Mark,
}

/// Where each node of the document is, by path.
#[derive(Debug, Default)]
pub struct PositionIndex {
    nodes: HashMap<String, NodePosition>,
}

impl PositionIndex {
    /// The position for `path`, or for its nearest ancestor that has one (nodes reached only
    /// through an alias are located at the alias).
    pub fn locate(&self, path: &YamlPath, anchor: Anchor) -> Option<Mark> {
        let mut current = Some(path.clone());
        let mut exact = true;
        while let Some(path) = current {
            if let Some(node) = self.nodes.get(&path.to_string()) {
                return Some(match (anchor, exact) {
                    (Anchor::Key, true) => node.key.unwrap_or(node.value),
                    _ => node.value,
                });
            }
            exact = false;
            current = path.parent();
        }
        None
    }
}

/// Why the text was refused before deserialization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    /// Displayed like [`YamlPath`].
    pub path: String,
    pub mark: Mark,
    pub message: String,
}

/// The result of the pre-pass.
#[derive(Debug)]
pub struct Scan {
    pub index: PositionIndex,
    /// Refusals: hostile structure or repeated keys. Non-empty means "do not deserialize".
    pub problems: Vec<SourceProblem>,
    /// The event parser stopped on a syntax error (reported by serde_yaml_ng instead, whose
    /// libyaml messages are better); the index and the checks cover the text before it only.
    pub syntax_error: Option<(Mark, String)>,
}

enum Frame {
    Mapping {
        path: String,
        /// The key just read, waiting for its value.
        pending_key: Option<(String, Mark)>,
        seen: HashSet<String>,
        anchor: usize,
        expanded: u64,
    },
    Sequence {
        path: String,
        next: usize,
        anchor: usize,
        expanded: u64,
    },
}

impl Frame {
    fn expanded_mut(&mut self) -> &mut u64 {
        match self {
            Frame::Mapping { expanded, .. } | Frame::Sequence { expanded, .. } => expanded,
        }
    }
}

/// Scans `text`: position index plus the structural refusals described in the module docs.
pub fn scan(text: &str) -> Scan {
    let mut scanner = Scanner::default();
    let mut parser = Parser::new_from_str(text);
    let mut syntax_error = None;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(next) => next,
            Err(error) => {
                let mark = Mark::from_marker(*error.marker());
                // yaml-rust2 scans flow collections ahead of the events it hands out, so its
                // own nesting limit can fire before ours does.
                if error.info().contains("recursion limit") {
                    scanner.problems.push(SourceProblem {
                        path: scanner.current_path(),
                        mark,
                        message: format!("nesting is deeper than {MAX_DEPTH} levels"),
                    });
                } else {
                    syntax_error = Some((mark, error.info().to_owned()));
                }
                break;
            }
        };
        let mark = Mark::from_marker(marker);
        match scanner.on_event(event, mark) {
            Step::Continue => {}
            Step::Stop => break,
        }
    }
    Scan {
        index: scanner.index,
        problems: scanner.problems,
        syntax_error,
    }
}

enum Step {
    Continue,
    Stop,
}

#[derive(Default)]
struct Scanner {
    index: PositionIndex,
    problems: Vec<SourceProblem>,
    stack: Vec<Frame>,
    /// Expanded size of each anchored node, by anchor id.
    anchors: HashMap<usize, u64>,
    /// Expanded size of the document so far.
    total: u64,
    documents: usize,
}

impl Scanner {
    fn on_event(&mut self, event: Event, mark: Mark) -> Step {
        match event {
            Event::StreamEnd => return Step::Stop,
            Event::DocumentStart => {
                self.documents += 1;
                // serde_yaml_ng refuses a second document with its own message.
                if self.documents > 1 {
                    return Step::Stop;
                }
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::Scalar(value, _, anchor, _) => {
                self.enter(Some(value), mark);
                if anchor != 0 {
                    self.anchors.insert(anchor, 1);
                }
                return self.add(1, mark);
            }
            Event::Alias(anchor) => {
                self.enter(None, mark);
                let size = self.anchors.get(&anchor).copied().unwrap_or(1);
                return self.add(size, mark);
            }
            Event::MappingStart(anchor, _) => {
                let path = self.enter(None, mark);
                self.stack.push(Frame::Mapping {
                    path,
                    pending_key: None,
                    seen: HashSet::new(),
                    anchor,
                    expanded: 1,
                });
                return self.check_depth(mark);
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.enter(None, mark);
                self.stack.push(Frame::Sequence {
                    path,
                    next: 0,
                    anchor,
                    expanded: 1,
                });
                return self.check_depth(mark);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (anchor, expanded) = match self.stack.pop() {
                    Some(Frame::Mapping {
                        anchor, expanded, ..
                    })
                    | Some(Frame::Sequence {
                        anchor, expanded, ..
                    }) => (anchor, expanded),
                    None => return Step::Stop,
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, expanded);
                }
                if let Some(parent) = self.stack.last_mut() {
                    let total = parent.expanded_mut();
                    *total = total.saturating_add(expanded);
                }
            }
        }
        Step::Continue
    }

    /// Registers a node starting at `mark` under the current parent and returns its path.
    /// `scalar` is the text of a scalar node (needed when the node is a mapping key).
    /// Paths are kept as display strings: this runs once per node of a possibly large file.
    fn enter(&mut self, scalar: Option<String>, mark: Mark) -> String {
        let (path, key_mark) = match self.stack.last_mut() {
            None => (String::new(), None),
            Some(Frame::Sequence { path, next, .. }) => {
                let path = format!("{path}[{next}]");
                *next += 1;
                (path, None)
            }
            Some(Frame::Mapping {
                path,
                pending_key,
                seen,
                ..
            }) => match pending_key.take() {
                Some((key, key_mark)) => (child_key(path, &key), Some(key_mark)),
                None => {
                    // This node is a key. Complex (non-scalar) keys get a placeholder name;
                    // serde rejects them later with its own message.
                    let key = scalar.unwrap_or_else(|| "?".to_owned());
                    let key_path = child_key(path, &key);
                    // A block mapping's start event is marked at its first `:`; the first key
                    // is where a reader expects "this mapping" to be.
                    if seen.is_empty()
                        && let Some(node) = self.index.nodes.get_mut(path.as_str())
                        && (mark.line, mark.column) < (node.value.line, node.value.column)
                    {
                        node.value = mark;
                    }
                    if !seen.insert(key.clone()) {
                        self.problems.push(SourceProblem {
                            path: key_path.clone(),
                            mark,
                            message: format!("key `{key}` is repeated in this mapping"),
                        });
                    }
                    *pending_key = Some((key, mark));
                    return key_path;
                }
            },
        };
        self.index
            .nodes
            .entry(path.clone())
            .or_insert(NodePosition {
                key: key_mark,
                value: mark,
            });
        path
    }

    /// Counts `size` expanded nodes (1 for an ordinary node, the anchor's size for an alias).
    fn add(&mut self, size: u64, mark: Mark) -> Step {
        // Keys are scalars too; counting them keeps the arithmetic simple and errs small.
        if let Some(parent) = self.stack.last_mut() {
            let total = parent.expanded_mut();
            *total = total.saturating_add(size);
        }
        self.count_nodes(size, mark)
    }

    fn check_depth(&mut self, mark: Mark) -> Step {
        // Opening a collection is a node too.
        let step = self.add_collection_node(mark);
        if matches!(step, Step::Stop) {
            return step;
        }
        if self.stack.len() > MAX_DEPTH {
            self.problems.push(SourceProblem {
                path: self.current_path(),
                mark,
                message: format!("nesting is deeper than {MAX_DEPTH} levels"),
            });
            return Step::Stop;
        }
        Step::Continue
    }

    fn add_collection_node(&mut self, mark: Mark) -> Step {
        self.count_nodes(1, mark)
    }

    /// Adds `size` to the document's expanded-node total; stops the scan past the cap.
    fn count_nodes(&mut self, size: u64, mark: Mark) -> Step {
        self.total = self.total.saturating_add(size);
        if self.total > MAX_EXPANDED_NODES {
            self.problems.push(SourceProblem {
                path: self.current_path(),
                mark,
                message: too_many_nodes(),
            });
            return Step::Stop;
        }
        Step::Continue
    }

    fn current_path(&self) -> String {
        match self.stack.last() {
            Some(Frame::Mapping { path, .. }) | Some(Frame::Sequence { path, .. }) => path.clone(),
            None => String::new(),
        }
    }
}

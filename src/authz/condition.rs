//! `require.when`: a CEL condition (the language of Envoy RBAC, Istio and Kubernetes admission),
//! compiled once when the configuration loads and evaluated against one request.
//!
//! Variables: `subject` (the verified identity: every claim, plus `sub`, `iss`, `roles`,
//! `scopes` and `auth_method` as portcullis resolved them), `resource` (the route's path
//! parameters), `request` (`method`, `host`, `path`, `headers`, `query`), `source`
//! (`address`, `principal`) and `now` (a timestamp).
//!
//! Cost: nothing is converted ahead of evaluation. Each variable is a view over the request
//! and the identity that answers a field when the expression reads it (`subject.sub` borrows
//! the subject, it does not copy the claims), so a condition pays for what it reads, and a
//! route without a condition pays nothing.
//!
//! Fail closed: an expression that cannot be evaluated (a missing claim, a wrong type, a
//! result that is not a bool) is an error the engine refuses with its own reason; nothing in
//! here panics on a request's data. It must never log claim or header values.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::traits::{Container, Indexer};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt, MAP_TYPE, Type,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Program, Value};

use super::Resource;
use crate::identity::Identity;

/// The variables an expression may name.
pub const VARIABLES: [&str; 5] = ["subject", "resource", "request", "source", "now"];

/// The fields of the variables whose shape is fixed (a typo there is a load error).
const REQUEST_FIELDS: [&str; 5] = ["method", "host", "path", "headers", "query"];
const SOURCE_FIELDS: [&str; 2] = ["address", "principal"];

/// Type names an expression may use as values (`type(x) == string`).
const TYPE_NAMES: [&str; 12] = [
    "bool",
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "timestamp",
    "uint",
];

/// CEL's standard environment, built once for every condition.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled `require.when`. Compares by its source text: two conditions written alike are
/// the same condition.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Condition {}

/// Why an expression does not compile, with where in the expression (1-based line and
/// column of the expression text itself, not of the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (CEL, line {line}, column {column} of the expression)")]
pub struct CompileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a condition could not be evaluated for one request: the engine refuses it
/// (`condition_error`). The text may quote request or claim values: it is for the operator's
/// tools (`explain`), never for a log line or the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvaluationError {
    #[error("{0}")]
    Failed(ExecutionError),
    #[error("the condition gave a {0}, not a bool")]
    NotBool(String),
}

impl Condition {
    /// Compiles `source`: a syntax error, a variable other than [`VARIABLES`], a field the
    /// fixed-shape variables (`request`, `source`) do not have, a part without variables that
    /// always fails (`1 + 'a'`), or a result that is plainly not a bool is an error.
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        if source.trim().is_empty() {
            return Err(CompileError {
                line: 1,
                column: 1,
                message: "the expression is empty".to_owned(),
            });
        }
        let program = ENV.compile(source).map_err(|errors| {
            let first = errors.errors.first();
            let (line, column) = first.map_or((1, 1), |error| error.pos);
            CompileError {
                line: usize::try_from(line).unwrap_or(1).max(1),
                column: usize::try_from(column).unwrap_or(1).max(1),
                // The parser's message starts "Syntax error: ...".
                message: first.map_or_else(|| "Syntax error".to_owned(), |error| error.msg.clone()),
            }
        })?;
        let check = Checker {
            program: &program,
            source,
        };
        let root = program.expression();
        check.result_is_bool(root)?;
        check.walk(root, &mut Vec::new())?;
        Ok(Self {
            source: Arc::from(source),
            program: Arc::new(program),
        })
    }

    /// The expression as written in the configuration.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `identity` and `resource` meet the condition.
    pub fn evaluate(
        &self,
        identity: &Identity,
        resource: &Resource<'_>,
    ) -> Result<bool, EvaluationError> {
        self.run(identity, resource, |value| {
            let value = value.map_err(EvaluationError::Failed)?;
            match value.downcast_ref::<CelBool>() {
                Some(result) => Ok(*result.inner()),
                None => Err(EvaluationError::NotBool(value.get_type().name().to_owned())),
            }
        })
    }

    /// The expression's value for `identity` and `resource` as text (`true`, `"alice"`,
    /// `[1, 2]`), or the evaluation error as text: for the operator's tools (`explain`, policy
    /// tests), which show what a condition made of a request. The text may quote claims and
    /// headers; never log it.
    pub fn value_text(&self, identity: &Identity, resource: &Resource) -> Result<String, String> {
        self.run(identity, resource, |value| {
            let value = value.map_err(|error| error.to_string())?;
            Ok(match Value::try_from(value) {
                Ok(value) => display(&value),
                Err(_) => format!("<{}>", value.get_type().name()),
            })
        })
    }

    /// Evaluates the expression over views of `identity` and `resource` and hands the result
    /// (borrowed from them where it can be) to `then`.
    fn run<R>(
        &self,
        identity: &Identity,
        resource: &Resource<'_>,
        then: impl FnOnce(Result<&dyn Val, ExecutionError>) -> R,
    ) -> R {
        let activation = Activation { identity, resource };
        let mut context = Context::with_env(ENV.clone());
        context.set_variable_resolver(&activation);
        match Value::resolve_val(self.program.expression(), &context) {
            Ok(value) => then(Ok(value.as_ref())),
            Err(error) => then(Err(error)),
        }
    }
}

/// A CEL value written the way an expression would write it.
fn display(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{:?}", text.as_str()),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => format!("{u}u"),
        Value::Float(f) => f.to_string(),
        Value::Null => "null".to_owned(),
        Value::Timestamp(t) => format!("timestamp({:?})", t.to_rfc3339()),
        Value::List(items) => {
            let items: Vec<String> = items.iter().map(display).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Map(map) => {
            let mut entries: Vec<String> = map
                .map
                .iter()
                .map(|(key, value)| format!("{}: {}", display(&Value::from(key)), display(value)))
                .collect();
            entries.sort();
            format!("{{{}}}", entries.join(", "))
        }
        other => format!("{other:?}"),
    }
}

/// The load-time checks over a parsed expression.
struct Checker<'a> {
    program: &'a Program,
    source: &'a str,
}

impl Checker<'_> {
    /// A problem at `node`'s place in the expression.
    fn error(&self, node: &IdedExpr, message: String) -> CompileError {
        let (line, column) = self
            .program
            .source_info()
            .offset_for(node.id)
            .map_or((1, 1), |(start, _)| {
                line_column(self.source, start as usize)
            });
        CompileError {
            line,
            column,
            message,
        }
    }

    /// The root must be able to give a bool: a literal, list, map, arithmetic or one of the
    /// variables themselves never does.
    fn result_is_bool(&self, root: &IdedExpr) -> Result<(), CompileError> {
        let gives = match &root.expr {
            Expr::Literal(literal) => {
                let value = literal.to_val();
                (value.downcast_ref::<CelBool>().is_none())
                    .then(|| value.get_type().name().to_owned())
            }
            Expr::List(_) => Some("list".to_owned()),
            Expr::Map(_) | Expr::Struct(_) => Some("map".to_owned()),
            Expr::Ident(name) if VARIABLES.contains(&name.as_str()) => Some(format!("`{name}`")),
            // The fixed-shape variables hold strings and maps only.
            Expr::Select(select)
                if !select.test
                    && matches!(&select.operand.expr, Expr::Ident(name)
                        if name == "request" || name == "source") =>
            {
                Some(format!("`{}`", select.field))
            }
            Expr::Call(call)
                if matches!(
                    call.func_name.as_str(),
                    "_+_"
                        | "_-_"
                        | "_*_"
                        | "_/_"
                        | "_%_"
                        | "-_"
                        | "size"
                        | "string"
                        | "int"
                        | "uint"
                        | "double"
                        | "bytes"
                        | "timestamp"
                        | "duration"
                        | "type"
                ) =>
            {
                Some(format!(
                    "the value of `{}`",
                    call.func_name.trim_matches('_')
                ))
            }
            _ => None,
        };
        match gives {
            Some(what) => Err(self.error(
                root,
                format!("the condition must give a bool (true allows), but it gives {what}"),
            )),
            None => Ok(()),
        }
    }

    /// Unknown variables and fields, and parts without variables that always fail.
    fn walk(&self, node: &IdedExpr, bound: &mut Vec<String>) -> Result<(), CompileError> {
        match &node.expr {
            Expr::Ident(name)
                if !bound.iter().any(|b| b == name)
                    && !VARIABLES.contains(&name.as_str())
                    && !TYPE_NAMES.contains(&name.as_str()) =>
            {
                return Err(self.error(
                    node,
                    format!(
                        "unknown variable `{name}`: the variables are {}",
                        VARIABLES.join(", ")
                    ),
                ));
            }
            Expr::Select(select) => {
                if let Expr::Ident(name) = &select.operand.expr
                    && !bound.iter().any(|b| b == name)
                {
                    let fields: &[&str] = match name.as_str() {
                        "request" => &REQUEST_FIELDS,
                        "source" => &SOURCE_FIELDS,
                        "now" => &[],
                        _ => &["*"],
                    };
                    if !fields.contains(&"*") && !fields.contains(&select.field.as_str()) {
                        let message = if fields.is_empty() {
                            format!(
                                "`{name}` is a timestamp: it has no field `{}`",
                                select.field
                            )
                        } else {
                            format!(
                                "`{name}` has no field `{}`: its fields are {}",
                                select.field,
                                fields.join(", ")
                            )
                        };
                        return Err(self.error(node, message));
                    }
                }
                self.walk(&select.operand, bound)?;
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target, bound)?;
                }
                for arg in &call.args {
                    self.walk(arg, bound)?;
                }
                self.constant_part(node)?;
            }
            Expr::Comprehension(comprehension) => {
                self.walk(&comprehension.iter_range, bound)?;
                self.walk(&comprehension.accu_init, bound)?;
                let before = bound.len();
                bound.push(comprehension.iter_var.clone());
                bound.extend(comprehension.iter_var2.clone());
                bound.push(comprehension.accu_var.clone());
                let inner = [
                    &comprehension.loop_cond,
                    &comprehension.loop_step,
                    &comprehension.result,
                ];
                let result = inner
                    .into_iter()
                    .try_for_each(|part| self.walk(part, bound));
                bound.truncate(before);
                result?;
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.walk(element, bound)?;
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.walk(&entry.key, bound)?;
                            self.walk(&entry.value, bound)?;
                        }
                        EntryExpr::StructField(field) => self.walk(&field.value, bound)?,
                    }
                }
            }
            Expr::Struct(fields) => {
                for entry in &fields.entries {
                    if let EntryExpr::StructField(field) = &entry.expr {
                        self.walk(&field.value, bound)?;
                    }
                }
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
            #[allow(unreachable_patterns)]
            _ => {}
        }
        Ok(())
    }

    /// A call that names no variable and holds no comprehension (bounded work) is evaluated
    /// now: if it fails (`1 + 'a'`, `int('x')`), every request would.
    fn constant_part(&self, node: &IdedExpr) -> Result<(), CompileError> {
        if !is_constant(node) {
            return Ok(());
        }
        let context = Context::with_env(ENV.clone());
        match Value::resolve_val(node, &context) {
            Ok(_) => Ok(()),
            Err(error) => Err(self.error(node, format!("this part always fails: {error}"))),
        }
    }
}

/// Whether `node` names no variable (type names aside) and holds no comprehension.
fn is_constant(node: &IdedExpr) -> bool {
    match &node.expr {
        Expr::Ident(name) => TYPE_NAMES.contains(&name.as_str()),
        Expr::Literal(_) => true,
        Expr::Select(select) => is_constant(&select.operand),
        Expr::Call(call) => {
            call.target.as_deref().is_none_or(is_constant) && call.args.iter().all(is_constant)
        }
        Expr::List(list) => list.elements.iter().all(is_constant),
        Expr::Map(map) => map.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => is_constant(&entry.key) && is_constant(&entry.value),
            EntryExpr::StructField(field) => is_constant(&field.value),
        }),
        _ => false,
    }
}

/// 1-based line and column of the character at `offset` in `source`.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for c in source.chars().take(offset) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// The variables of one evaluation: views over the identity and the request, each answering
/// a field only when the expression reads it.
struct Activation<'a> {
    identity: &'a Identity,
    resource: &'a Resource<'a>,
}

impl VariableResolver for Activation<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let resource = self.resource;
        Some(match variable {
            "subject" => CowVal::owned(FieldsView(Fields::Subject(self.identity))),
            "resource" => CowVal::owned(FieldsView(Fields::Params(resource))),
            "request" => CowVal::owned(FieldsView(Fields::Request(resource))),
            "source" => CowVal::owned(FieldsView(Fields::Source(
                resource.source,
                resource.principal,
            ))),
            "now" => {
                let now = i64::try_from(resource.now).ok()?;
                let now = chrono::DateTime::from_timestamp(now, 0)?.fixed_offset();
                CowVal::owned(CelTimestamp::from(now))
            }
            _ => return None,
        })
    }
}

fn no_such_key(name: &str) -> ExecutionError {
    ExecutionError::no_such_key(name)
}

/// The field name an index or select asks for; only strings name fields.
fn field_name(index: &dyn Val) -> Result<&str, ExecutionError> {
    index
        .downcast_ref::<CelString>()
        .map(|name| name.inner())
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: index.get_type().name().to_owned(),
            want: "string".to_owned(),
        })
}

fn string<'v>(text: &'v str) -> Box<dyn Val + 'v> {
    Box::new(CelString::from(text))
}

fn string_list<'v>(items: &'v [String]) -> Box<dyn Val + 'v> {
    Box::new(CelList::from(
        items.iter().map(|item| string(item)).collect::<Vec<_>>(),
    ))
}

/// A claim as CEL sees it: JSON numbers become `int` when whole and in range (`uint` above
/// `int`'s range), `double` otherwise; strings are borrowed, not copied.
fn json<'v>(value: &'v serde_json::Value) -> Box<dyn Val + 'v> {
    match value {
        serde_json::Value::Null => Box::new(CelNull),
        serde_json::Value::Bool(b) => Box::new(CelBool::from(*b)),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Box::new(CelInt::from(i)),
            (None, Some(u), _) => Box::new(CelUInt::from(u)),
            (None, None, f) => Box::new(CelDouble::from(f.unwrap_or(f64::NAN))),
        },
        serde_json::Value::String(s) => string(s),
        serde_json::Value::Array(items) => {
            Box::new(CelList::from(items.iter().map(json).collect::<Vec<_>>()))
        }
        serde_json::Value::Object(fields) => Box::new(CelMap::from(
            fields
                .iter()
                .map(|(name, value)| (CelMapKey::from(name.as_str()), json(value)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// The variables and the maps inside them that are views rather than values: string-keyed,
/// answering a field only when it is read.
#[derive(Debug, Clone, Copy)]
enum Fields<'a> {
    /// `subject`: portcullis's own fields first (`sub`, `iss`, `roles`, `scopes`,
    /// `auth_method`, as it resolved them from the issuer's claim mapping), then every verified
    /// claim by name.
    Subject(&'a Identity),
    /// `resource`: the route's path parameters.
    Params(&'a Resource<'a>),
    Request(&'a Resource<'a>),
    /// `request.headers`: lower-case names; the first value of a repeated header.
    Headers(&'a Resource<'a>),
    Source(Option<SocketAddr>, Option<&'a str>),
}

/// Portcullis's own fields of `subject`, which win over claims of the same name.
const SUBJECT_FIELDS: [&str; 5] = ["sub", "iss", "roles", "scopes", "auth_method"];

#[derive(Debug, Clone, Copy)]
struct FieldsView<'a>(Fields<'a>);

impl FieldsView<'_> {
    fn field<'v>(&self, name: &str) -> Option<Box<dyn Val + 'v>>
    where
        Self: 'v,
    {
        match self.0 {
            Fields::Subject(identity) => Some(match name {
                "sub" => string(&identity.subject),
                "iss" => string(&identity.issuer),
                "roles" => string_list(&identity.roles),
                "scopes" => string_list(&identity.scopes),
                "auth_method" => string(identity.method.as_str()),
                claim => json(identity.claims.get(claim)?),
            }),
            Fields::Params(resource) => resource.params.get(name).map(string),
            Fields::Headers(resource) => resource.headers.get(name).map(string),
            Fields::Request(resource) => Some(match name {
                "method" => string(resource.method),
                "host" => string(resource.host),
                "path" => string(resource.path),
                "headers" => Box::new(FieldsView(Fields::Headers(resource))),
                "query" => query(resource.query.unwrap_or_default()),
                _ => return None,
            }),
            Fields::Source(address, principal) => match name {
                "address" => address.map(|address| {
                    Box::new(CelString::from(address.ip().to_string())) as Box<dyn Val>
                }),
                "principal" => principal.map(string),
                _ => None,
            },
        }
    }

    /// `name in view` and `has(view.name)`, without converting the value.
    fn has(&self, name: &str) -> bool {
        match self.0 {
            Fields::Subject(identity) => {
                SUBJECT_FIELDS.contains(&name) || identity.claims.contains_key(name)
            }
            Fields::Params(resource) => resource.params.get(name).is_some(),
            Fields::Headers(resource) => resource.headers.get(name).is_some(),
            Fields::Request(_) => REQUEST_FIELDS.contains(&name),
            Fields::Source(address, principal) => match name {
                "address" => address.is_some(),
                "principal" => principal.is_some(),
                _ => false,
            },
        }
    }
}

/// The query string parsed (`application/x-www-form-urlencoded`): the first value of a
/// repeated parameter.
fn query<'v>(query: &str) -> Box<dyn Val + 'v> {
    let mut parameters: HashMap<CelMapKey<'v>, Box<dyn Val + 'v>> = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        parameters
            .entry(CelMapKey::from(name.into_owned()))
            .or_insert_with(|| Box::new(CelString::from(value.into_owned())));
    }
    Box::new(CelMap::from(parameters))
}

impl Val for FieldsView<'_> {
    fn get_type(&self) -> &Type {
        &MAP_TYPE
    }

    fn cel_type() -> &'static Type {
        &MAP_TYPE
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(*self)
    }
}

impl Indexer for FieldsView<'_> {
    fn get<'b, 'v>(&'b self, index: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let name = field_name(index)?;
        self.field(name)
            .map(CowVal::Owned)
            .ok_or_else(|| no_such_key(name))
    }

    fn steal<'v>(self: Box<Self>, index: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(index).map(CowVal::into_owned)
    }
}

impl Container for FieldsView<'_> {
    fn contains(&self, value: &dyn Val) -> Result<bool, ExecutionError> {
        Ok(self.has(field_name(value)?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::authz::routes::Params;
    use crate::input::Headers;

    fn compiled(source: &str) -> Condition {
        Condition::compile(source).unwrap_or_else(|e| panic!("`{source}`: {e}"))
    }

    fn refused(source: &str) -> CompileError {
        match Condition::compile(source) {
            Ok(_) => panic!("`{source}` must not compile"),
            Err(error) => error,
        }
    }

    fn alice() -> Identity {
        let claims = json!({
            "sub": "alice", "iss": "https://idp.example", "managed_teams": ["blue", "green"],
            "level": 3, "email_verified": true, "org": {"id": "acme"},
        });
        Identity {
            subject: "alice".to_owned(),
            issuer: "https://idp.example".to_owned(),
            roles: vec!["user".to_owned()],
            scopes: vec!["documents:read".to_owned()],
            method: crate::identity::AuthMethod::Jwt,
            claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
            ..Identity::anonymous()
        }
    }

    /// `GET https://api.example.com/users/alice/documents/7?page=2&tag=a&tag=b&q=a%20b` from
    /// 10.1.2.3 with a SPIFFE id, on `/users/{owner_id}/documents/{doc_id}` (plus `team`).
    fn document_request(headers: &Headers) -> Resource<'_> {
        Resource {
            route: "documents",
            method: "GET",
            host: "api.example.com",
            path: "/users/alice/documents/7",
            params: Params(vec![
                ("owner_id", "alice"),
                ("doc_id", "7"),
                ("team", "blue"),
            ]),
            now: 1_700_000_000,
            headers,
            query: Some("page=2&tag=a&tag=b&q=a%20b"),
            source: Some("10.1.2.3:5555".parse().expect("addr")),
            principal: Some("spiffe://cluster.local/ns/web/sa/frontend"),
        }
    }

    fn evaluate(source: &str, identity: &Identity) -> Result<bool, EvaluationError> {
        let headers = Headers::new([
            ("X-Tenant".to_owned(), "acme".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ]);
        compiled(source).evaluate(identity, &document_request(&headers))
    }

    #[test]
    fn allows_the_owner_of_the_document() {
        assert_eq!(
            evaluate("resource.owner_id == subject.sub", &alice()),
            Ok(true)
        );
        let bob = Identity {
            subject: "bob".to_owned(),
            ..alice()
        };
        assert_eq!(
            evaluate("resource.owner_id == subject.sub", &bob),
            Ok(false)
        );
    }

    #[test]
    fn reads_every_variable() {
        let alice = alice();
        for source in [
            "resource.team in subject.managed_teams",
            "'user' in subject.roles && 'documents:read' in subject.scopes",
            "subject.iss == 'https://idp.example' && subject.auth_method == 'jwt'",
            "subject.level >= 3 && subject.email_verified && subject.org.id == 'acme'",
            "has(subject.managed_teams) && !has(subject.phone) && 'level' in subject",
            "request.method == 'GET' && request.host == 'api.example.com'",
            "request.path.startsWith('/users/')",
            "request.headers['x-tenant'] == 'acme' && 'accept' in request.headers",
            "!('x-missing' in request.headers)",
            "request.query.page == '2' && request.query.tag == 'a' && request.query.q == 'a b'",
            "source.address == '10.1.2.3'",
            "source.principal.startsWith('spiffe://cluster.local/')",
            "now > timestamp('2023-01-01T00:00:00Z') && now < timestamp('2024-01-01T00:00:00Z')",
            "subject.managed_teams.exists(t, t == resource.team)",
        ] {
            assert_eq!(evaluate(source, &alice), Ok(true), "{source}");
        }
    }

    #[test]
    fn an_evaluation_error_is_an_error_not_a_refusal_or_a_panic() {
        let alice = alice();
        let cases = [
            ("subject.phone == '123'", "phone"),
            ("resource.missing == 'x'", "missing"),
            ("subject.level == 'three' || subject.level > 'a'", "_>_"),
            ("request.headers['x-missing'] == 'x'", "x-missing"),
            ("subject.managed_teams[5] == 'x'", "5"),
            ("subject.sub", "not a bool"),
            ("resource.doc_id", "not a bool"),
        ];
        for (source, says) in cases {
            match evaluate(source, &alice) {
                Err(error) => assert!(error.to_string().contains(says), "{source}: {error}"),
                Ok(value) => panic!("{source} gave {value}"),
            }
        }
        let anonymous = Identity::anonymous();
        assert!(evaluate("subject.managed_teams.size() > 0", &anonymous).is_err());
    }

    #[test]
    fn a_syntax_error_says_where_in_the_expression() {
        let error = refused("subject.sub == ");
        assert_eq!(error.line, 1);
        assert!(error.message.starts_with("Syntax error"), "{error}");
        let error = refused("subject.sub ==\n  'a' &&& true");
        assert_eq!((error.line, error.column), (2, 9), "{error}");
        let error = refused("subject.sub == )");
        assert_eq!((error.line, error.column), (1, 16), "{error}");
    }

    #[test]
    fn an_unknown_variable_is_refused_where_it_is_written() {
        let error = refused("subject.sub == resource.owner || user.admin");
        assert_eq!((error.line, error.column), (1, 34), "{error}");
        assert!(error.message.contains("unknown variable `user`"), "{error}");
        // A comprehension's own variables are known inside it only.
        compiled("subject.managed_teams.all(t, t != '')");
        let error = refused("subject.managed_teams.all(t, t != '') && t == 'x'");
        assert!(error.message.contains("unknown variable `t`"), "{error}");
    }

    #[test]
    fn a_field_the_request_or_source_does_not_have_is_refused() {
        let error = refused("request.methd == 'GET'");
        assert!(error.message.contains("no field `methd`"), "{error}");
        assert_eq!((error.line, error.column), (1, 8), "{error}");
        assert!(
            refused("source.ip == '10.0.0.1'")
                .message
                .contains("address, principal")
        );
        assert!(refused("now.seconds > 0").message.contains("timestamp"));
    }

    #[test]
    fn type_errors_found_at_load_are_refused() {
        for (source, says) in [
            ("1 + 'a' == 2", "always fails"),
            ("subject.sub == 'a' && int('x') > 1", "always fails"),
            ("'text'", "must give a bool"),
            ("42", "must give a bool"),
            ("subject", "must give a bool"),
            ("request.method", "must give a bool"),
            ("[true]", "must give a bool"),
            ("size(subject.roles)", "must give a bool"),
            ("", "empty"),
        ] {
            let error = refused(source);
            assert!(error.message.contains(says), "`{source}`: {error}");
        }
        compiled("true");
        compiled("type(subject.level) == int");
    }

    #[test]
    fn value_text_shows_the_value_or_the_error() {
        let alice = alice();
        let headers = Headers::default();
        let resource = Resource {
            source: None,
            ..document_request(&headers)
        };
        let text = |source: &str| compiled(source).value_text(&alice, &resource);
        assert_eq!(text("subject.sub == 'alice'"), Ok("true".to_owned()));
        assert_eq!(
            text("subject.managed_teams == ['x']"),
            Ok("false".to_owned())
        );
        assert!(text("subject.phone == '1'").is_err_and(|e| e.contains("phone")));
        assert!(text("has(source.address)").is_ok_and(|v| v == "false"));
        // Explain tools show what a claim holds, whatever its type.
        assert_eq!(
            text("subject.managed_teams"),
            Ok(r#"["blue", "green"]"#.to_owned())
        );
        assert_eq!(text("subject.org"), Ok(r#"{"id": "acme"}"#.to_owned()));
    }
}

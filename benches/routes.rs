//! Route matching in a large table (issue 10, item 11: 500 routes matched ≤ 1 µs).
//!
//! 100 resources × 5 routes (`GET`/`POST /api/v1/resN`, `GET`/`PUT`/`DELETE
//! /api/v1/resN/{id}`), the shape of a real API's policy, then an anonymous `/healthz`. Cases:
//! the first route, a route in the middle, the last resource's `DELETE`, and a request no route
//! matches (every route tried by a scan: its worst case). Paths and hosts are already
//! normalized, as the engine hands them to the table.
//!
//! `find_501` is [`RouteTable::find`] (the table is above the index threshold, so it walks the
//! segment trie); `scan_501` is the linear first-match scan it replaced, over the same routes
//! and requests, so one build measures both.
//!
//! Run: `cargo bench --bench routes`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

use portcullis::authz::routes::{Params, PathMatch, PathTemplate, RouteMatch, RouteTable};
use portcullis::authz::{Mode, OnDeny, Policy, Requirements, Route};

const RESOURCES: usize = 100;

fn route(name: String, method: &str, path: PathMatch) -> Route {
    Route {
        name: Arc::from(name),
        matcher: RouteMatch {
            methods: Some(vec![method.to_owned()]),
            host: None,
            path,
        },
        policy: Policy::Require(Requirements {
            scopes: vec!["read:documents".to_owned()],
            ..Requirements::default()
        }),
        on_deny: OnDeny::Forbidden,
        mode: Mode::Enforce,
    }
}

/// The 500-route table, plus `/healthz` last.
pub fn table() -> RouteTable {
    let mut routes = Vec::new();
    for n in 0..RESOURCES {
        let collection = format!("/api/v1/res{n}");
        let item = PathTemplate::parse(&format!("{collection}/{{id}}")).expect("template");
        for method in ["GET", "POST"] {
            routes.push(route(
                format!("{method}-res{n}"),
                method,
                PathMatch::Exact(collection.clone()),
            ));
        }
        for method in ["GET", "PUT", "DELETE"] {
            routes.push(route(
                format!("{method}-res{n}-item"),
                method,
                PathMatch::Template(item.clone()),
            ));
        }
    }
    let mut health = route(
        "health".to_owned(),
        "GET",
        PathMatch::Exact("/healthz".into()),
    );
    health.matcher.methods = None;
    routes.push(health);
    RouteTable::new(routes)
}

/// The linear first-match scan (what `find` did before the index, and still does below its
/// threshold).
fn scan<'t: 'p, 'p>(
    table: &'t RouteTable,
    method: &str,
    host: &str,
    path: &'p str,
) -> Option<(&'t Route, Params<'p>)> {
    table.routes().iter().find_map(|route| {
        route
            .matcher
            .matches(method, host, path)
            .map(|params| (route, params))
    })
}

fn bench(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("routes");
    let last = format!("/api/v1/res{}/42", RESOURCES - 1);
    let middle = format!("/api/v1/res{}/42", RESOURCES / 2);
    for (name, method, path) in [
        ("first", "GET", "/api/v1/res0"),
        ("middle", "PUT", middle.as_str()),
        ("last_resource", "DELETE", last.as_str()),
        ("no_route", "GET", "/api/v2/nothing/here"),
    ] {
        assert_eq!(
            table.find(method, "api.example", path).is_some(),
            name != "no_route",
            "{name}"
        );
        let found = table
            .find(method, "api.example", path)
            .map(|(r, _)| &r.name);
        let scanned = scan(&table, method, "api.example", path).map(|(r, _)| &r.name);
        assert_eq!(found, scanned, "{name}");
        group.bench_function(format!("find_501/{name}"), |b| {
            b.iter(|| black_box(table.find(black_box(method), "api.example", black_box(path))))
        });
        group.bench_function(format!("scan_501/{name}"), |b| {
            b.iter(|| {
                black_box(scan(
                    &table,
                    black_box(method),
                    "api.example",
                    black_box(path),
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

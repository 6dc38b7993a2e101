//! The revocation check on the hot path with 1,000,000 entries in force (issue 12, item 5):
//! `Revocations::is_revoked` as the engine calls it, for a token that is not revoked (every
//! look-up misses: the common case) and for one revoked by its `jti`.
//!
//! Target: ≤ 200 ns per check. Run: `make bench-revocation` or `cargo bench --bench
//! revocation` (building the set takes a few seconds; the measurements well under a minute).
//! Also prints the resident memory the 1,000,000 entries take.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use portcullis::identity::{AuthMethod, Identity};
use portcullis::revocation::{
    JtiEntry, KeyEntry, RevocationList, Revocations, Source, SubjectEntry, Timestamp,
};

const ISSUER: &str = "https://idp.example.com";
const ENTRIES: usize = 1_000_000;

fn store() -> Revocations {
    let expires = Timestamp(Timestamp::now().0 + 86_400);
    let jtis = ENTRIES * 8 / 10;
    let subjects = ENTRIES * 19 / 100;
    let keys = ENTRIES - jtis - subjects;
    let list = RevocationList {
        jtis: (0..jtis)
            .map(|i| JtiEntry {
                jti: format!("{i:032x}"),
                expires,
            })
            .collect(),
        subjects: (0..subjects)
            .map(|i| SubjectEntry {
                sub: format!("user-{i}"),
                issuer: ISSUER.to_owned(),
                revoked_before: Timestamp::now(),
                expires: Some(expires),
            })
            .collect(),
        keys: (0..keys)
            .map(|i| KeyEntry {
                issuer: ISSUER.to_owned(),
                kid: format!("key-{i}"),
                expires: Some(expires),
            })
            .collect(),
        api_keys: Vec::new(),
    };
    let revocations = Revocations::new(&[Source::File], HashMap::new(), ENTRIES, false);
    revocations.replace(Source::File, list);
    assert_eq!(revocations.snapshot().len(), ENTRIES);
    revocations
}

fn identity(jti: &str) -> Identity {
    Identity {
        method: AuthMethod::Jwt,
        subject: "someone-else".to_owned(),
        issuer: ISSUER.to_owned(),
        token_id: Some(jti.to_owned()),
        issued_at: Some(Timestamp::now().0),
        key_id: Some("current-key".to_owned()),
        ..Identity::anonymous()
    }
}

/// Resident memory of this process in bytes (Linux), to report the set's footprint.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn bench(c: &mut Criterion) {
    let before = resident_bytes();
    let revocations = store();
    if let (Some(before), Some(after)) = (before, resident_bytes()) {
        // The merged set plus the source's list it was built from (both are kept).
        println!(
            "memory for {ENTRIES} entries (set + source list): {} MiB",
            after.saturating_sub(before) / (1024 * 1024)
        );
    }
    let now = Timestamp::now().0;
    let allowed = identity("6f1c0b7e-not-revoked-0000000000000");
    let revoked = identity(&format!("{:032x}", 12_345));
    assert!(!revocations.is_revoked(&allowed, now));
    assert!(revocations.is_revoked(&revoked, now));
    let mut group = c.benchmark_group("revocation_check_1m_entries");
    group.bench_function("not_revoked", |b| {
        b.iter(|| revocations.is_revoked(black_box(&allowed), black_box(now)))
    });
    group.bench_function("revoked_jti", |b| {
        b.iter(|| revocations.is_revoked(black_box(&revoked), black_box(now)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

use super::*;

const ISS: &str = "https://idp.example.com";

fn token(sub: &str, jti: Option<&str>, iat: Option<u64>, kid: Option<&str>) -> Identity {
    Identity {
        method: AuthMethod::Jwt,
        subject: sub.to_owned(),
        issuer: ISS.to_owned(),
        token_id: jti.map(str::to_owned),
        issued_at: iat,
        key_id: kid.map(str::to_owned),
        ..Identity::anonymous()
    }
}

fn set(list: &RevocationList, now: u64) -> RevocationSet {
    RevocationSet::build([list], &HashMap::new(), 1000, now)
}

fn parse(text: &str) -> RevocationList {
    match parse_list(text) {
        Ok(list) => list,
        Err(error) => panic!("{error:?}"),
    }
}

#[test]
fn refuses_a_revoked_jti_until_the_entry_expires() {
    let list = parse("jtis:\n  - {jti: abc, expires: 2030-01-01T00:00:00Z}\n");
    let expires = Timestamp::parse("2030-01-01T00:00:00Z").expect("time").0;
    let set = set(&list, 0);
    assert!(set.is_revoked(&token("alice", Some("abc"), Some(1), None), 1000));
    assert!(!set.is_revoked(&token("alice", Some("abd"), Some(1), None), 1000));
    assert!(!set.is_revoked(&token("alice", None, Some(1), None), 1000));
    assert!(!set.is_revoked(&token("alice", Some("abc"), Some(1), None), expires));
}

#[test]
fn refuses_a_subjects_tokens_issued_before_the_revocation_and_those_without_iat() {
    let list = parse(&format!(
        "subjects:\n  - {{sub: carol, issuer: '{ISS}', revoked_before: 1970-01-01T00:16:40Z}}\n"
    ));
    let set = set(&list, 0);
    assert!(set.is_revoked(&token("carol", None, Some(999), None), 5));
    assert!(set.is_revoked(&token("carol", None, None, None), 5));
    assert!(!set.is_revoked(&token("carol", None, Some(1000), None), 5));
    assert!(!set.is_revoked(&token("dave", None, Some(999), None), 5));
    let mut other_issuer = token("carol", None, Some(999), None);
    other_issuer.issuer = "https://other.example.com".to_owned();
    assert!(!set.is_revoked(&other_issuer, 5));
}

#[test]
fn a_subject_entry_expires_with_the_issuers_longest_token() {
    let list = parse(&format!(
        "subjects:\n  - {{sub: carol, issuer: '{ISS}', revoked_before: 1970-01-01T00:16:40Z}}\n"
    ));
    let lifetimes = HashMap::from([(ISS.to_owned(), 100)]);
    let set = RevocationSet::build([&list], &lifetimes, 10, 0);
    assert!(set.is_revoked(&token("carol", None, Some(1), None), 1099));
    assert!(!set.is_revoked(&token("carol", None, Some(1), None), 1100));
    // Already past at build time: not kept at all.
    assert!(RevocationSet::build([&list], &lifetimes, 10, 1100).is_empty());
}

#[test]
fn refuses_every_token_signed_with_a_revoked_key_of_that_issuer_only() {
    let list = parse(&format!("keys:\n  - {{issuer: '{ISS}', kid: k1}}\n"));
    let set = set(&list, 0);
    assert!(set.is_revoked(&token("a", None, Some(1), Some("k1")), u64::MAX - 1));
    assert!(!set.is_revoked(&token("a", None, Some(1), Some("k2")), 5));
    let mut other_issuer = token("a", None, Some(1), Some("k1"));
    other_issuer.issuer = "https://other.example.com".to_owned();
    assert!(!set.is_revoked(&other_issuer, 5));
}

#[test]
fn refuses_a_revoked_api_key_by_its_id() {
    let list = parse("api_keys:\n  - {id: 7Hq2xK9mPz4B}\n");
    let set = set(&list, 0);
    let key = Identity {
        method: AuthMethod::ApiKey,
        key_id: Some("7Hq2xK9mPz4B".to_owned()),
        ..Identity::anonymous()
    };
    assert!(set.is_revoked(&key, 5));
    assert!(set.api_key_revoked("7Hq2xK9mPz4B", 5));
    assert!(!set.api_key_revoked("8Hq2xK9mPz4B", 5));
    // A JWT whose jti happens to equal a revoked API key id is not an API key.
    assert!(!set.is_revoked(&token("a", Some("7Hq2xK9mPz4B"), Some(1), None), 5));
}

#[test]
fn over_the_cap_the_entries_that_expire_last_are_kept_and_the_overflow_counted() {
    let list = RevocationList {
        jtis: (1..=5)
            .map(|i| JtiEntry {
                jti: format!("j{i}"),
                expires: Timestamp(1000 * i),
            })
            .collect(),
        ..RevocationList::default()
    };
    let set = RevocationSet::build([&list], &HashMap::new(), 3, 0);
    assert_eq!((set.len(), set.dropped()), (3, 2));
    let revoked = |jti| set.is_revoked(&token("a", Some(jti), None, None), 1);
    assert!(!revoked("j1") && !revoked("j2"));
    assert!(revoked("j3") && revoked("j4") && revoked("j5"));
}

#[test]
fn entries_of_all_sources_are_merged_and_duplicates_keep_the_widest() {
    let a = parse("jtis:\n  - {jti: x, expires: 1970-01-01T00:01:40Z}\n");
    let b = parse(
        "jtis:\n  - {jti: x, expires: 1970-01-01T00:03:20Z}\n  - {jti: y, expires: 1970-01-01T00:03:20Z}\n",
    );
    let set = RevocationSet::build([&a, &b], &HashMap::new(), 10, 0);
    assert_eq!(set.len(), 2);
    assert!(set.is_revoked(&token("a", Some("x"), None, None), 150));
}

#[test]
fn malformed_entries_are_refused_with_their_line() {
    for (text, line, needle) in [
        ("jtis:\n  - {jti: abc}\n", 2, "missing field `expires`"),
        ("jtis:\n  - {jti: abc, expires: tomorrow}\n", 2, "RFC 3339"),
        (
            "jtis: []\ntokens:\n  - {jti: abc}\n",
            2,
            "unknown field `tokens`",
        ),
        ("keys:\n  - {kid: k1}\n", 2, "missing field `issuer`"),
        (
            "subjects:\n  - {sub: c, issuer: i, revoked_before: 2030-01-01T00:00:00Z, color: red}\n",
            2,
            "unknown field `color`",
        ),
    ] {
        let Err((location, message)) = parse_list(text) else {
            panic!("accepted: {text}");
        };
        assert_eq!(location.map(|l| l.0), Some(line), "{text}: {message}");
        assert!(message.contains(needle), "{text}: {message}");
    }
}

#[test]
fn an_empty_file_revokes_nothing() {
    assert!(parse("").is_empty());
    assert!(parse("# nothing revoked\n").is_empty());
}

#[test]
fn the_store_keeps_the_last_good_list_when_a_source_fails() {
    let revocations = Revocations::new(&[Source::File], HashMap::new(), 10, true);
    assert_eq!(revocations.waiting_for(), vec![Source::File]);
    revocations.replace(
        Source::File,
        parse("jtis:\n  - {jti: abc, expires: 2999-01-01T00:00:00Z}\n"),
    );
    assert!(revocations.waiting_for().is_empty());
    revocations.failed(Source::File, "bad".to_owned());
    let now = Timestamp::now().0;
    assert!(revocations.is_revoked(&token("a", Some("abc"), None, None), now));
    let status = revocations.status();
    assert_eq!(status[0].entries, 1);
    assert_eq!(status[0].error.as_deref(), Some("bad"));
}

#[test]
fn the_file_is_written_atomically_and_read_back() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("revoked.yaml");
    let list = parse(&format!(
        "jtis:\n  - {{jti: abc, expires: 2030-01-01T00:00:00Z}}\nkeys:\n  - {{issuer: '{ISS}', kid: k1}}\n"
    ));
    file::store(&path, &list).expect("store");
    assert_eq!(file::load(&path).expect("load"), list);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["revoked.yaml"]);
}

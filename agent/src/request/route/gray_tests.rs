use super::*;
use crate::request::Header;

fn cohorts(dimensions: &[&str], configured: &[&str], max_per_route: usize) -> GrayCohorts {
    let dimensions: Vec<String> = dimensions.iter().map(|s| s.to_string()).collect();
    let configured: Vec<String> = configured.iter().map(|s| s.to_string()).collect();
    GrayCohorts::new(&GraySettings {
        query_param: "gray",
        dimensions: &dimensions,
        configured: &configured,
        max_per_route,
        max_len: 128,
    })
}

fn tagged(v: &str) -> RequestHeaders {
    let mut h = RequestHeaders::default();
    h.set(Header::XGrayTag, v);
    h
}

fn route() -> RouteKey {
    RouteKey::new("shop", "GET", "/items/{id}")
}

#[test]
fn the_same_tag_written_two_ways_is_one_cohort() {
    let mut g = cohorts(&[], &[], 4);
    let r = route();
    let a = g.cohort(&r, &tagged("version:canary,zone:bj"), "/items/1");
    let b = g.cohort(&r, &tagged(" zone:bj , version:canary"), "/items/2");
    let c = g.cohort(&r, &tagged("Zone : bj,VERSION:canary"), "/items/3");
    assert_eq!(&*a, "version:canary,zone:bj");
    assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, &c), "{a} {b} {c}");
    // Values keep their case: they are what the release named them.
    assert_eq!(
        &*g.cohort(&r, &tagged("version:Canary"), "/"),
        "version:Canary"
    );
}

#[test]
fn query_only_tags_count_and_the_header_wins_per_key() {
    let mut g = cohorts(&[], &[], 4);
    let r = route();
    let none = RequestHeaders::default();
    assert_eq!(&*g.cohort(&r, &none, "/a"), "");
    assert_eq!(
        &*g.cohort(&r, &none, "/a?x=1&gray=env:staging,feature:recommend_v3"),
        "env:staging,feature:recommend_v3"
    );
    // Percent-encoded separators, as a browser writes them.
    assert_eq!(
        &*g.cohort(&r, &none, "/a?gray=env%3Astaging%2Cfeature%3Arecommend_v3"),
        "env:staging,feature:recommend_v3"
    );
    // Header and query disagree on `env`: the header's value wins; the
    // query's other keys still count.
    let c = g.cohort(&r, &tagged("env:prod"), "/a?gray=env:staging,zone:bj");
    assert_eq!(&*c, "env:prod,zone:bj");
}

#[test]
fn bare_values_stay_usable_as_key_less_tags() {
    let mut g = cohorts(&[], &[], 4);
    let r = route();
    assert_eq!(&*g.cohort(&r, &tagged("canary"), "/"), "canary");
    assert_eq!(
        &*g.cohort(&r, &tagged("zone:bj, canary"), "/"),
        "canary,zone:bj"
    );
    assert_eq!(describe("canary,zone:bj"), "canary, zone=bj");
    assert_eq!(describe("abtest:v2,env:staging"), "abtest=v2, env=staging");
    let p: Vec<_> = pairs("canary,zone:bj").collect();
    assert_eq!(p, [("", "canary"), ("zone", "bj")]);
}

#[test]
fn dimensions_pick_the_keys_that_define_a_cohort() {
    let mut g = cohorts(&["Version"], &[], 4);
    let r = route();
    assert_eq!(
        &*g.cohort(&r, &tagged("version:v2,zone:bj,user:123"), "/"),
        "version:v2"
    );
    // No cohort dimension at all: untagged.
    assert_eq!(&*g.cohort(&r, &tagged("zone:bj"), "/"), "");
}

#[test]
fn without_configuration_the_first_cohorts_per_route_are_learned() {
    let mut g = cohorts(&[], &[], 2);
    let (a, b) = (route(), RouteKey::new("shop", "GET", "/cart"));
    assert_eq!(&*g.cohort(&a, &tagged("v:1"), "/"), "v:1");
    assert_eq!(&*g.cohort(&a, &tagged("v:2"), "/"), "v:2");
    assert_eq!(&*g.cohort(&a, &tagged("v:3"), "/"), OTHER_COHORT);
    // Known cohorts keep their label once the route is full.
    assert_eq!(&*g.cohort(&a, &tagged("v:1"), "/"), "v:1");
    // Another route learns its own, sharing the interned strings.
    let b3 = g.cohort(&b, &tagged("v:3"), "/");
    assert_eq!(&*b3, "v:3");
    assert_eq!(g.counters().get(OtherReason::RouteCap), 1);
}

#[test]
fn a_configured_set_is_exactly_what_is_kept() {
    let mut g = cohorts(&[], &["zone:bj, version:canary", "stable"], 4);
    let r = route();
    assert_eq!(
        &*g.cohort(&r, &tagged("version:canary,zone:bj"), "/"),
        "version:canary,zone:bj"
    );
    assert_eq!(&*g.cohort(&r, &tagged("stable"), "/"), "stable");
    assert_eq!(&*g.cohort(&r, &tagged("version:v9"), "/"), OTHER_COHORT);
    assert_eq!(g.counters().get(OtherReason::NotConfigured), 1);
}

#[test]
fn hostile_tags_are_bounded() {
    let mut g = cohorts(&[], &[], 4);
    let r = route();
    let long = format!("k:{}", "x".repeat(10_000));
    assert_eq!(&*g.cohort(&r, &tagged(&long), "/"), OTHER_COHORT);
    assert_eq!(&*g.cohort(&r, &tagged("k:a\u{7}b"), "/"), OTHER_COHORT);
    assert_eq!(g.counters().get(OtherReason::Invalid), 2);
    // Many pairs: only the first MAX_PAIRS keys are read.
    let many: Vec<String> = (0..100).map(|i| format!("k{i:02}:v")).collect();
    let c = g.cohort(&r, &tagged(&many.join(",")), "/");
    assert_eq!(c.split(',').count(), MAX_PAIRS, "{c}");
    // 10 000 distinct tags on one route: the cap holds.
    for i in 0..10_000 {
        g.cohort(&r, &tagged(&format!("user:{i}")), "/");
    }
    assert_eq!(g.learned[&r].len(), 4);
    // Quotes and backslashes are kept as they are: the exporters escape them.
    let mut g = cohorts(&[], &[], 4);
    assert_eq!(&*g.cohort(&r, &tagged(r#"a:"b\"#), "/"), r#"a:"b\"#);
}

#[test]
fn gray_header_names_compare_case_insensitively() {
    let names: Vec<Box<[u8]>> = vec![b"x-canary".to_vec().into(), b"x-gray-tag".to_vec().into()];
    assert!(header_in(b"X-Canary", &names));
    assert!(header_in(b"X-GRAY-TAG", &names));
    assert!(!header_in(b"X-Gray", &names));
}

#[test]
fn percent_decoding_leaves_bad_escapes() {
    assert_eq!(percent_decode("a%3Ab+c%zz%4"), "a:b c%zz%4");
    assert_eq!(percent_decode("%ff"), "\u{fffd}");
}

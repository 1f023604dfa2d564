//! RFC 8785 conformance vectors, number formatting, and the I-JSON rules.

mod common;

use hashcore::json::cmp_utf16;
use hashcore::number::to_js_string;
use hashcore::{canonicalize, Rule};

#[test]
fn conformance_files_byte_for_byte() {
    let dir = common::jcs_dir();
    let mut n = 0;
    for entry in std::fs::read_dir(dir.join("input")).expect("input dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        let input = std::fs::read(&path).expect("read input");
        let want = std::fs::read(dir.join("output").join(name)).expect("read output");
        let got = canonicalize(&input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got, want, "{}", path.display());
        n += 1;
    }
    assert!(n >= 6, "only {n} vectors found");
}

#[test]
fn numbers_tsv() {
    let text = std::fs::read_to_string(common::jcs_dir().join("numbers.tsv")).expect("numbers.tsv");
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (bits, want) = line.split_once('\t').expect("two columns");
        let f = f64::from_bits(u64::from_str_radix(bits, 16).expect("hex bits"));
        assert_eq!(to_js_string(f), want, "bits {bits}");
        // Round trip through the parser too: the text we write reads back to the same double.
        let value = hashcore::json::parse_doubles(want.as_bytes()).expect("parse");
        let mut back = Vec::new();
        hashcore::json::write_value(&mut back, &value);
        assert_eq!(
            String::from_utf8(back).expect("utf8"),
            want,
            "reparse {bits}"
        );
        n += 1;
    }
    assert!(n > 1000, "only {n} lines");
}

fn rule_of(input: &[u8]) -> (Rule, String) {
    match canonicalize(input) {
        Err(e) => (e.rule, e.path()),
        Ok(out) => panic!(
            "accepted {:?} as {:?}",
            String::from_utf8_lossy(input),
            String::from_utf8_lossy(&out)
        ),
    }
}

#[test]
fn ijson_rules_rejected_with_rule_and_path() {
    let cases: &[(&[u8], Rule, &str)] = &[
        (b"{\"a\":\"\xff\"}", Rule::Utf8, "$.a"),
        (b"\xc3\x28", Rule::Utf8, "$"),
        (br#"{"a":["\ud800"]}"#, Rule::LoneSurrogate, "$.a[0]"),
        (br#""\udc00\ud800""#, Rule::LoneSurrogate, "$"),
        (br#""\ud83dx""#, Rule::LoneSurrogate, "$"),
        (br#"{"a":{"b":1,"b":2}}"#, Rule::DuplicateKey, "$.a.b"),
        (br#"{"b":1,"a":2,"\u0062":3}"#, Rule::DuplicateKey, "$.b"),
        (br#"[1e309]"#, Rule::NumberOverflow, "$[0]"),
        (br#"-1.8e308"#, Rule::NumberOverflow, "$"),
        (br#"{"n":9007199254740993}"#, Rule::IntegerRange, "$.n"),
        (br#"-9007199254740993"#, Rule::IntegerRange, "$"),
        (br#"[1152921504606846976]"#, Rule::IntegerRange, "$[0]"),
        (br#"-1152921504606846976"#, Rule::IntegerRange, "$"),
        (br#"100000000000000000001"#, Rule::IntegerRange, "$"),
        (br#"1000000000000000000000"#, Rule::IntegerRange, "$"),
        (
            br#"123456789012345678901234567890"#,
            Rule::IntegerRange,
            "$",
        ),
        (br#"{"a":1,}"#, Rule::Malformed, "$"),
        (br#"NaN"#, Rule::Malformed, "$"),
        (br#"[Infinity]"#, Rule::Malformed, "$[0]"),
        (br#"01"#, Rule::Malformed, "$"),
        (br#"{"a":1} x"#, Rule::Malformed, "$"),
        (b"\"a\tb\"", Rule::Malformed, "$"),
        (br#""\x""#, Rule::Malformed, "$"),
        (b"", Rule::Malformed, "$"),
    ];
    for (input, rule, path) in cases {
        let (r, p) = rule_of(input);
        assert_eq!(
            (r, p.as_str()),
            (*rule, *path),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn large_integer_literal_that_overflows_a_double() {
    let huge = format!("1{}", "0".repeat(400));
    assert_eq!(rule_of(huge.as_bytes()).0, Rule::IntegerRange);
    assert_eq!(rule_of(format!("-{huge}").as_bytes()).0, Rule::IntegerRange);
    // The auditor reads every integer as a double: only an overflow fails.
    assert!(hashcore::json::parse_doubles(b"9007199254740993").is_ok());
    let err = hashcore::json::parse_doubles(huge.as_bytes()).expect_err("overflow");
    assert_eq!(err.rule, Rule::NumberOverflow);
}

#[test]
fn depth_64_ok_65_rejected() {
    let ok = format!("{}{{\"a\":1}}{}", "[".repeat(63), "]".repeat(63));
    assert!(canonicalize(ok.as_bytes()).is_ok());
    let bad = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert_eq!(rule_of(bad.as_bytes()).0, Rule::Depth);
    let bad_obj = format!("{}1{}", "{\"a\":".repeat(65), "}".repeat(65));
    assert_eq!(rule_of(bad_obj.as_bytes()).0, Rule::Depth);
}

#[test]
fn accepted_edge_values() {
    let cases: &[(&str, &str)] = &[
        (
            " \r\n\t{ \"b\" : [ ] , \"a\" : { } } \n",
            r#"{"a":{},"b":[]}"#,
        ),
        ("9007199254740991", "9007199254740991"),
        ("-9007199254740991", "-9007199254740991"),
        // Above 2^53-1: exactly as JCS writes the double (PROTOCOL §2).
        ("9007199254740992", "9007199254740992"),
        ("-9007199254740992", "-9007199254740992"),
        ("374956584419848800", "374956584419848800"),
        ("[-374956584419848800]", "[-374956584419848800]"),
        ("1152921504606847000", "1152921504606847000"),
        ("100000000000000000000", "100000000000000000000"),
        (
            "{\"n\":18446744073709552000}",
            "{\"n\":18446744073709552000}",
        ),
        ("-0", "0"),
        ("-0.0e5", "0"),
        ("374956584419848800.0", "374956584419848800"),
        ("9007199254740993.0", "9007199254740992"),
        ("1E400e", ""),
        ("1e21", "1e+21"),
        ("1e-7", "1e-7"),
        ("0.000001", "0.000001"),
        (
            r#""\u0000\u001f\/\b\f\n\r\t\"\\\u00e9\u2028""#,
            "\"\\u0000\\u001f/\\b\\f\\n\\r\\t\\\"\\\\é\u{2028}\"",
        ),
        (r#""\ud83d\ude00""#, "\"😀\""),
        ("[true,false,null]", "[true,false,null]"),
    ];
    for (input, want) in cases {
        if want.is_empty() {
            assert!(canonicalize(input.as_bytes()).is_err(), "{input}");
            continue;
        }
        let got = canonicalize(input.as_bytes()).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(String::from_utf8(got).expect("utf8"), *want, "{input}");
    }
}

#[test]
fn keys_sort_by_utf16_code_units() {
    use std::cmp::Ordering::*;
    assert_eq!(cmp_utf16("\u{e000}", "\u{1f600}"), Greater);
    assert_eq!(cmp_utf16("\u{ffff}", "\u{10000}"), Greater);
    assert_eq!(cmp_utf16("\u{d7ff}", "\u{10000}"), Less);
    assert_eq!(cmp_utf16("a", "ab"), Less);
    assert_eq!(cmp_utf16("é", "z"), Greater);
    let got = canonicalize("{\"\u{e000}\":1,\"\u{1f600}\":2,\"a\":3}".as_bytes()).expect("ok");
    assert_eq!(
        String::from_utf8(got).expect("utf8"),
        "{\"a\":3,\"\u{1f600}\":2,\"\u{e000}\":1}"
    );
}

#[test]
fn integer_as_written_examples() {
    use hashcore::number::integer_as_written;
    assert_eq!(
        integer_as_written(b"374956584419848800"),
        Some(3.749565844198488e17)
    );
    assert_eq!(integer_as_written(b"9007199254740992"), Some(2f64.powi(53)));
    // Their doubles are written 9007199254740992 and 1152921504606847000.
    assert_eq!(integer_as_written(b"9007199254740993"), None);
    assert_eq!(integer_as_written(b"1152921504606846976"), None);
    assert_eq!(
        integer_as_written(b"1152921504606847000"),
        Some(2f64.powi(60))
    );
}

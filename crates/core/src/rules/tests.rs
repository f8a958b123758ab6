//! Unit and property tests of the language (parse/print round trip, evaluation that never
//! panics, type errors caught when compiling, limits) and of the engine (stacking, schedules in
//! the programme's zone, caps, effects).

use super::ast::{BinOp, Expr, ExprKind, Lit, UnOp};
use super::engine::{CompiledRule, Extensions, Input, RuleEvent, RuleSet};
use super::lexer::Pos;
use super::value::{Frame, Val};
use super::*;
use crate::earn::MemberFacts;
use crate::event::{Channel, LineInput, MemberRef, PurchaseInput};
use crate::program::ProgramSettings;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::json;

fn settings(tz: &str) -> ProgramSettings {
    ProgramSettings {
        timezone: tz.into(),
        pending_days: 0,
        ..ProgramSettings::default()
    }
}

fn at(s: &str) -> DateTime<Utc> {
    crate::time::parse(s).expect("valid time")
}

fn purchase(
    at_: &str,
    channel: Channel,
    lines: &[(&str, Option<&str>, i64, &str)],
    total: &str,
) -> crate::event::Purchase {
    PurchaseInput {
        member: MemberRef {
            id: Some("mem_1".into()),
            external_id: None,
        },
        order_id: "o-1".into(),
        occurred_at: Some(at_.into()),
        channel,
        store_id: Some("paris-01".into()),
        currency: "EUR".into(),
        total: total.into(),
        lines: lines
            .iter()
            .map(|(sku, cat, q, p)| LineInput {
                sku: (*sku).into(),
                category: cat.map(str::to_string),
                quantity: *q,
                unit_price: (*p).into(),
            })
            .collect(),
    }
    .validate(&settings("UTC"), at(at_))
    .expect("valid purchase")
}

fn shoes_order() -> crate::event::Purchase {
    purchase(
        "2026-03-14T10:30:00Z",
        Channel::Web,
        &[
            ("shoe-42", Some("shoes"), 1, "49.90"),
            ("sock-7", Some("clothing"), 2, "5.00"),
            ("misc", None, 1, "0.00"),
        ],
        "59.90",
    )
}

fn gold() -> MemberFacts {
    let mut attributes = serde_json::Map::new();
    attributes.insert("vip".into(), json!(true));
    attributes.insert("score".into(), json!(7));
    attributes.insert("tags".into(), json!(["a", "b"]));
    MemberFacts {
        id: Some("mem_1".into()),
        tier: Some("gold".into()),
        attributes,
        order_count: 3,
        lifetime_spend_minor: 12_345,
        enrolled_at: Some(at("2026-01-01T00:00:00Z")),
        birth_date: chrono::NaiveDate::from_ymd_opt(1990, 3, 14),
        ..Default::default()
    }
}

/// Evaluates `src` as a condition against the shoes order and the gold member.
fn eval(src: &str) -> Result<bool, String> {
    let c = compile_condition(src).map_err(|e| e.to_string())?;
    let p = shoes_order();
    let m = gold();
    let s = settings("Europe/Paris");
    with_frame(&s, &p, &m, |f| {
        (c.fun)(f)
            .and_then(value::truthy)
            .map_err(|e| e.to_string())
    })
}

fn with_frame<T>(
    s: &ProgramSettings,
    p: &crate::event::Purchase,
    m: &MemberFacts,
    body: impl FnOnce(&mut Frame<'_>) -> T,
) -> T {
    // Build the views the way the engine does, through a one-rule evaluation's helpers.
    let tz = s.tz().expect("zone");
    let local = schedule::Local::of(p.occurred_at, tz);
    let input = Input {
        program: s,
        event: RuleEvent::Purchase(p),
        member: m,
        any_status: false,
        ignore_dates: false,
    };
    let ev = engine_views::event(&input, &local);
    let mv = engine_views::member(m, &local, tz, 100);
    let pv = value::ProgramView {
        currency: "EUR",
        points_name: "points",
        timezone: &s.timezone,
        earn_rate: 1.0,
    };
    let mut f = Frame::new(&ev, &mv, &pv);
    body(&mut f)
}

/// The engine's view builders, reached for tests.
mod engine_views {
    pub(crate) use super::super::engine::{event_view as event, member_view as member};
}

#[test]
fn conditions_read_the_event_the_member_and_the_programme() {
    let yes = [
        r#"event.channel == "web" && event.lines.exists(l, l.category == "shoes") && member.tier in ["gold", "platinum"]"#,
        "event.total >= 50 && event.total_minor == 5990",
        "event.total > 59.89 && event.total < 59.91",
        "event.quantity == 4 && size(event.lines) == 3 && event.lines.size() == 3",
        "event.lines.all(l, l.quantity >= 1)",
        "event.lines.exists_one(l, l.category == \"shoes\")",
        "event.lines.filter(l, l.price > 1).map(l, l.sku) == [\"shoe-42\", \"sock-7\"]",
        "size(event.lines.filter(l, l.price > 1)) == 2 && event.lines.filter(l, l.price > 1).size() == 2",
        "event.lines[1].amount == 10.0 && event.lines[1].amount_minor == 1000",
        "!has(event.lines[2].category) && has(event.lines[0].category)",
        "event.lines[0].sku.startsWith(\"shoe\") && event.lines[0].sku.endsWith(\"42\") && \"abc\".contains(\"b\")",
        "member.attributes.vip == true && member.attributes.score > 5 && \"vip\" in member.attributes",
        "has(member.attributes.vip) && !has(member.attributes.nope)",
        "member.attributes.tags.exists(t, t == \"b\")",
        "member.age == 36 && member.birthday_today && member.order_count == 3",
        "member.lifetime_spend == 123.45 && member.days_since_enrolment == 72",
        "program.currency == \"EUR\" && program.timezone == \"Europe/Paris\"",
        // 10:30 UTC is 11:30 in Paris (winter time), a Saturday.
        "event.hour == 11 && event.minute == 30 && event.weekday == 6 && event.day_name == \"saturday\"",
        "event.date == \"2026-03-14\" && event.year == 2026 && event.month == 3 && event.day == 14",
        "event.store == \"paris-01\" && event.kind == \"purchase\" && event.type == \"purchase\"",
        "(event.total > 100 ? 1 : 2) == 2",
        "1 + 2 * 3 == 7 && 7 / 2 == 3 && 7 % 2 == 1 && -(2) == -2 && 1 == 1.0",
        "int(\"42\") == 42 && double(1) == 1.0 && string(12) == \"12\" && int(2.9) == 2",
        "\"a\" + \"b\" == \"ab\" && [1] + [2] == [1, 2] && \"x\".upperAscii() == \"X\"",
        "event.properties.size() == 0 && !has(event.properties.rating)",
        "event.channel != null && member.tier != null",
        // An error in one operand of `||` is absorbed when another is true (CEL's logic).
        "1 / 0 == 1 || true",
    ];
    for src in yes {
        assert_eq!(eval(src), Ok(true), "{src}");
    }
    let no = [
        "event.channel == \"pos\"",
        "event.lines.exists(l, l.category == \"toys\")",
        "member.tier in [\"silver\"]",
        "event.lines.all(l, l.price > 1)",
        "has(event.lines[2].category)",
    ];
    for src in no {
        assert_eq!(eval(src), Ok(false), "{src}");
    }
}

#[test]
fn evaluation_errors_are_reported_not_panics() {
    for (src, want) in [
        ("1 / 0 == 1", "division by zero"),
        ("9223372036854775807 + 1 > 0", "integer overflow"),
        ("event.lines[7].quantity > 0", "out of range"),
        ("member.attributes.missing == 1", "no key `missing`"),
        (
            "event.lines[2].category.startsWith(\"x\")",
            "expected strings",
        ),
        ("int(\"x\") == 1", "not an integer"),
        ("-9223372036854775808 / -1 == 0", "overflow"),
        ("1 % 0 == 0", "modulus by zero"),
    ] {
        let got = eval(src);
        assert!(
            matches!(&got, Err(e) if e.contains(want)),
            "{src}: expected an error with {want:?}, got {got:?}"
        );
    }
}

#[test]
fn evaluation_is_bounded_however_the_comprehensions_nest() {
    let lines: Vec<(String, Option<&str>, i64, &str)> = (0..500)
        .map(|i| (format!("s{i}"), Some("c"), 1, "1.00"))
        .collect();
    let refs: Vec<(&str, Option<&str>, i64, &str)> = lines
        .iter()
        .map(|(s, c, q, p)| (s.as_str(), *c, *q, *p))
        .collect();
    let p = purchase("2026-03-14T10:30:00Z", Channel::Pos, &refs, "500.00");
    let c = compile_condition(
        "event.lines.exists(a, event.lines.exists(b, event.lines.exists(c, a.sku == \"x\" && b == c)))",
    )
    .expect("compiles");
    let s = settings("UTC");
    let m = gold();
    let r = with_frame(&s, &p, &m, |f| (c.fun)(f).map(|_| ()));
    assert!(
        matches!(&r, Err(e) if e.0.contains("steps")),
        "expected the step budget to stop it, got {r:?}"
    );
}

/// (expression, line, column, what the message says)
const BAD: &[(&str, u32, u32, &str)] = &[
    (
        "event.chanel == \"web\"",
        1,
        7,
        "unknown field `chanel` on `event` (did you mean `channel`?)",
    ),
    (
        "evnt.total > 1",
        1,
        1,
        "unknown name `evnt` (did you mean `event`?)",
    ),
    (
        "event.total == \"50\"",
        1,
        13,
        "cannot compare double with string",
    ),
    ("event.channel > 3", 1, 15, "cannot order string and int"),
    ("event.total", 1, 7, "must be true or false"),
    (
        "member.tier in [1, 2]",
        1,
        13,
        "`in` looks for a string in a list of int",
    ),
    ("event.lines.exists(l, l.price)", 1, 25, "must be a bool"),
    (
        "event.lines.exists(1, true)",
        1,
        20,
        "must be a variable name",
    ),
    (
        "event.total.size() > 1",
        1,
        13,
        "`size` works on a string or a list",
    ),
    (
        "event.lines.frobnicate(l, true)",
        1,
        13,
        "unknown method `frobnicate`",
    ),
    (
        "sizee(event.lines) > 1",
        1,
        1,
        "unknown function `sizee` (did you mean `size`?)",
    ),
    ("event.total >", 1, 14, "ends too early"),
    (
        "event.total >= 50 &&\n  event.channel = \"web\"",
        2,
        17,
        "compare with `==`",
    ),
    (
        "event.total >= 50 &&\n  (event.channel == \"web\"",
        2,
        26,
        "expected `)`",
    ),
    ("\"unterminated", 1, 1, "unterminated string"),
    ("1 2", 1, 3, "unexpected the number 2"),
    ("{\"a\": 1}", 1, 1, "map literals"),
    ("event.total & 1", 1, 13, "write `&&`"),
    ("if == 1", 1, 1, "reserved word"),
    ("99999999999999999999 > 1", 1, 1, "out of range"),
    ("1u > 0", 1, 1, "unsigned"),
    ("(1 > 0) % 2 == 0", 1, 9, "cannot combine bool and int"),
    ("member.tier ? 1 : 2", 1, 13, "must be a bool"),
    ("true ? 1 : \"a\"", 1, 6, "different types"),
];

#[test]
fn bad_conditions_are_refused_with_line_column_and_reason() {
    for (src, line, column, want) in BAD {
        match compile_condition(src) {
            Ok(_) => panic!("{src:?} compiled; expected an error"),
            Err(e) => {
                assert!(
                    e.message.contains(want),
                    "{src:?}: {e} does not say {want:?}"
                );
                assert_eq!((e.line, e.column), (*line, *column), "{src:?}: {e}");
                assert!(
                    e.to_string()
                        .starts_with(&format!("line {line}, column {column}: "))
                );
            }
        }
    }
}

#[test]
fn expressions_over_the_length_or_depth_limit_are_refused() {
    let long = format!("event.total > 1 || {}", "true || ".repeat(600) + "true");
    assert!(long.chars().count() > MAX_EXPR_CHARS);
    let e = compile_condition(&long).err().expect("too long");
    assert!(e.message.contains("4096"), "{e}");

    let deep = format!(
        "{}true{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    let e = compile_condition(&deep).err().expect("too deep");
    assert!(e.message.contains("deeper than 32"), "{e}");
    // Far deeper input is refused just the same, without exhausting the stack.
    for (open, close) in [("(", ")"), ("[", "]"), ("!", ""), ("-", ""), ("f(", ")")] {
        let src = format!("{}1{}", open.repeat(1300), close.repeat(1300));
        let e = parser::parse(&src).expect_err("too deep");
        assert!(e.message.contains("deeper than"), "{open}: {e}");
    }
    let chain = vec!["event.total > 1"; MAX_DEPTH + 2].join(" && ");
    let e = compile_condition(&chain).err().expect("too long a chain");
    assert!(e.message.contains("`x in [...]`"), "{e}");
    // Just under the limits compiles.
    let ok = format!("{}true{}", "(".repeat(20), ")".repeat(20));
    assert!(compile_condition(&ok).is_ok());
    let ok = vec!["event.total > 1"; MAX_DEPTH / 2].join(" && ");
    assert!(compile_condition(&ok).is_ok());
}

#[test]
fn printing_keeps_the_shape_of_tricky_expressions() {
    for src in [
        "-5 * 2",
        "-(5) * 2",
        "--5",
        "-1.size()",
        "(-1).size()",
        "a ? (b ? c : d) : e ? f : g",
        "(a ? b : c) ? d : e",
        "a - (b - c)",
        "a - b - c",
        "!(a && b) || !c",
        "x in [1, 2.5, \"s\\n\\\"q\\\"\", null, true]",
        "1e300 + 5e-324 - 0.0 - -0.0",
        "-9223372036854775808",
        "l.f[0].g(1, 2)[x]",
        "'single' + r\"raw\\n\"",
        "// a comment\n1 // another\n+ 2",
    ] {
        let e = parser::parse(src).unwrap_or_else(|err| panic!("{src}: {err}"));
        let printed = printer::print(&e);
        let again = parser::parse(&printed).unwrap_or_else(|err| panic!("{printed}: {err}"));
        assert_eq!(e, again, "{src} printed as {printed}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn node(kind: ExprKind) -> Expr {
    Expr::new(kind, Pos::default(), 0, 0)
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("event".to_string()),
        Just("member".to_string()),
        Just("l".to_string()),
        "[a-z_][a-z0-9_]{0,6}",
    ]
    .prop_filter("not a keyword", |n| {
        !lexer::RESERVED.contains(&n.as_str())
            && !["true", "false", "null", "in"].contains(&n.as_str())
    })
}

fn double() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

fn literal() -> impl Strategy<Value = Lit> {
    prop_oneof![
        Just(Lit::Null),
        any::<bool>().prop_map(Lit::Bool),
        any::<i64>().prop_map(Lit::Int),
        double().prop_map(Lit::Double),
        any::<String>().prop_map(Lit::Str),
    ]
}

const BINOPS: [BinOp; 14] = [
    BinOp::Or,
    BinOp::And,
    BinOp::Eq,
    BinOp::Ne,
    BinOp::Lt,
    BinOp::Le,
    BinOp::Gt,
    BinOp::Ge,
    BinOp::In,
    BinOp::Add,
    BinOp::Sub,
    BinOp::Mul,
    BinOp::Div,
    BinOp::Rem,
];

fn tree() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        literal().prop_map(|l| node(ExprKind::Lit(l))),
        name().prop_map(|n| node(ExprKind::Ident(n))),
    ];
    leaf.prop_recursive(6, 48, 3, |inner| {
        prop_oneof![
            (inner.clone(), name()).prop_map(|(t, f)| node(ExprKind::Select(Box::new(t), f))),
            (inner.clone(), inner.clone())
                .prop_map(|(t, i)| node(ExprKind::Index(Box::new(t), Box::new(i)))),
            (
                proptest::option::of(inner.clone()),
                name(),
                proptest::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(t, func, args)| node(ExprKind::Call {
                    target: t.map(Box::new),
                    func,
                    args
                })),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(|v| node(ExprKind::List(v))),
            (any::<bool>(), inner.clone()).prop_map(|(not, e)| node(ExprKind::Unary(
                if not { UnOp::Not } else { UnOp::Neg },
                Box::new(e)
            ))),
            (0..BINOPS.len(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| node(
                ExprKind::Binary(BINOPS[op], Box::new(l), Box::new(r))
            )),
            (inner.clone(), inner.clone(), inner).prop_map(|(c, a, b)| node(ExprKind::Cond(
                Box::new(c),
                Box::new(a),
                Box::new(b)
            ))),
        ]
    })
}

/// Expressions built from the schema's own names and the language's functions, so that many
/// of them type-check and reach the evaluator.
fn schema_tree() -> impl Strategy<Value = Expr> {
    let fields: Vec<(String, String)> = schema::fields()
        .iter()
        .filter(|f| f.obj != schema::Obj::Line)
        .map(|f| (f.obj.name().to_string(), f.name.to_string()))
        .collect();
    let line_fields: Vec<String> = schema::fields()
        .iter()
        .filter(|f| f.obj == schema::Obj::Line)
        .map(|f| f.name.to_string())
        .collect();
    let leaf = prop_oneof![
        literal().prop_map(|l| node(ExprKind::Lit(l))),
        proptest::sample::select(fields)
            .prop_map(|(o, f)| node(ExprKind::Select(Box::new(node(ExprKind::Ident(o))), f))),
        proptest::sample::select(line_fields).prop_map(|f| node(ExprKind::Select(
            Box::new(node(ExprKind::Ident("l".into()))),
            f
        ))),
    ];
    let funcs = [
        "size",
        "exists",
        "all",
        "exists_one",
        "filter",
        "map",
        "startsWith",
        "contains",
        "int",
        "double",
        "string",
        "has",
    ];
    leaf.prop_recursive(5, 40, 3, move |inner| {
        prop_oneof![
            (0..BINOPS.len(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| node(
                ExprKind::Binary(BINOPS[op], Box::new(l), Box::new(r))
            )),
            (
                inner.clone(),
                proptest::sample::select(funcs.to_vec()),
                inner.clone()
            )
                .prop_map(|(t, f, body)| {
                    let args = match f {
                        "exists" | "all" | "exists_one" | "filter" | "map" => {
                            vec![node(ExprKind::Ident("l".into())), body]
                        }
                        "size" => vec![],
                        _ => vec![body],
                    };
                    let target = if matches!(f, "int" | "double" | "string" | "has") {
                        None
                    } else {
                        Some(Box::new(t))
                    };
                    let args = if target.is_none() {
                        vec![
                            args.into_iter()
                                .next()
                                .unwrap_or_else(|| node(ExprKind::Lit(Lit::Null))),
                        ]
                    } else {
                        args
                    };
                    node(ExprKind::Call {
                        target,
                        func: f.to_string(),
                        args,
                    })
                }),
            (inner.clone(), inner.clone())
                .prop_map(|(t, i)| node(ExprKind::Index(Box::new(t), Box::new(i)))),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(|v| node(ExprKind::List(v))),
            (any::<bool>(), inner.clone()).prop_map(|(not, e)| node(ExprKind::Unary(
                if not { UnOp::Not } else { UnOp::Neg },
                Box::new(e)
            ))),
            (inner.clone(), inner.clone(), inner).prop_map(|(c, a, b)| node(ExprKind::Cond(
                Box::new(c),
                Box::new(a),
                Box::new(b)
            ))),
        ]
    })
}

const SOUP: &[&str] = &[
    "event",
    "member",
    "program",
    "line",
    "l",
    "x",
    ".",
    ",",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "lines",
    "total",
    "channel",
    "tier",
    "attributes",
    "properties",
    "category",
    "price",
    "exists",
    "all",
    "exists_one",
    "filter",
    "map",
    "size",
    "has",
    "int",
    "double",
    "string",
    "startsWith",
    "contains",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "&&",
    "||",
    "!",
    "-",
    "+",
    "*",
    "/",
    "%",
    "?",
    ":",
    "0",
    "1",
    "-1",
    "1.5",
    "1e308",
    "9223372036854775807",
    "\"shoes\"",
    "'x'",
    "null",
    "true",
    "false",
    "\\",
    "\"",
    "=",
    "&",
    "|",
    "r\"",
    "0x1F",
    "1u",
    "é",
    "\n",
    "//",
];

fn run_everything(src: &str) {
    // Parsing, printing, compiling in both environments and evaluating must never panic.
    if let Ok(e) = parser::parse(src) {
        let printed = printer::print(&e);
        assert_eq!(
            parser::parse(&printed).ok(),
            Some(e.clone()),
            "{src} printed as {printed}"
        );
        for env in [compile::Env::condition(), compile::Env::line_filter()] {
            if let Ok(c) = compile::compile(&e, &env) {
                let p = shoes_order();
                let s = settings("Europe/Paris");
                for m in [gold(), MemberFacts::default()] {
                    with_frame(&s, &p, &m, |f| {
                        f.locals[0] = Val::Line(&f.event.lines[2]);
                        let _ = (c.fun)(f);
                    });
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printing_then_parsing_gives_back_the_same_tree(e in tree()) {
        let printed = printer::print(&e);
        let parsed = parser::parse(&printed);
        let err = parsed.as_ref().err().map(|e| e.to_string());
        prop_assert_eq!(parsed.ok(), Some(e), "printed as {} → {:?}", printed, err);
    }

    #[test]
    fn any_string_is_parsed_checked_and_evaluated_without_panicking(src in any::<String>()) {
        run_everything(&src);
    }

    #[test]
    fn any_token_soup_is_parsed_checked_and_evaluated_without_panicking(
        toks in proptest::collection::vec(proptest::sample::select(SOUP.to_vec()), 0..40),
        joiner in prop_oneof![Just(" "), Just("")],
    ) {
        run_everything(&toks.join(joiner));
    }

    #[test]
    fn schema_shaped_expressions_evaluate_without_panicking(e in schema_tree()) {
        run_everything(&printer::print(&e));
    }

    #[test]
    fn a_well_typed_bool_expression_never_fails_to_type_check_when_printed_again(e in schema_tree()) {
        // Whatever the checker decides about a tree, it decides the same about its printing.
        let src = printer::print(&e);
        let once = compile_condition(&src).map(|_| ()).map_err(|e| e.to_string());
        let twice = parser::parse(&src).and_then(|t| compile_condition(&printer::print(&t))).map(|_| ()).map_err(|e| e.to_string());
        prop_assert_eq!(once.is_ok(), twice.is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

fn record(id: &str, def: serde_json::Value) -> RuleRecord {
    RuleRecord {
        id: id.into(),
        version: 1,
        status: Status::Active,
        definition: serde_json::from_value(def).expect("a rule definition"),
        created_at: String::new(),
        updated_at: String::new(),
    }
}

fn compiled(id: &str, def: serde_json::Value) -> CompiledRule {
    CompiledRule::compile(&record(id, def), None, &Extensions::default()).expect("compiles")
}

fn refused(def: serde_json::Value) -> define::DefError {
    match CompiledRule::compile(&record("r", def), None, &Extensions::default()) {
        Ok(_) => panic!("compiled; expected a refusal"),
        Err(e) => e,
    }
}

fn run(
    rules: Vec<CompiledRule>,
    s: &ProgramSettings,
    p: &crate::event::Purchase,
    m: &MemberFacts,
) -> Evaluation {
    RuleSet::new(rules, 1).evaluate(
        &Input {
            program: s,
            event: RuleEvent::Purchase(p),
            member: m,
            any_status: false,
            ignore_dates: false,
        },
        true,
    )
}

#[test]
fn effects_award_fixed_per_amount_multiplied_and_nth_order_points() {
    let s = settings("UTC");
    let p = shoes_order();
    let m = gold();
    let rules = vec![
        compiled(
            "a",
            json!({"name": "Shoes x2", "trigger": "purchase", "effects": [{"type": "multiplier", "factor": "2", "lines": "line.category == 'shoes'"}]}),
        ),
        compiled(
            "b",
            json!({"name": "Gold x1.5", "trigger": "purchase", "condition": "member.tier == 'gold'", "effects": [{"type": "multiplier", "factor": "1.5"}]}),
        ),
        compiled(
            "c",
            json!({"name": "Web bonus", "trigger": "purchase", "effects": [{"type": "points", "points": 500}]}),
        ),
        compiled(
            "d",
            json!({"name": "3 per euro on socks", "trigger": "purchase", "effects": [{"type": "per_amount", "rate": "3", "lines": "line.sku.startsWith('sock')"}]}),
        ),
        compiled(
            "e",
            json!({"name": "4th order", "trigger": "purchase", "effects": [{"type": "nth_order", "n": 4, "points": 40}]}),
        ),
        compiled(
            "f",
            json!({"name": "5th order", "trigger": "purchase", "effects": [{"type": "nth_order", "n": 5, "points": 50}]}),
        ),
    ];
    let ev = run(rules, &s, &p, &m);
    let got: Vec<(&str, i64)> = ev
        .awards
        .iter()
        .map(|a| (a.source.as_str(), a.points))
        .collect();
    // Shoes: base of 49.90 is 49, doubled adds 49. Gold: base 59 × 0.5 = 29. Socks: 10 € × 3.
    assert_eq!(
        got,
        vec![("a", 49), ("b", 29), ("c", 500), ("d", 30), ("e", 40)]
    );
    let shoes = ev.awards[0]
        .terms
        .as_ref()
        .and_then(|t| t.basis.clone())
        .expect("a line basis");
    assert_eq!(
        (
            shoes.total_minor,
            shoes.lines.len(),
            shoes.lines[0].sku.as_str()
        ),
        (4990, 1, "shoe-42")
    );
    assert!(
        ev.awards[1]
            .terms
            .as_ref()
            .is_none_or(|t| t.basis.is_none()),
        "order-wide awards have no line basis"
    );
    assert_eq!(
        ev.awards[4].terms.as_ref().and_then(|t| t.nth_order),
        Some((4, false))
    );
    assert!(ev.traces.iter().all(|t| t.matched));
    assert_eq!(
        ev.traces[5].reason,
        "matched, but its effects give no points here"
    );
}

#[test]
fn stacking_exclusive_and_stop_after_follow_priority() {
    let s = settings("UTC");
    let p = shoes_order();
    let m = gold();
    let r = |id: &str, prio: i64, stacking: &str| {
        compiled(
            id,
            json!({"name": id, "trigger": "purchase", "priority": prio, "stacking": stacking, "effects": [{"type": "points", "points": 10}]}),
        )
    };
    let ev = run(
        vec![
            r("a", 1, "stackable"),
            r("b", 2, "exclusive"),
            r("c", 3, "stackable"),
        ],
        &s,
        &p,
        &m,
    );
    assert_eq!(
        ev.awards
            .iter()
            .map(|a| a.source.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "c"]
    );
    assert!(
        ev.traces[1]
            .reason
            .contains("exclusive and rule `a` already applied"),
        "{:?}",
        ev.traces[1]
    );

    let ev = run(
        vec![
            r("a", 5, "stackable"),
            r("b", 2, "exclusive"),
            r("c", 3, "stackable"),
        ],
        &s,
        &p,
        &m,
    );
    assert_eq!(
        ev.awards
            .iter()
            .map(|a| a.source.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );

    let ev = run(
        vec![
            r("a", 1, "stackable"),
            r("b", 2, "stop_after"),
            r("c", 3, "stackable"),
        ],
        &s,
        &p,
        &m,
    );
    assert_eq!(
        ev.awards
            .iter()
            .map(|a| a.source.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert!(ev.traces[2].reason.contains("stops evaluation"));
}

#[test]
fn a_weekend_schedule_starts_at_saturday_midnight_local_time() {
    let s = settings("Europe/Paris");
    let m = gold();
    let rule = || {
        compiled(
            "w",
            json!({"name": "Weekend", "trigger": "purchase", "schedule": [{"days": ["weekend"]}], "effects": [{"type": "points", "points": 100}]}),
        )
    };
    // Paris is UTC+1 in March before the change: Friday 23:59:59 local is 22:59:59 UTC.
    for (utc, applies) in [
        ("2026-03-13T22:59:59Z", false),
        ("2026-03-13T23:00:00Z", true),
        ("2026-03-15T22:59:59Z", true),
        ("2026-03-15T23:00:00Z", false),
    ] {
        let p = purchase(utc, Channel::Pos, &[("x", None, 1, "10.00")], "10.00");
        let ev = run(vec![rule()], &s, &p, &m);
        assert_eq!(!ev.awards.is_empty(), applies, "{utc}: {:?}", ev.traces);
    }
    let p = purchase(
        "2026-03-13T22:59:59Z",
        Channel::Pos,
        &[("x", None, 1, "10.00")],
        "10.00",
    );
    let ev = run(vec![rule()], &s, &p, &m);
    assert!(
        ev.traces[0].reason.contains("friday 23:59"),
        "{}",
        ev.traces[0].reason
    );
    // Hours windows: 12:00 inclusive to 14:00 exclusive.
    let lunch = || {
        compiled(
            "l",
            json!({"name": "Lunch", "trigger": "purchase", "schedule": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "12:00", "to": "14:00"}], "effects": [{"type": "points", "points": 5}]}),
        )
    };
    for (utc, applies) in [
        ("2026-07-01T09:59:59Z", false),
        ("2026-07-01T10:00:00Z", true),
        ("2026-07-01T11:59:59Z", true),
        ("2026-07-01T12:00:00Z", false),
    ] {
        let p = purchase(utc, Channel::Pos, &[("x", None, 1, "10.00")], "10.00");
        assert_eq!(
            !run(vec![lunch()], &s, &p, &m).awards.is_empty(),
            applies,
            "{utc} (Paris is UTC+2 in July)"
        );
    }
}

#[test]
fn caps_and_budgets_travel_with_each_award_in_the_programmes_zone() {
    let s = settings("Europe/Paris");
    let m = gold();
    let r = compiled(
        "c",
        json!({"name": "Capped", "trigger": "purchase", "effects": [{"type": "points", "points": 300}, {"type": "points", "points": 300}],
        "caps": {"per_member_day": 1000, "per_member_week": 2000, "per_member_month": 2000, "per_member_lifetime": 9000, "per_order": 500, "budget_points": 1000000}}),
    );
    // 23:30 UTC on 31 March is 1 April in Paris.
    let p = purchase(
        "2026-03-31T23:30:00Z",
        Channel::Pos,
        &[("x", None, 1, "10.00")],
        "10.00",
    );
    let ev = run(vec![r], &s, &p, &m);
    let pts: Vec<(i64, Option<i64>)> = ev
        .awards
        .iter()
        .map(|a| (a.points, a.capped_from))
        .collect();
    assert_eq!(
        pts,
        vec![(300, None), (200, Some(300))],
        "the per-order cap cuts the second effect"
    );
    let limits = &ev.awards[0].terms.as_ref().expect("terms").limits;
    let periods: Vec<(&str, bool, &str, i64)> = limits
        .iter()
        .map(|l| (&*l.counter, l.per_member, &*l.period, l.max))
        .collect();
    assert_eq!(
        periods,
        vec![
            ("rule:c", true, "d:2026-04-01", 1000),
            ("rule:c", true, "w:2026-W14", 2000),
            ("rule:c", true, "m:2026-04", 2000),
            ("rule:c", true, "life", 9000),
            ("rule:c", false, "budget", 1000000),
        ]
    );
}

#[test]
fn inactive_undated_or_mistargeted_rules_say_why_they_do_not_apply() {
    let s = settings("UTC");
    let p = shoes_order();
    let m = gold();
    let mut paused = record(
        "p",
        json!({"name": "p", "trigger": "purchase", "effects": [{"type": "points", "points": 1}]}),
    );
    paused.status = Status::Paused;
    let paused = CompiledRule::compile(&paused, None, &Extensions::default()).expect("compiles");
    let later = compiled(
        "v",
        json!({"name": "v", "trigger": "purchase", "valid_from": "2027-01-01T00:00:00Z", "effects": [{"type": "points", "points": 1}]}),
    );
    let custom = compiled(
        "c",
        json!({"name": "c", "trigger": "custom", "event_type": "review_written", "effects": [{"type": "points", "points": 1}]}),
    );
    let falsy = compiled(
        "f",
        json!({"name": "f", "trigger": "purchase", "condition": "event.total > 1 && event.channel == 'pos'", "effects": [{"type": "points", "points": 1}]}),
    );
    let ev = run(vec![paused, later, custom, falsy], &s, &p, &m);
    let reasons: Vec<&str> = ev.traces.iter().map(|t| t.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "listens to custom events",
            "the condition is false: `event.channel == \"pos\"` is false",
            "not active (status paused)",
            "outside its validity dates",
        ]
    );
    assert!(ev.awards.is_empty());
}

#[test]
fn bad_rules_name_the_field_and_the_reason() {
    let base = |extra: serde_json::Value| {
        let mut d = json!({"name": "r", "trigger": "purchase", "effects": [{"type": "points", "points": 1}]});
        for (k, v) in extra.as_object().expect("object") {
            d[k] = v.clone();
        }
        d
    };
    for (extra, field, says) in [
        (
            json!({"condition": "event.chanel == 'web'"}),
            "condition",
            "line 1, column 7: unknown field `chanel`",
        ),
        (
            json!({"condition": "event.total"}),
            "condition",
            "must be true or false",
        ),
        (json!({"effects": []}), "effects", "1 to 10 effects"),
        (
            json!({"effects": [{"type": "multiplier", "factor": "1"}]}),
            "effects[0].factor",
            "above 1",
        ),
        (
            json!({"effects": [{"type": "multiplier", "factor": "2", "lines": "line.cat == 'x'"}]}),
            "effects[0].lines",
            "unknown field `cat` on `line` (did you mean `category`?)",
        ),
        (
            json!({"effects": [{"type": "per_amount", "rate": "abc"}]}),
            "effects[0].rate",
            "decimal",
        ),
        (
            json!({"effects": [{"type": "points", "points": 0}]}),
            "effects[0].points",
            "must be 1 to",
        ),
        (
            json!({"effects": [{"type": "extension", "kind": "issue_reward", "params": {}}]}),
            "effects[0].kind",
            "no handler",
        ),
        (
            json!({"trigger": "refund", "effects": [{"type": "multiplier", "factor": "2"}]}),
            "effects[0].type",
            "purchases only",
        ),
        (
            json!({"trigger": "custom"}),
            "event_type",
            "names the event type",
        ),
        (json!({"event_type": "x"}), "event_type", "only `custom`"),
        (
            json!({"schedule": [{"days": ["someday"]}]}),
            "schedule[0].days[0]",
            "not a day",
        ),
        (
            json!({"schedule": [{"days": ["sat"], "from": "22:00", "to": "02:00"}]}),
            "schedule[0].to",
            "crosses midnight",
        ),
        (
            json!({"schedule": [{"days": ["sat"], "from": "25:00"}]}),
            "schedule[0].from",
            "HH:MM",
        ),
        (
            json!({"valid_from": "2026-02-01T00:00:00Z", "valid_to": "2026-01-01T00:00:00Z"}),
            "valid_to",
            "after valid_from",
        ),
        (json!({"valid_from": "yesterday"}), "valid_from", "RFC 3339"),
        (
            json!({"caps": {"per_member_month": -5}}),
            "caps.per_member_month",
            "must be 1 to",
        ),
        (json!({"name": " "}), "name", "printable"),
    ] {
        let e = refused(base(extra.clone()));
        assert_eq!(e.field, field, "{extra}: {e}");
        assert!(
            e.reason.contains(says),
            "{extra}: {e} does not say {says:?}"
        );
    }
}

#[test]
fn extension_effects_fire_when_a_handler_is_installed() {
    struct Badge;
    impl engine::EffectHandler for Badge {
        fn kind(&self) -> &'static str {
            "award_badge"
        }
        fn check(&self, params: &serde_json::Value) -> Result<(), String> {
            params
                .get("badge")
                .and_then(|b| b.as_str())
                .map(|_| ())
                .ok_or_else(|| "name the `badge`".into())
        }
    }
    let ext = engine::Extensions(vec![std::sync::Arc::new(Badge)]);
    let def = json!({"name": "badge", "trigger": "purchase", "effects": [{"type": "extension", "kind": "award_badge", "params": {"badge": "first-shoes"}}]});
    let rule =
        CompiledRule::compile(&record("b", def), None, &ext).expect("a handler is installed");
    let bad = json!({"name": "badge", "trigger": "purchase", "effects": [{"type": "extension", "kind": "award_badge", "params": {}}]});
    let e = CompiledRule::compile(&record("b", bad), None, &ext)
        .err()
        .expect("refused");
    assert_eq!(
        (e.field.as_str(), e.reason.as_str()),
        ("effects[0].params", "name the `badge`")
    );
    let ev = run(vec![rule], &settings("UTC"), &shoes_order(), &gold());
    assert_eq!(ev.effects.len(), 1);
    assert_eq!(ev.effects[0].params, json!({"badge": "first-shoes"}));
}

#[test]
fn time_zone_names_are_checked() {
    assert!(settings("Europe/Paris").validate().is_ok());
    assert!(settings("America/New_York").tz().is_ok());
    let bad = settings("Paris");
    assert_eq!(bad.validate().map_err(|e| e.field), Err("timezone"));
    let old: ProgramSettings =
        serde_json::from_str(r#"{"points_name":"points","currency":"EUR","earn_rate":"1"}"#)
            .expect("old settings");
    assert_eq!(
        old.timezone, "UTC",
        "settings saved before time zones read as UTC"
    );
}

#[test]
fn the_language_reference_lists_every_field_conditions_can_read() {
    let doc = include_str!("../../../../docs/RULES.md");
    for f in schema::fields() {
        let name = format!("`{}.{}`", f.obj.name(), f.name);
        assert!(
            doc.contains(&name),
            "docs/RULES.md does not document {name}"
        );
    }
    for limit in [
        MAX_EXPR_CHARS.to_string(),
        MAX_DEPTH.to_string(),
        MAX_BINDINGS.to_string(),
    ] {
        assert!(
            doc.contains(&limit),
            "docs/RULES.md does not give the limit {limit}"
        );
    }
}

#[test]
fn a_leap_day_birthday_is_kept_on_the_28th_in_other_years() {
    use chrono::NaiveDate;
    let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("a date");
    let leapling = d(2000, 2, 29);
    assert!(schedule::is_birthday(leapling, d(2028, 2, 29)));
    assert!(
        !schedule::is_birthday(leapling, d(2028, 2, 28)),
        "a leap year has the 29th"
    );
    assert!(schedule::is_birthday(leapling, d(2027, 2, 28)));
    assert!(!schedule::is_birthday(leapling, d(2027, 3, 1)));
    assert!(schedule::is_birthday(d(1990, 6, 15), d(2026, 6, 15)));
    assert_eq!(schedule::age(d(1990, 6, 15), d(2026, 6, 14)), 35);
    assert_eq!(schedule::age(d(1990, 6, 15), d(2026, 6, 15)), 36);
}

/// Whether a rule set needs the member before an event: only for a rule listening to it whose
/// definition can reach the member (a mention of `member`, a member's nth order, a campaign
/// aimed at a list or an expression).
#[test]
fn a_rule_set_reads_the_member_only_for_rules_that_can_reach_them() {
    use crate::earn::{EarnScope, Earner, Trigger};
    use define::{CampaignRecord, TargetDef};
    let s = settings("UTC");
    let p = shoes_order();
    let reads = |rules: Vec<CompiledRule>| {
        RuleSet::new(rules, 1).reads_member(&EarnScope {
            program: &s,
            event: Trigger::Purchase(&p),
            plans_offered: false,
        })
    };
    let rule = |def: serde_json::Value| compiled("r", def);
    let shoes = json!({"name": "Shoes x2", "trigger": "purchase", "condition": "event.lines.exists(l, l.category == 'shoes')", "effects": [{"type": "multiplier", "factor": "2", "lines": "line.category == 'shoes'"}]});
    assert!(!reads(vec![rule(shoes.clone())]));
    assert!(!reads(vec![rule(
        json!({"name": "Web", "trigger": "purchase", "condition": "event.channel == 'web'", "effects": [{"type": "points", "points": 5}, {"type": "per_amount", "rate": "1"}]})
    )]));
    for def in [
        json!({"name": "Gold", "trigger": "purchase", "condition": "member.tier == 'gold'", "effects": [{"type": "points", "points": 5}]}),
        json!({"name": "Third", "trigger": "purchase", "effects": [{"type": "nth_order", "n": 3, "points": 50}]}),
        json!({"name": "Lines", "trigger": "purchase", "effects": [{"type": "multiplier", "factor": "2", "lines": "line.category in member.attributes.favourites"}]}),
    ] {
        assert!(reads(vec![rule(shoes.clone()), rule(def.clone())]), "{def}");
    }
    // A custom event's rule reading the member is no reason to read them for a purchase.
    assert!(!reads(vec![rule(
        json!({"name": "Review", "trigger": "custom", "event_type": "review", "condition": "member.tier == 'gold'", "effects": [{"type": "points", "points": 5}]})
    )]));
    // A campaign aimed at some members only: the rule must know who the member is.
    for (target, read) in [
        (TargetDef::All, false),
        (TargetDef::List, true),
        (
            TargetDef::Expression {
                expression: "member.tier == 'gold'".into(),
            },
            true,
        ),
    ] {
        let rec = CampaignRecord {
            id: "cmp".into(),
            version: 1,
            status: Status::Active,
            definition: define::CampaignDef {
                name: "Spring".into(),
                description: None,
                starts_at: None,
                ends_at: None,
                budget_points: None,
                caps: Default::default(),
                target,
            },
            spent_points: 0,
            list_size: 0,
            created_at: String::new(),
            updated_at: String::new(),
        };
        let campaign = std::sync::Arc::new(
            super::engine::CompiledCampaign::compile(&rec, Default::default()).expect("a campaign"),
        );
        let mut def = shoes.clone();
        def["campaign_id"] = json!("cmp");
        let r = CompiledRule::compile(&record("r", def), Some(campaign), &Extensions::default())
            .expect("compiles");
        assert_eq!(reads(vec![r]), read);
    }
}

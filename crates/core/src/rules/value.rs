//! What a compiled condition reads and produces: views of the event, member and programme built
//! once per event (so a hundred rules share them), and values that borrow from those views
//! instead of copying strings.

use super::MAX_EVAL_STEPS;
use super::schema::Obj;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

/// An order line as conditions see it.
#[derive(Debug, Clone)]
pub struct LineView<'a> {
    pub sku: &'a str,
    pub category: Option<&'a str>,
    pub quantity: i64,
    pub price_minor: i64,
    pub price: f64,
    pub amount_minor: i64,
    pub amount: f64,
    /// The line's share of the order total actually paid (lines of a discounted order are
    /// scaled to the total, as refunds price them).
    pub paid_minor: i64,
}

#[derive(Debug, Clone)]
pub struct EventView<'a> {
    pub kind: &'static str,
    pub event_type: &'a str,
    pub total_minor: i64,
    pub total: f64,
    pub currency: &'a str,
    pub channel: Option<&'a str>,
    pub store: Option<&'a str>,
    pub order_id: Option<&'a str>,
    pub lines: Vec<LineView<'a>>,
    pub quantity: i64,
    pub properties: &'a Map<String, Value>,
    pub time: String,
    pub date: String,
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub weekday: i64,
    pub day_name: &'static str,
}

#[derive(Debug, Clone)]
pub struct MemberView<'a> {
    pub id: Option<&'a str>,
    pub tier: Option<&'a str>,
    pub attributes: &'a Map<String, Value>,
    pub age: Option<i64>,
    pub days_since_enrolment: i64,
    pub order_count: i64,
    pub lifetime_spend_minor: i64,
    pub lifetime_spend: f64,
    pub birthday_today: bool,
}

#[derive(Debug, Clone)]
pub struct ProgramView<'a> {
    pub currency: &'a str,
    pub points_name: &'a str,
    pub timezone: &'a str,
    pub earn_rate: f64,
}

/// An empty JSON object, for events without properties.
pub fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// A value during evaluation.
#[derive(Debug, Clone, Default)]
pub enum Val<'a> {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
    /// A string made during evaluation, or a literal of the rule.
    Shared(Arc<str>),
    Line(&'a LineView<'a>),
    Lines(&'a [LineView<'a>]),
    List(Arc<[Val<'a>]>),
    /// A JSON object (custom properties, member attributes).
    Map(&'a Map<String, Value>),
    /// A JSON array.
    Array(&'a [Value]),
    /// `event`, `member` or `program` as a whole.
    Obj(Obj),
}

/// Why an evaluation stopped. A rule whose condition fails to evaluate does not match, and
/// the simulation says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub Cow<'static, str>);

impl EvalError {
    pub fn new(msg: impl Into<Cow<'static, str>>) -> EvalError {
        EvalError(msg.into())
    }
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type R<T> = Result<T, EvalError>;

/// The state of one evaluation: the views, comprehension variables by slot, and the step
/// budget that bounds the work of any condition.
pub struct Frame<'a> {
    pub event: &'a EventView<'a>,
    pub member: &'a MemberView<'a>,
    pub program: &'a ProgramView<'a>,
    pub locals: [Val<'a>; super::MAX_BINDINGS],
    pub steps: u32,
}

impl<'a> Frame<'a> {
    pub fn new(
        event: &'a EventView<'a>,
        member: &'a MemberView<'a>,
        program: &'a ProgramView<'a>,
    ) -> Frame<'a> {
        Frame {
            event,
            member,
            program,
            locals: Default::default(),
            steps: 0,
        }
    }

    /// Counts `n` steps of work; fails once the evaluation has done too much.
    #[inline]
    pub fn step(&mut self, n: usize) -> R<()> {
        self.steps = self
            .steps
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if self.steps > MAX_EVAL_STEPS {
            return Err(EvalError::new(format!(
                "the evaluation took more than {MAX_EVAL_STEPS} steps"
            )));
        }
        Ok(())
    }
}

impl<'a> Val<'a> {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Double(_) => "double",
            Val::Str(_) | Val::Shared(_) => "string",
            Val::Line(_) => "line",
            Val::Lines(_) | Val::List(_) | Val::Array(_) => "list",
            Val::Map(_) => "map",
            Val::Obj(o) => o.name(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Shared(s) => Some(s),
            _ => None,
        }
    }

    pub fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => Val::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Val::Str(s),
            Value::Array(a) => Val::Array(a),
            Value::Object(m) => Val::Map(m),
        }
    }
}

/// The elements of a list (or the keys of a map), walked by index.
pub enum Items<'a> {
    Lines(&'a [LineView<'a>]),
    List(Arc<[Val<'a>]>),
    Array(&'a [Value]),
    Keys(Vec<&'a str>),
}

impl<'a> Items<'a> {
    pub fn of(v: &Val<'a>) -> R<Items<'a>> {
        Ok(match v {
            Val::Lines(l) => Items::Lines(l),
            Val::List(l) => Items::List(l.clone()),
            Val::Array(a) => Items::Array(a),
            Val::Map(m) => Items::Keys(m.keys().map(String::as_str).collect()),
            other => {
                return Err(EvalError::new(format!(
                    "expected a list, got {}",
                    other.type_name()
                )));
            }
        })
    }
    pub fn len(&self) -> usize {
        match self {
            Items::Lines(l) => l.len(),
            Items::List(l) => l.len(),
            Items::Array(a) => a.len(),
            Items::Keys(k) => k.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, i: usize) -> Val<'a> {
        match self {
            Items::Lines(l) => l.get(i).map_or(Val::Null, Val::Line),
            Items::List(l) => l.get(i).cloned().unwrap_or(Val::Null),
            Items::Array(a) => a.get(i).map_or(Val::Null, Val::from_json),
            Items::Keys(k) => k.get(i).map_or(Val::Null, |s| Val::Str(s)),
        }
    }
}

/// Equality across types as CEL's heterogeneous equality has it: numbers compare by value,
/// values of different kinds are unequal.
#[inline]
pub fn equal(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Double(x), Val::Double(y)) => x == y,
        (Val::Int(x), Val::Double(y)) | (Val::Double(y), Val::Int(x)) => (*x as f64) == *y,
        (Val::Line(x), Val::Line(y)) => {
            x.sku == y.sku
                && x.category == y.category
                && x.quantity == y.quantity
                && x.price_minor == y.price_minor
        }
        (Val::Obj(x), Val::Obj(y)) => x == y,
        (Val::Map(x), Val::Map(y)) => x == y,
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            _ => match (Items::of(a), Items::of(b)) {
                (Ok(x), Ok(y)) if !matches!(a, Val::Map(_)) && !matches!(b, Val::Map(_)) => {
                    x.len() == y.len() && (0..x.len()).all(|i| equal(&x.get(i), &y.get(i)))
                }
                _ => false,
            },
        },
    }
}

/// Ordering of numbers (across int and double) and of strings; `None` when unordered (NaN).
#[inline]
pub fn compare(a: &Val<'_>, b: &Val<'_>) -> R<Option<Ordering>> {
    Ok(match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Double(x), Val::Double(y)) => x.partial_cmp(y),
        (Val::Int(x), Val::Double(y)) => (*x as f64).partial_cmp(y),
        (Val::Double(x), Val::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => Some(x.cmp(y)),
            _ => {
                return Err(EvalError::new(format!(
                    "cannot order {} and {}",
                    a.type_name(),
                    b.type_name()
                )));
            }
        },
    })
}

/// `needle in haystack`: list membership, or a key of a map.
pub fn contains(f: &mut Frame<'_>, needle: &Val<'_>, haystack: &Val<'_>) -> R<bool> {
    if let Val::Map(m) = haystack {
        return Ok(needle.as_str().is_some_and(|k| m.contains_key(k)));
    }
    let items = Items::of(haystack)?;
    f.step(items.len())?;
    Ok((0..items.len()).any(|i| equal(needle, &items.get(i))))
}

fn overflow() -> EvalError {
    EvalError::new("integer overflow")
}

pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

pub fn arith<'a>(f: &mut Frame<'a>, op: &Arith, a: Val<'a>, b: Val<'a>) -> R<Val<'a>> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Ok(Val::Int(match op {
            Arith::Add => x.checked_add(y).ok_or_else(overflow)?,
            Arith::Sub => x.checked_sub(y).ok_or_else(overflow)?,
            Arith::Mul => x.checked_mul(y).ok_or_else(overflow)?,
            Arith::Div if y == 0 => return Err(EvalError::new("division by zero")),
            Arith::Div => x.checked_div(y).ok_or_else(overflow)?,
            Arith::Rem if y == 0 => return Err(EvalError::new("modulus by zero")),
            Arith::Rem => x.checked_rem(y).ok_or_else(overflow)?,
        })),
        (a @ (Val::Int(_) | Val::Double(_)), b @ (Val::Int(_) | Val::Double(_))) => {
            let (x, y) = (num(&a), num(&b));
            Ok(Val::Double(match op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => x / y,
                Arith::Rem => return Err(EvalError::new("`%` works on integers only")),
            }))
        }
        (a, b) => match op {
            Arith::Add => concat(f, a, b),
            _ => Err(EvalError::new(format!(
                "no arithmetic on {} and {}",
                a.type_name(),
                b.type_name()
            ))),
        },
    }
}

fn num(v: &Val<'_>) -> f64 {
    match v {
        Val::Int(i) => *i as f64,
        Val::Double(d) => *d,
        _ => f64::NAN,
    }
}

fn concat<'a>(f: &mut Frame<'a>, a: Val<'a>, b: Val<'a>) -> R<Val<'a>> {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        f.step((x.len() + y.len()) / 64 + 1)?;
        let mut s = String::with_capacity(x.len() + y.len());
        s.push_str(x);
        s.push_str(y);
        return Ok(Val::Shared(Arc::from(s)));
    }
    let (x, y) = match (Items::of(&a), Items::of(&b)) {
        (Ok(x), Ok(y)) if !matches!(a, Val::Map(_)) && !matches!(b, Val::Map(_)) => (x, y),
        _ => {
            return Err(EvalError::new(format!(
                "cannot add {} and {}",
                a.type_name(),
                b.type_name()
            )));
        }
    };
    f.step(x.len() + y.len())?;
    let all: Vec<Val<'a>> = (0..x.len())
        .map(|i| x.get(i))
        .chain((0..y.len()).map(|i| y.get(i)))
        .collect();
    Ok(Val::List(Arc::from(all)))
}

#[inline]
pub fn truthy(v: Val<'_>) -> R<bool> {
    match v {
        Val::Bool(b) => Ok(b),
        other => Err(EvalError::new(format!(
            "expected true or false, got {}",
            other.type_name()
        ))),
    }
}

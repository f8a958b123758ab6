//! The declared shape of what conditions see: `event`, `member`, `program`, and the `line`
//! objects of an order. The type checker resolves every field against this table when a rule is
//! saved, so evaluation reads fields by position and never looks a name up.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Obj {
    Event,
    Member,
    Program,
    Line,
}

impl Obj {
    pub fn name(self) -> &'static str {
        match self {
            Obj::Event => "event",
            Obj::Member => "member",
            Obj::Program => "program",
            Obj::Line => "line",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    Bool,
    Int,
    Double,
    String,
    Null,
    /// Known only when the rule runs: custom event properties and member attributes (JSON).
    Dyn,
    List(Box<Type>),
    Obj(Obj),
}

impl Type {
    pub fn is_numeric(&self) -> bool {
        matches!(self, Type::Int | Type::Double)
    }
    pub fn list(t: Type) -> Type {
        Type::List(Box::new(t))
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Bool => f.write_str("bool"),
            Type::Int => f.write_str("int"),
            Type::Double => f.write_str("double"),
            Type::String => f.write_str("string"),
            Type::Null => f.write_str("null"),
            Type::Dyn => f.write_str("dyn"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Obj(o) => f.write_str(o.name()),
        }
    }
}

/// Every field conditions can read. The evaluator matches on these, never on names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldId {
    EventKind,
    EventType,
    EventTotal,
    EventTotalMinor,
    EventCurrency,
    EventChannel,
    EventStore,
    EventOrderId,
    EventLines,
    EventQuantity,
    EventProperties,
    EventTime,
    EventDate,
    EventYear,
    EventMonth,
    EventDay,
    EventHour,
    EventMinute,
    EventWeekday,
    EventDayName,
    MemberId,
    MemberTier,
    MemberAttributes,
    MemberAge,
    MemberDaysSinceEnrolment,
    MemberOrderCount,
    MemberLifetimeSpend,
    MemberLifetimeSpendMinor,
    MemberBirthdayToday,
    ProgramCurrency,
    ProgramPointsName,
    ProgramTimezone,
    ProgramEarnRate,
    LineSku,
    LineCategory,
    LineQuantity,
    LinePrice,
    LinePriceMinor,
    LineAmount,
    LineAmountMinor,
}

pub struct Field {
    pub obj: Obj,
    pub name: &'static str,
    pub ty: Type,
    /// May be `null` (absent); `has(x.f)` is false then.
    pub nullable: bool,
    pub id: FieldId,
    pub doc: &'static str,
}

macro_rules! fields {
    ($($obj:ident . $name:literal : $ty:expr, $nullable:literal, $id:ident, $doc:literal;)*) => {
        /// The schema, in the order the documentation lists it.
        pub fn fields() -> &'static [Field] {
            static FIELDS: std::sync::OnceLock<Vec<Field>> = std::sync::OnceLock::new();
            FIELDS.get_or_init(|| vec![$(Field {
                obj: Obj::$obj, name: $name, ty: $ty, nullable: $nullable, id: FieldId::$id, doc: $doc,
            }),*])
        }
    };
}

fields! {
    Event."kind": Type::String, false, EventKind, "`purchase`, `refund`, `custom`, `enrolment` or `birthday`";
    Event."type": Type::String, false, EventType, "the custom event's type (`review_written`); the kind for other events";
    Event."total": Type::Double, false, EventTotal, "order total (refund amount for refunds) in major units, e.g. 59.9";
    Event."total_minor": Type::Int, false, EventTotalMinor, "the same in minor units (cents), e.g. 5990";
    Event."currency": Type::String, false, EventCurrency, "ISO currency code of the amounts";
    Event."channel": Type::String, true, EventChannel, "`pos`, `web` or `app` (purchases)";
    Event."store": Type::String, true, EventStore, "store id (purchases that name one)";
    Event."order_id": Type::String, true, EventOrderId, "the order id (purchases and refunds)";
    Event."lines": Type::List(Box::new(Type::Obj(Obj::Line))), false, EventLines, "the order's lines (empty for other events)";
    Event."quantity": Type::Int, false, EventQuantity, "units in the order (sum of line quantities)";
    Event."properties": Type::Dyn, false, EventProperties, "a custom event's properties (JSON object; empty otherwise)";
    Event."time": Type::String, false, EventTime, "when it happened, RFC 3339 UTC";
    Event."date": Type::String, false, EventDate, "local date in the programme's time zone, `YYYY-MM-DD`";
    Event."year": Type::Int, false, EventYear, "local year";
    Event."month": Type::Int, false, EventMonth, "local month, 1–12";
    Event."day": Type::Int, false, EventDay, "local day of the month, 1–31";
    Event."hour": Type::Int, false, EventHour, "local hour, 0–23";
    Event."minute": Type::Int, false, EventMinute, "local minute, 0–59";
    Event."weekday": Type::Int, false, EventWeekday, "local day of the week, 1 = Monday … 7 = Sunday (ISO 8601)";
    Event."day_name": Type::String, false, EventDayName, "local day of the week in English lower case: `monday` … `sunday`";
    Member."id": Type::String, true, MemberId, "member id (null while simulating an unknown member)";
    Member."tier": Type::String, true, MemberTier, "current tier (`gold`), null when none";
    Member."attributes": Type::Dyn, false, MemberAttributes, "profile attributes (JSON object)";
    Member."age": Type::Int, true, MemberAge, "age in whole years on the event's local date; null without a birth date";
    Member."days_since_enrolment": Type::Int, false, MemberDaysSinceEnrolment, "whole days since enrolment (0 on the day, and for a member this event enrols)";
    Member."order_count": Type::Int, false, MemberOrderCount, "orders before this event";
    Member."lifetime_spend": Type::Double, false, MemberLifetimeSpend, "spend before this event, major units";
    Member."lifetime_spend_minor": Type::Int, false, MemberLifetimeSpendMinor, "the same in minor units";
    Member."birthday_today": Type::Bool, false, MemberBirthdayToday, "true when the event's local date is the member's birthday (29 February counts on 28 February in other years)";
    Program."currency": Type::String, false, ProgramCurrency, "the programme's currency";
    Program."points_name": Type::String, false, ProgramPointsName, "what the points are called";
    Program."timezone": Type::String, false, ProgramTimezone, "the programme's IANA time zone";
    Program."earn_rate": Type::Double, false, ProgramEarnRate, "base points per currency unit";
    Line."sku": Type::String, false, LineSku, "the product's sku";
    Line."category": Type::String, true, LineCategory, "the product's category, null when the till sent none";
    Line."quantity": Type::Int, false, LineQuantity, "units";
    Line."price": Type::Double, false, LinePrice, "unit price, major units";
    Line."price_minor": Type::Int, false, LinePriceMinor, "unit price, minor units";
    Line."amount": Type::Double, false, LineAmount, "quantity × unit price, major units";
    Line."amount_minor": Type::Int, false, LineAmountMinor, "quantity × unit price, minor units";
}

pub fn field(obj: Obj, name: &str) -> Option<&'static Field> {
    fields().iter().find(|f| f.obj == obj && f.name == name)
}

pub fn field_names(obj: Obj) -> impl Iterator<Item = &'static str> {
    fields()
        .iter()
        .filter(move |f| f.obj == obj)
        .map(|f| f.name)
}

/// The closest of `candidates` to `name`, if close enough to be a likely typo.
pub fn suggest<'c>(name: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .map(|c| {
            // A prefix (`cat` for `category`) is as good as a one-letter typo.
            let d = if name.len() >= 3 && c.starts_with(name) {
                1
            } else {
                distance(name, c)
            };
            (d, c)
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}
